// One slice view of the workspace (axial, coronal or sagittal): the slice's
// values (int16, from .../slice?format=values) windowed to grey in this page,
// and over them, on a second canvas, the region the current threshold would
// turn into the surface (the converter's inside test: value > floor(threshold)),
// the crop box and the seed point.  A threshold change redraws only the
// overlay, from the values already here: no request per move.
//
// Geometry comes from the server (GET .../series/N): each plane's size, pixel
// size in mm, the orientation letters of its edges, and its map to patient mm
// (origin + column * c + row * r + index * k, LPS).

const TINT = [255, 96, 0, 130]; // the surface region, over the grey
const little = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const PACKED = little
  ? (TINT[3] << 24) | (TINT[2] << 16) | (TINT[1] << 8) | TINT[0]
  : (TINT[0] << 24) | (TINT[1] << 16) | (TINT[2] << 8) | TINT[3];

function add(a, b, f) { return [a[0] + b[0] * f, a[1] + b[1] * f, a[2] + b[2] * f]; }

function solve3(m, v) { // m: three column vectors; Cramer's rule
  const [a, b, c] = m;
  const det = (x, y, z) => x[0] * (y[1] * z[2] - y[2] * z[1]) - y[0] * (x[1] * z[2] - x[2] * z[1])
    + z[0] * (x[1] * y[2] - x[2] * y[1]);
  const d = det(a, b, c);
  if (Math.abs(d) < 1e-12) return null;
  return [det(v, b, c) / d, det(a, v, c) / d, det(a, b, v) / d];
}

export class SliceView {
  constructor(figure, plane, geometry, toPatient, load) {
    this.figure = figure;
    this.plane = plane;
    this.width = geometry.width;
    this.height = geometry.height;
    this.count = geometry.count;
    this.tp = toPatient; // {origin, column, row, index}
    this.load = load; // (plane, index) -> Promise<Int16Array>
    this.image = figure.querySelector('canvas.image');
    this.overlay = figure.querySelector('canvas.overlay');
    this.slider = figure.querySelector('input.slice');
    this.label = figure.querySelector('.slice-no');
    for (const c of [this.image, this.overlay]) { c.width = this.width; c.height = this.height; }
    const frame = figure.querySelector('.frame');
    const [wmm, hmm] = geometry.pixel_mm;
    frame.style.aspectRatio = `${this.width * wmm} / ${this.height * hmm}`;
    for (const side of ['top', 'right', 'bottom', 'left']) {
      figure.querySelector(`.edge.${side}`).textContent = geometry.edges[side];
    }
    this.slider.min = 0; this.slider.max = this.count - 1;
    this.index = Math.floor(this.count / 2);
    this.slider.value = this.index;
    this.values = null;
    this.imageData = this.image.getContext('2d').createImageData(this.width, this.height);
    this.overlayData = this.overlay.getContext('2d').createImageData(this.width, this.height);
    this.grey = new Uint32Array(this.imageData.data.buffer);
    this.tint = new Uint32Array(this.overlayData.data.buffer);
    this.wanted = this.index;
  }

  // the patient mm (LPS) of the centre of pixel (c, r) of slice k
  toPatient(c, r, k = this.index) {
    return add(add(add(this.tp.origin, this.tp.column, c), this.tp.row, r), this.tp.index, k);
  }

  // (c, r, k) of a point in patient mm (the inverse map)
  fromPatient(p) {
    const v = [p[0] - this.tp.origin[0], p[1] - this.tp.origin[1], p[2] - this.tp.origin[2]];
    return solve3([this.tp.column, this.tp.row, this.tp.index], v);
  }

  // the pixel (fractional c, r) under a pointer event
  pixelAt(event) {
    const box = this.overlay.getBoundingClientRect();
    const c = (event.clientX - box.left) / box.width * this.width - 0.5;
    const r = (event.clientY - box.top) / box.height * this.height - 0.5;
    return [Math.min(Math.max(c, 0), this.width - 1), Math.min(Math.max(r, 0), this.height - 1)];
  }

  async show(index, state) {
    index = Math.min(Math.max(Math.round(index), 0), this.count - 1);
    this.wanted = index;
    this.slider.value = index;
    this.label.textContent = `${index + 1} of ${this.count}`;
    const values = await this.load(this.plane, index);
    if (this.wanted !== index) return; // scrolled on meanwhile
    this.index = index;
    this.values = values;
    this.drawImage(state);
    this.drawOverlay(state);
    this.figure.dataset.index = String(index);
  }

  drawImage(state) {
    if (!this.values) return;
    const { low, high } = state.window;
    const scale = 255 / Math.max(high - low, 1e-6);
    const v = this.values, out = this.grey;
    for (let i = 0; i < v.length; i++) {
      let g = (v[i] - low) * scale;
      g = g < 0 ? 0 : g > 255 ? 255 : g | 0;
      out[i] = little ? (0xff000000 | (g << 16) | (g << 8) | g) >>> 0 : ((g << 24) | (g << 16) | (g << 8) | 0xff) >>> 0;
    }
    this.image.getContext('2d').putImageData(this.imageData, 0, 0);
  }

  // the region the threshold would make the surface, then the box and the point
  drawOverlay(state) {
    if (!this.values) return;
    const v = this.values, out = this.tint;
    const bound = Math.floor(state.threshold);
    let inside = 0;
    if (state.below) { // a preset meshing the region below its level (airway)
      for (let i = 0; i < v.length; i++) { const hit = v[i] < state.threshold; out[i] = hit ? PACKED : 0; inside += hit; }
    } else {
      for (let i = 0; i < v.length; i++) { const hit = v[i] > bound; out[i] = hit ? PACKED : 0; inside += hit; }
    }
    const ctx = this.overlay.getContext('2d');
    ctx.putImageData(this.overlayData, 0, 0);
    this.figure.dataset.inside = String(inside);
    this.drawBox(ctx, state.crop, state.drawing === this ? state.dragBox : null);
    this.drawSeed(ctx, state.seed);
    state.draws = (state.draws || 0) + 1;
  }

  // the crop box (patient mm, min and max corners) as this view sees it
  boxRect(crop) {
    const cs = [], rs = [], ks = [];
    for (const x of [crop.min[0], crop.max[0]]) {
      for (const y of [crop.min[1], crop.max[1]]) {
        for (const z of [crop.min[2], crop.max[2]]) {
          const crk = this.fromPatient([x, y, z]);
          if (!crk) return null;
          cs.push(crk[0]); rs.push(crk[1]); ks.push(crk[2]);
        }
      }
    }
    return { c0: Math.min(...cs), c1: Math.max(...cs), r0: Math.min(...rs), r1: Math.max(...rs),
             k0: Math.min(...ks), k1: Math.max(...ks) };
  }

  drawBox(ctx, crop, drag) {
    const line = Math.max(1, Math.round(this.width / 200));
    if (crop) {
      const b = this.boxRect(crop);
      if (b) {
        const through = this.index >= b.k0 - 0.5 && this.index <= b.k1 + 0.5;
        ctx.save();
        ctx.lineWidth = line;
        ctx.strokeStyle = through ? '#00d0ff' : 'rgba(0, 208, 255, 0.45)';
        ctx.setLineDash(through ? [] : [4 * line, 3 * line]);
        ctx.strokeRect(b.c0, b.r0, b.c1 - b.c0 + 1, b.r1 - b.r0 + 1);
        ctx.restore();
      }
    }
    if (drag) {
      ctx.save();
      ctx.lineWidth = line;
      ctx.strokeStyle = '#ffffff';
      ctx.setLineDash([3 * line, 2 * line]);
      ctx.strokeRect(Math.min(drag[0], drag[2]), Math.min(drag[1], drag[3]),
                     Math.abs(drag[2] - drag[0]) + 1, Math.abs(drag[3] - drag[1]) + 1);
      ctx.restore();
    }
  }

  drawSeed(ctx, seed) {
    if (!seed) return;
    const crk = this.fromPatient(seed);
    if (!crk) return;
    const [c, r, k] = crk;
    const size = Math.max(4, this.width / 40);
    ctx.save();
    ctx.lineWidth = Math.max(1, Math.round(this.width / 200));
    ctx.strokeStyle = Math.abs(k - this.index) < 0.5 ? '#39ff14' : 'rgba(57, 255, 20, 0.45)';
    ctx.beginPath();
    ctx.moveTo(c + 0.5 - size, r + 0.5); ctx.lineTo(c + 0.5 + size, r + 0.5);
    ctx.moveTo(c + 0.5, r + 0.5 - size); ctx.lineTo(c + 0.5, r + 0.5 + size);
    ctx.stroke();
    ctx.restore();
  }
}
