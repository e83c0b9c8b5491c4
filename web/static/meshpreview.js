// Decodes the reduced mesh a job stores for the 3D view (EPHMESH1, made by
// converter/preview.py: quantized, delta-coded, byte planes, zlib) into the
// positions and indices of a three.js BufferGeometry.
import { unzlibSync } from '/vendor/fflate/fflate.js';

function planes(bytes, width, count) {
  // byte planes (lowest first) back into little-endian words
  const out = new Uint8Array(count * width);
  for (let b = 0; b < width; b++) {
    const plane = bytes.subarray(b * count, (b + 1) * count);
    for (let i = 0; i < count; i++) out[i * width + b] = plane[i];
  }
  return out.buffer;
}

export function decodePreview(buffer) {
  const view = new DataView(buffer);
  const magic = new TextDecoder().decode(new Uint8Array(buffer, 0, 8));
  if (magic !== 'EPHMESH1') throw new Error('not a preview mesh');
  const nv = view.getUint32(8, true), nf = view.getUint32(12, true);
  const origin = [0, 1, 2].map((i) => view.getFloat32(16 + 4 * i, true));
  const scale = [0, 1, 2].map((i) => view.getFloat32(28 + 4 * i, true));
  let pos = 40;
  const vlen = view.getUint32(pos, true);
  const vraw = unzlibSync(new Uint8Array(buffer, pos + 4, vlen));
  pos += 4 + vlen;
  const flen = view.getUint32(pos, true);
  const fraw = unzlibSync(new Uint8Array(buffer, pos + 4, flen));
  const deltas = new Uint16Array(planes(vraw, 2, nv * 3));
  const positions = new Float32Array(nv * 3);
  for (let axis = 0; axis < 3; axis++) {
    let q = 0;
    for (let i = 0; i < nv; i++) {
      q = (q + deltas[axis * nv + i]) & 0xffff;
      positions[i * 3 + axis] = origin[axis] + q * scale[axis];
    }
  }
  const zig = new Uint32Array(planes(fraw, 4, nf * 3));
  const indices = new Uint32Array(nf * 3);
  let index = 0;
  for (let i = 0; i < nf * 3; i++) {
    const z = zig[i];
    index += (z >>> 1) ^ -(z & 1);
    indices[i] = index;
  }
  return { positions, indices };
}
