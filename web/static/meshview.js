// A 3D view of a reduced preview mesh (meshpreview.js decodes it) on a canvas: three.js and
// its orbit controls, served by this app (web/vendor.py), no CDN.  Used by the
// workspace page for each of its results.
import * as THREE from '/vendor/three/three.module.js';
import { OrbitControls } from '/vendor/three/OrbitControls.js';

// show(canvas, decoded) draws the mesh, upright (DICOM LPS: +z is the head),
// and returns { triangles } ; throws when this browser has no WebGL
export function show(canvas, decoded) {
  const renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
  renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
  const scene = new THREE.Scene();
  scene.background = new THREE.Color(0xeef1f4);
  const camera = new THREE.PerspectiveCamera(35, 4 / 3, 0.1, 100000);
  scene.add(new THREE.HemisphereLight(0xffffff, 0x444455, 1.6));
  const sun = new THREE.DirectionalLight(0xffffff, 1.8);
  scene.add(sun);

  const geometry = new THREE.BufferGeometry();
  geometry.setAttribute('position', new THREE.BufferAttribute(decoded.positions, 3));
  geometry.setIndex(new THREE.BufferAttribute(decoded.indices, 1));
  geometry.computeVertexNormals();
  geometry.computeBoundingSphere();
  const { center, radius } = geometry.boundingSphere;
  geometry.translate(-center.x, -center.y, -center.z);
  const mesh = new THREE.Mesh(geometry, new THREE.MeshStandardMaterial({
    color: 0xe8dcc8, roughness: 0.6, metalness: 0.0, side: THREE.DoubleSide }));
  mesh.rotation.x = -Math.PI / 2;
  scene.add(mesh);

  const controls = new OrbitControls(camera, canvas);
  controls.enableDamping = false;
  const r = Math.max(radius, 1e-3);
  camera.position.set(0, r * 0.8, r * 4.2);
  camera.near = r / 100; camera.far = r * 100;
  camera.updateProjectionMatrix();
  controls.target.set(0, 0, 0);
  controls.update();

  function render() {
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (w && canvas.width !== Math.round(w * renderer.getPixelRatio())) {
      renderer.setSize(w, h, false);
      camera.aspect = w / Math.max(h, 1);
      camera.updateProjectionMatrix();
    }
    sun.position.copy(camera.position);
    renderer.render(scene, camera);
  }
  controls.addEventListener('change', render);
  window.addEventListener('resize', render);
  render();
  return {
    triangles: decoded.indices.length / 3,
    dispose() {
      window.removeEventListener('resize', render);
      controls.dispose(); geometry.dispose(); renderer.dispose();
    },
  };
}
