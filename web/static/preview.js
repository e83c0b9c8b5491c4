// The job page's 3D preview: the job's reduced mesh (or its STL) in the
// shared view of meshview.js, with buttons and keys to turn it.
import * as THREE from '/vendor/three/three.module.js';
import { STLLoader } from '/vendor/three/STLLoader.js';
import { decodePreview } from './meshpreview.js';
import { place, renderLoop, stage } from './meshview.js';

const section = document.getElementById('job');
const canvas = document.getElementById('preview');
const status = document.getElementById('preview-status');

function say(message) { status.textContent = message; }

async function main() {
  let view;
  try {
    view = stage(canvas);
  } catch (err) {
    canvas.dataset.drawn = 'no-webgl';
    say('This browser cannot show 3D (no WebGL); download the STL to look at it.');
    return;
  }
  const { camera } = view;

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
  const { controls, home } = place(canvas, view, geometry);
  controls.listenToKeyEvents(canvas);
  const render = renderLoop(canvas, view);
  controls.addEventListener('change', render);
  window.addEventListener('resize', render);
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
