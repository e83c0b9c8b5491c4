// A 3D view of a mesh on a canvas: three.js and its orbit controls, served by
// this app (web/vendor.py), no CDN.  stage() and place() are the scene every
// view shares (the job page's preview.js, the workspace's results); show()
// draws a decoded reduced preview mesh (meshpreview.js) with them.
import * as THREE from '/vendor/three/three.module.js';
import { OrbitControls } from '/vendor/three/OrbitControls.js';

// the renderer, scene, camera and a light that follows the camera; throws
// when this browser has no WebGL
export function stage(canvas) {
  const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0xeef1f4);
  const camera = new THREE.PerspectiveCamera(35, 4 / 3, 0.1, 100000);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x444455, 1.6));
  const sun = new THREE.DirectionalLight(0xffffff, 1.8);
  scene.add(sun);
  return { renderer, scene, camera, sun };
}

// the geometry centred and shown upright (DICOM LPS: +z is the head), with
// orbit controls looking at it from its home position; returns
// { controls, radius, home() }
export function place(canvas, { scene, camera }, geometry) {
  geometry.computeBoundingSphere();
  const { center } = geometry.boundingSphere;
  const radius = Math.max(geometry.boundingSphere.radius, 1e-3);
  geometry.translate(-center.x, -center.y, -center.z);
  const mesh = new THREE.Mesh(geometry, new THREE.MeshStandardMaterial({
    color: 0xe8dcc8, roughness: 0.6, metalness: 0.0, side: THREE.DoubleSide }));
  mesh.rotation.x = -Math.PI / 2;
  scene.add(mesh);
  const controls = new OrbitControls(camera, canvas);
  controls.enableDamping = false;
  const home = () => {
    camera.position.set(0, radius * 0.8, radius * 4.2);
    camera.near = radius / 100; camera.far = radius * 100;
    camera.updateProjectionMatrix();
    controls.target.set(0, 0, 0);
    controls.update();
  };
  home();
  return { controls, radius, home };
}

// a render function that keeps the canvas's size and the light on the camera
export function renderLoop(canvas, { renderer, scene, camera, sun }) {
  return function render() {
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (w && canvas.width !== Math.round(w * renderer.getPixelRatio())) {
      renderer.setSize(w, h, false);
      camera.aspect = w / Math.max(h, 1);
      camera.updateProjectionMatrix();
    }
    sun.position.copy(camera.position);
    renderer.render(scene, camera);
  };
}

// show(canvas, decoded) draws a decoded preview mesh and returns
// { triangles, dispose() }; throws when this browser has no WebGL
export function show(canvas, decoded) {
  const view = stage(canvas);
  const geometry = new THREE.BufferGeometry();
  geometry.setAttribute('position', new THREE.BufferAttribute(decoded.positions, 3));
  geometry.setIndex(new THREE.BufferAttribute(decoded.indices, 1));
  geometry.computeVertexNormals();
  const { controls } = place(canvas, view, geometry);
  const render = renderLoop(canvas, view);
  controls.addEventListener('change', render);
  window.addEventListener('resize', render);
  render();
  return {
    triangles: decoded.indices.length / 3,
    dispose() {
      window.removeEventListener('resize', render);
      controls.dispose(); geometry.dispose(); view.renderer.dispose();
    },
  };
}
