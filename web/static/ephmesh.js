// The reduced preview mesh (EPHMESH1, converter/preview.py) decoded in the
// browser: quantized positions and delta-coded faces, zlib-compressed
// (inflated with the vendored fflate).  decode(arrayBuffer) gives
// { positions: Float32Array (x, y, z per vertex, mm), index: Uint32Array }.
import { unzlibSync } from '/vendor/fflate/fflate.js';

const MAGIC = 'EPHMESH1';

export function decode(buffer) {
  const view = new DataView(buffer);
  const magic = String.fromCharCode(...new Uint8Array(buffer, 0, 8));
  if (magic !== MAGIC) throw new Error('not an EPHMESH1 preview');
  const nv = view.getUint32(8, true);
  const nf = view.getUint32(12, true);
  const origin = [0, 1, 2].map(i => view.getFloat32(16 + 4 * i, true));
  const scale = [0, 1, 2].map(i => view.getFloat32(28 + 4 * i, true));
  let pos = 40;
  const vlen = view.getUint32(pos, true);
  const vraw = unzlibSync(new Uint8Array(buffer, pos + 4, vlen));
  pos += 4 + vlen;
  const flen = view.getUint32(pos, true);
  const fraw = unzlibSync(new Uint8Array(buffer, pos + 4, flen));

  // vertices: axis by axis, each delta-coded mod 2^16, low bytes then high bytes
  const count = 3 * nv;
  if (vraw.length !== 2 * count || fraw.length !== 4 * 3 * nf) throw new Error('a truncated preview');
  const positions = new Float32Array(count);
  for (let axis = 0; axis < 3; axis++) {
    let q = 0;
    for (let i = 0; i < nv; i++) {
      const k = axis * nv + i;
      q = (q + (vraw[k] | (vraw[count + k] << 8))) & 0xffff;
      positions[3 * i + axis] = origin[axis] + q * scale[axis];
    }
  }
  // faces: flattened indices, delta-coded, zig-zag mapped, four byte planes lowest first
  const n = 3 * nf;
  const index = new Uint32Array(n);
  let last = 0;
  for (let i = 0; i < n; i++) {
    const zig = (fraw[i] | (fraw[n + i] << 8) | (fraw[2 * n + i] << 16) | (fraw[3 * n + i] << 24)) >>> 0;
    const delta = (zig >>> 1) ^ -(zig & 1);
    last += delta;
    index[i] = last;
  }
  return { positions, index, vertices: nv, faces: nf };
}
