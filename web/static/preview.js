// The 3D preview: three.js with its STL loader and orbit controls, served
// by this app (web/vendor.py), no CDN.
import * as THREE from '/vendor/three/three.module.js';
import { STLLoader } from '/vendor/three/STLLoader.js';
import { OrbitControls } from '/vendor/three/OrbitControls.js';
import { decodePreview } from './meshpreview.js';

const section = document.getElementById('job');
const canvas = document.getElementById('preview');
const status = document.getElementById('preview-status');

function say(message) { status.textContent = message; }

async function main() {
  let renderer;
  try {
    renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  } catch (err) {
    canvas.dataset.drawn = 'no-webgl';
    say('This browser cannot show 3D (no WebGL); download the STL to look at it.');
    return;
  }
  renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0xeef1f4);
  const camera = new THREE.PerspectiveCamera(35, 4 / 3, 0.1, 100000);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x444455, 1.6));
  const sun = new THREE.DirectionalLight(0xffffff, 1.8);
  scene.add(sun);

  // the reduced mesh the job made for this view (the download stays the full model);
  // the STL itself only when there is none
  let geometry = null;
  let resp = await fetch(section.dataset.previewUrl, { cache: 'no-store' });
  if (resp.ok) {
    try {
      const { positions, indices } = decodePreview(await resp.arrayBuffer());
      geometry = new THREE.BufferGeometry();
      geometry.setAttribute('position', new THREE.BufferAttribute(positions, 3));
      geometry.setIndex(new THREE.BufferAttribute(indices, 1));
      geometry.computeVertexNormals();
      canvas.dataset.source = 'preview';
    } catch (err) {
      geometry = null;
    }
  }
  if (geometry === null) {
    resp = await fetch(section.dataset.resultUrl, { cache: 'no-store' });
    if (!resp.ok) {
      canvas.dataset.drawn = 'gone';
      say(resp.status === 410 ? 'The model has been deleted.' : 'The model could not be loaded.');
      return;
    }
    geometry = new STLLoader().parse(await resp.arrayBuffer());
    canvas.dataset.source = 'stl';
  }
  geometry.computeBoundingSphere();
  const { center, radius } = geometry.boundingSphere;
  geometry.translate(-center.x, -center.y, -center.z);
  // DICOM LPS: +z is head; show the patient upright (z up)
  const mesh = new THREE.Mesh(geometry, new THREE.MeshStandardMaterial({
    color: 0xe8dcc8, roughness: 0.6, metalness: 0.0, side: THREE.DoubleSide }));
  mesh.rotation.x = -Math.PI / 2;
  scene.add(mesh);

  const controls = new OrbitControls(camera, canvas);
  controls.enableDamping = false;
  controls.listenToKeyEvents(canvas);
  const home = () => {
    camera.position.set(0, radius * 0.8, radius * 4.2);
    camera.near = radius / 100; camera.far = radius * 100;
    camera.updateProjectionMatrix();
    controls.target.set(0, 0, 0);
    controls.update();
  };

  function resize() {
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (canvas.width !== Math.round(w * renderer.getPixelRatio())) {
      renderer.setSize(w, h, false);
      camera.aspect = w / Math.max(h, 1);
      camera.updateProjectionMatrix();
    }
  }
  function render() {
    resize();
    sun.position.copy(camera.position);
    renderer.render(scene, camera);
  }
  controls.addEventListener('change', render);
  window.addEventListener('resize', render);
  home();
  render();

  const turn = (azimuth, polar) => {
    const offset = camera.position.clone().sub(controls.target);
    const sph = new THREE.Spherical().setFromVector3(offset);
    sph.theta += azimuth; sph.phi = Math.min(Math.PI - 0.01, Math.max(0.01, sph.phi + polar));
    camera.position.copy(controls.target).add(new THREE.Vector3().setFromSpherical(sph));
    controls.update(); render();
  };
  const zoom = f => { camera.position.sub(controls.target).multiplyScalar(f).add(controls.target); controls.update(); render(); };
  const actions = { left: () => turn(-Math.PI / 12, 0), right: () => turn(Math.PI / 12, 0),
    up: () => turn(0, -Math.PI / 12), down: () => turn(0, Math.PI / 12),
    in: () => zoom(0.8), out: () => zoom(1.25), reset: () => { home(); render(); } };
  document.querySelectorAll('[data-view]').forEach(b => b.addEventListener('click', () => actions[b.dataset.view]()));

  const triangles = geometry.index ? geometry.index.count / 3 : geometry.attributes.position.count / 3;
  canvas.dataset.drawn = 'yes';
  canvas.dataset.triangles = String(triangles);
  say(`3D preview shown: ${triangles.toLocaleString()} triangles. Drag, or use the buttons, to turn it.`);
}

main().catch(() => { canvas.dataset.drawn = 'error'; say('The 3D preview failed; the STL can still be downloaded.'); });
