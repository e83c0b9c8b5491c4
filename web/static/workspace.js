// The scan workspace: one upload, looked at and converted as often as its
// owner likes, then gone ("Done, delete my scan", or its deadline).
//
// Everything comes from /api/v1/scans/... with this browser session (its
// cookie; POST and DELETE carry the page's CSRF token): the series (shown
// here only, never stored), each series' geometry and histogram, the slices'
// values (thresholded here, so the overlay follows the slider without a
// request per move), the estimate, the scan's jobs.  A result is downloaded,
// previewed (the reduced mesh) and deleted through the job's browser routes.
import { SliceView } from './slices.js';

const root = document.getElementById('workspace');
const csrf = document.querySelector('meta[name=csrf-token]').content;
const OFFERED = new Set(JSON.parse(root.dataset.options || '[]'));
const STAGES = JSON.parse(root.dataset.stages || '{}');
const LIVE = new Set(JSON.parse(root.dataset.live || '[]'));
const jobBase = root.dataset.jobBase; // "/jobs/"
const $ = id => document.getElementById(id);

const state = {
  scan: null, series: null, n: null, geometry: null, histogram: null,
  threshold: 0, below: false, preset: null, window: { low: 0, high: 1 },
  crop: null, seed: null, tool: null, drawing: null, dragBox: null, draws: 0,
};
window.ephemeshWorkspace = state; // for the tests and the benchmark: counts overlay draws
const views = {};
window.ephemeshRedraw = () => Object.values(views).forEach(v => v.drawOverlay(state)); // the benchmark
const cache = new Map(); // "n:plane:index" -> Int16Array (a few dozen slices at most)
const settingsOf = new Map(); // job id -> what this page sent
let ended = false;

function say(id, text) { const el = $(id); el.textContent = text; el.hidden = !text; }

async function api(url, options = {}) {
  const headers = Object.assign({ Accept: 'application/json', 'X-CSRFToken': csrf }, options.headers || {});
  const resp = await fetch(url, Object.assign({ cache: 'no-store', credentials: 'same-origin' }, options, { headers }));
  if (resp.status === 429) {
    const wait = parseInt(resp.headers.get('Retry-After') || '2', 10);
    await new Promise(ok => setTimeout(ok, 1000 * Math.max(1, wait)));
    return api(url, options);
  }
  return resp;
}

async function problem(resp) {
  try { const body = await resp.json(); return body.detail || body.title || `HTTP ${resp.status}`; } catch (err) { return `HTTP ${resp.status}`; }
}

const fmt = (n, digits = 0) => Number(n).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
const mb = bytes => (bytes < 1048576 ? `${Math.max(1, Math.round(bytes / 1024))} kB`
  : `${(bytes / 1048576).toFixed(bytes < 10485760 ? 1 : 0)} MB`);

// ------------------------------------------------------------------ the scan
async function loadScan() {
  let delay = 250;
  for (;;) {
    const resp = await api(root.dataset.scanUrl);
    if (resp.status === 404 || resp.status === 410) { gone('This scan is not here any more (deleted, or its time was up).'); return; }
    if (!resp.ok) { say('scan-error', await problem(resp)); return; }
    const scan = await resp.json();
    state.scan = scan;
    showExpiry(scan.expires_at);
    if (scan.status === 'ready') { ready(scan); return; }
    if (scan.status === 'failed') {
      say('scan-status', '');
      say('scan-error', `The scan could not be read: ${(scan.error && scan.error.message) || 'no usable series'}.`);
      return;
    }
    if (scan.status === 'deleted') { gone('This scan has been deleted.'); return; }
    say('scan-status', 'The server is reading your files and listing the series…');
    await new Promise(ok => setTimeout(ok, delay));
    delay = Math.min(delay * 1.3, 2000);
  }
}

function showExpiry(iso) {
  const el = $('scan-expires');
  if (!iso || !el) return;
  el.dateTime = iso;
  el.textContent = new Date(Date.parse(iso)).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function ready(scan) {
  say('scan-status', '');
  const usable = scan.series.filter(s => !s.error);
  if (!usable.length) { say('scan-error', 'None of the series in this upload can be shown.'); return; }
  buildPicker(scan.series);
  $('series-picker').hidden = false;
  const first = usable.reduce((a, b) => (b.slices * b.rows * b.columns > a.slices * a.rows * a.columns ? b : a));
  choose(first.n);
  loadJobs();
}

function buildPicker(series) {
  const list = $('series-list');
  list.replaceChildren();
  for (const s of series) {
    const label = document.createElement('label');
    label.className = 'series-card';
    label.dataset.n = String(s.n);
    const radio = document.createElement('input');
    radio.type = 'radio'; radio.name = 'series'; radio.value = String(s.n);
    radio.disabled = Boolean(s.error);
    radio.addEventListener('change', () => { if (radio.checked) choose(s.n); });
    const img = document.createElement('img');
    img.alt = `The middle slice of series ${s.number ?? s.n}`;
    img.className = 'thumb';
    const facts = document.createElement('span');
    facts.className = 'facts';
    const title = document.createElement('strong');
    title.textContent = `Series ${s.number ?? '–'}${s.description ? `: ${s.description}` : ''}`;
    const detail = document.createElement('span');
    const spacing = (s.spacing_mm || []).map(x => fmt(x, 2)).join(' × ');
    detail.textContent = [s.modality, `${s.slices} slices`, `${s.columns} × ${s.rows}`,
      spacing ? `${spacing} mm` : '', s.acquired ? `acquired ${s.acquired.replace('T', ' ')}` : '',
      s.error ? `cannot be shown: ${s.error.message || s.error.code}` : ''].filter(Boolean).join(' · ');
    facts.append(title, document.createElement('br'), detail);
    label.append(radio, img, facts);
    list.append(label);
    if (s.links && s.links.thumbnail && !s.error) {
      api(s.links.thumbnail, { headers: { Accept: 'image/png' } }).then(async r => {
        if (r.ok) img.src = URL.createObjectURL(await r.blob());
      });
    }
  }
}

// ---------------------------------------------------------------- one series
async function choose(n) {
  const s = state.scan.series.find(x => x.n === n);
  state.n = n; state.series = s; state.crop = null; state.seed = null;
  document.querySelectorAll('#series-list input').forEach(r => { r.checked = Number(r.value) === n; });
  const [geo, hist] = await Promise.all([
    api(s.links.volume).then(r => (r.ok ? r.json() : Promise.reject(r))),
    api(s.links.histogram).then(r => (r.ok ? r.json() : Promise.reject(r))),
  ]).catch(async r => { say('scan-error', r.status ? await problem(r) : String(r)); return [null, null]; });
  if (!geo) return;
  state.geometry = geo; state.histogram = hist;
  state.window = defaultWindow(hist);
  setupThreshold(hist, geo);
  setupWindow(hist);
  setupRegion(geo);
  $('look').hidden = false;
  for (const plane of ['axial', 'coronal', 'sagittal']) {
    const figure = document.querySelector(`figure.view[data-plane="${plane}"]`);
    views[plane] = new SliceView(figure, plane, geo.planes[plane], geo.to_patient[plane], loadValues);
  }
  await Promise.all(Object.values(views).map(v => v.show(v.index, state)));
  root.dataset.views = 'shown';
  drawHistogram();
  showRegion();
  estimateSoon();
}

async function loadValues(plane, index) {
  const key = `${state.n}:${plane}:${index}`;
  if (cache.has(key)) return cache.get(key);
  const url = `${state.series.links.slice}?plane=${plane}&index=${index}&format=values`;
  const resp = await api(url, { headers: { Accept: 'application/octet-stream' } });
  if (!resp.ok) throw new Error(await problem(resp));
  const values = new Int16Array(await resp.arrayBuffer());
  cache.set(key, values);
  if (cache.size > 90) cache.delete(cache.keys().next().value);
  return values;
}

// the 1st to the 99th percentile, as the server's thumbnails
function defaultWindow(hist) {
  const total = hist.counts.reduce((a, b) => a + b, 0) || 1;
  let acc = 0, lo = hist.edges[0], hi = hist.edges[hist.edges.length - 1];
  let loSet = false;
  for (let i = 0; i < hist.counts.length; i++) {
    acc += hist.counts[i];
    if (!loSet && acc / total >= 0.01) { lo = hist.edges[i]; loSet = true; }
    if (acc / total >= 0.99) { hi = hist.edges[i + 1]; break; }
  }
  return { low: lo, high: hi > lo ? hi : lo + 1 };
}

function setupThreshold(hist, geo) {
  const [lo, hi] = hist.range;
  const slider = $('threshold');
  const number = $('threshold-number');
  slider.min = lo; slider.max = hi; slider.step = Math.max((hi - lo) / 1000, hi - lo > 50 ? 1 : 0.01);
  number.min = lo; number.max = hi; number.step = 'any';
  document.querySelectorAll('.unit').forEach(el => { el.textContent = geo.unit; });
  const select = $('suggested');
  select.replaceChildren();
  const custom = new Option('Your own (the slider)', '');
  select.append(custom);
  for (const s of hist.suggested) {
    const o = new Option(`${s.label}${s.name === 'auto' ? `: ${fmt(s.value, 1)}` : ''}`, s.name);
    o.dataset.value = String(s.value); o.dataset.region = s.region;
    select.append(o);
  }
  const start = hist.suggested.find(s => s.name === (geo.modality === 'CT' ? 'bone' : 'auto'))
    || hist.suggested[hist.suggested.length - 1];
  const inRange = start && start.value > lo && start.value < hi;
  setThreshold(inRange ? start.value : (lo + hi) / 2, inRange ? start.name : null);
}

function setThreshold(value, preset = null) {
  state.threshold = Number(value);
  state.preset = preset;
  const s = preset && state.histogram.suggested.find(x => x.name === preset);
  state.below = Boolean(s && s.region === 'below');
  $('threshold').value = String(value);
  $('threshold-number').value = String(Math.round(value * 100) / 100);
  $('suggested').value = preset || '';
  root.dataset.threshold = String(state.threshold);
  scheduleOverlay();
  estimateSoon();
}

let overlayFrame = 0;
function scheduleOverlay() {
  if (overlayFrame) return;
  overlayFrame = requestAnimationFrame(() => {
    overlayFrame = 0;
    Object.values(views).forEach(v => v.drawOverlay(state));
    drawHistogram();
  });
}

$('threshold').addEventListener('input', e => setThreshold(e.target.value));
$('threshold-number').addEventListener('change', e => {
  const v = Number(e.target.value);
  if (Number.isFinite(v)) setThreshold(v);
});
$('suggested').addEventListener('change', e => {
  const o = e.target.selectedOptions[0];
  if (o && o.value) setThreshold(Number(o.dataset.value), o.value);
});

function setupWindow(hist) {
  const [lo, hi] = hist.range;
  const width = $('window-width'), level = $('window-level');
  width.min = 1; width.max = Math.max(2, hi - lo); width.step = 'any';
  level.min = lo; level.max = hi; level.step = 'any';
  width.value = String(state.window.high - state.window.low);
  level.value = String((state.window.high + state.window.low) / 2);
}

function windowChanged() {
  const w = Number($('window-width').value), l = Number($('window-level').value);
  if (!(w > 0) || !Number.isFinite(l)) return;
  state.window = { low: l - w / 2, high: l + w / 2 };
  Object.values(views).forEach(v => v.drawImage(state));
}
$('window-width').addEventListener('input', windowChanged);
$('window-level').addEventListener('input', windowChanged);

// ----------------------------------------------------------------- histogram
function drawHistogram() {
  const canvas = $('histogram');
  const hist = state.histogram;
  if (!hist) return;
  // drawn at the size it is shown (no stretched text), in CSS pixels
  const dpr = Math.min(window.devicePixelRatio || 1, 2);
  const w = canvas.clientWidth || 720, h = canvas.clientHeight || 150, pad = 4, axis = 18;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const [lo, hi] = [hist.edges[0], hist.edges[hist.edges.length - 1]];
  const x = v => pad + (w - 2 * pad) * (v - lo) / Math.max(hi - lo, 1e-9);
  const top = Math.log1p(Math.max(...hist.counts));
  ctx.fillStyle = '#6e9fd1';
  for (let i = 0; i < hist.counts.length; i++) {
    const bh = (h - axis - pad) * Math.log1p(hist.counts[i]) / Math.max(top, 1e-9);
    const x0 = x(hist.edges[i]), x1 = x(hist.edges[i + 1]);
    ctx.fillRect(x0, h - axis - bh, Math.max(1, x1 - x0), bh);
  }
  ctx.font = '11px system-ui, sans-serif';
  ctx.textBaseline = 'top';
  for (const s of hist.suggested) {
    if (s.value < lo || s.value > hi) continue;
    ctx.strokeStyle = s.name === 'auto' ? '#1a7f37' : '#57606a';
    ctx.setLineDash([3, 3]);
    ctx.beginPath(); ctx.moveTo(x(s.value), pad); ctx.lineTo(x(s.value), h - axis); ctx.stroke();
    ctx.setLineDash([]);
    ctx.fillStyle = ctx.strokeStyle;
    ctx.fillText(s.name === 'auto' ? 'Otsu' : s.name, Math.min(x(s.value) + 2, w - 40), pad);
  }
  ctx.strokeStyle = '#b3261e'; ctx.lineWidth = 2;
  ctx.beginPath(); ctx.moveTo(x(state.threshold), pad); ctx.lineTo(x(state.threshold), h - axis); ctx.stroke();
  ctx.lineWidth = 1;
  ctx.fillStyle = '#1b1f24';
  ctx.fillText(fmt(lo), pad, h - axis + 3);
  const right = fmt(hi);
  ctx.fillText(right, w - pad - ctx.measureText(right).width, h - axis + 3);
  const unit = hist.unit || '';
  const marks = hist.suggested.filter(s => s.value >= lo && s.value <= hi)
    .map(s => (s.name === 'auto' ? `Otsu ${fmt(s.value, 1)}` : `${s.name} ${fmt(s.value)}`)).join(', ');
  $('histogram-caption').textContent = `Values from ${fmt(hist.range[0])} to ${fmt(hist.range[1])} ${unit} `
    + `(counts on a log scale). Marked: ${marks || 'nothing in range'}. The red line is the threshold, `
    + `${fmt(state.threshold, 1)} ${unit}.`;
}

window.addEventListener('resize', drawHistogram);

$('histogram').addEventListener('pointerdown', e => {
  const canvas = $('histogram');
  const pick = ev => {
    const box = canvas.getBoundingClientRect();
    const hist = state.histogram;
    const [lo, hi] = [hist.edges[0], hist.edges[hist.edges.length - 1]];
    const v = lo + (hi - lo) * Math.min(Math.max((ev.clientX - box.left) / box.width, 0), 1);
    setThreshold(Math.round(v * 10) / 10);
  };
  pick(e);
  canvas.setPointerCapture(e.pointerId);
  const move = ev => pick(ev);
  canvas.addEventListener('pointermove', move);
  canvas.addEventListener('pointerup', () => canvas.removeEventListener('pointermove', move), { once: true });
});

// -------------------------------------------------------------- slice views
document.querySelectorAll('figure.view').forEach(figure => {
  const plane = figure.dataset.plane;
  const slider = figure.querySelector('input.slice');
  slider.addEventListener('input', () => views[plane] && views[plane].show(Number(slider.value), state));
  const overlay = figure.querySelector('canvas.overlay');
  overlay.addEventListener('wheel', e => {
    const v = views[plane];
    if (!v) return;
    e.preventDefault();
    v.show(v.wanted + (e.deltaY > 0 ? 1 : -1), state);
  }, { passive: false });
  overlay.addEventListener('pointerdown', e => {
    const v = views[plane];
    if (!v) return;
    const [c, r] = v.pixelAt(e);
    if (state.tool === 'seed') {
      state.seed = v.toPatient(Math.round(c), Math.round(r)).map(x => Math.round(x * 100) / 100);
      setTool(null);
      showRegion();
      return;
    }
    if (state.tool !== 'crop') return;
    e.preventDefault();
    overlay.setPointerCapture(e.pointerId);
    state.drawing = v;
    state.dragBox = [c, r, c, r];
    const move = ev => { const [c2, r2] = v.pixelAt(ev); state.dragBox[2] = c2; state.dragBox[3] = r2; v.drawOverlay(state); };
    overlay.addEventListener('pointermove', move);
    overlay.addEventListener('pointerup', () => {
      overlay.removeEventListener('pointermove', move);
      const [c0, r0, c1, r1] = state.dragBox;
      state.drawing = null; state.dragBox = null;
      if (Math.abs(c1 - c0) >= 1 && Math.abs(r1 - r0) >= 1) setCrop(v, c0, r0, c1, r1);
      setTool(null);
      showRegion();
    }, { once: true });
  });
});

// the box drawn on view v (pixels c0..c1, r0..r1 of its current slice) in
// patient mm: the two axes the view spans from the drawing, the third kept
// (or the whole volume's)
function setCrop(v, c0, r0, c1, r1) {
  const b = state.geometry.bounds_mm;
  const box = state.crop ? { min: [...state.crop.min], max: [...state.crop.max] }
                         : { min: [...b.min], max: [...b.max] };
  const a = v.toPatient(Math.min(c0, c1), Math.min(r0, r1));
  const z = v.toPatient(Math.max(c0, c1), Math.max(r0, r1));
  const dominant = vec => [0, 1, 2].reduce((i, j) => (Math.abs(vec[j]) > Math.abs(vec[i]) ? j : i), 0);
  for (const axis of new Set([dominant(v.tp.column), dominant(v.tp.row)])) {
    box.min[axis] = Math.max(Math.min(a[axis], z[axis]), b.min[axis]);
    box.max[axis] = Math.min(Math.max(a[axis], z[axis]), b.max[axis]);
  }
  box.min = box.min.map(x => Math.round(x * 100) / 100);
  box.max = box.max.map(x => Math.round(x * 100) / 100);
  state.crop = box;
}

function setTool(tool) {
  state.tool = tool;
  $('tool-crop').setAttribute('aria-pressed', String(tool === 'crop'));
  $('tool-seed').setAttribute('aria-pressed', String(tool === 'seed'));
  root.classList.toggle('tool-crop', tool === 'crop');
  root.classList.toggle('tool-seed', tool === 'seed');
  say('tool-hint', tool === 'crop' ? 'Drag a box on any of the three views.'
    : tool === 'seed' ? 'Click the part to keep on any of the three views.' : '');
}
$('tool-crop').addEventListener('click', () => setTool(state.tool === 'crop' ? null : 'crop'));
$('tool-seed').addEventListener('click', () => setTool(state.tool === 'seed' ? null : 'seed'));
$('clear-crop').addEventListener('click', () => { state.crop = null; showRegion(); });
$('clear-seed').addEventListener('click', () => { state.seed = null; showRegion(); });

function setupRegion(geo) {
  // only what the converter offers on this server (converter/options.py)
  const offer = (id, name) => { const el = $(id); if (el) el.hidden = !OFFERED.has(name); };
  offer('crop-tools', 'crop'); offer('seed-tools', 'seed');
  offer('table-field', 'remove_table'); offer('parts-field', 'keep_parts');
  if (geo.modality !== 'CT') $('table-field').hidden = true;
}

const mm = p => p.map(x => fmt(x, 1)).join(', ');
function showRegion() {
  $('crop-text').textContent = state.crop
    ? `From (${mm(state.crop.min)}) to (${mm(state.crop.max)}) mm, LPS.` : 'No box: the whole volume.';
  $('seed-text').textContent = state.seed ? `At (${mm(state.seed)}) mm, LPS.` : 'No point: every part.';
  root.dataset.crop = state.crop ? [...state.crop.min, ...state.crop.max].join(',') : '';
  root.dataset.seed = state.seed ? state.seed.join(',') : '';
  Object.values(views).forEach(v => v.drawOverlay(state));
  estimateSoon();
}

// ---------------------------------------------------------- options, estimate
function chosenOptions() {
  const out = {};
  if (state.preset && state.histogram.suggested.some(s => s.name === state.preset
      && Number(s.value) === state.threshold)) out.preset = state.preset;
  else out.threshold = String(state.threshold);
  if (state.crop && OFFERED.has('crop')) out.crop = [...state.crop.min, ...state.crop.max].join(',');
  if (state.seed && OFFERED.has('seed')) out.seed = state.seed.join(',');
  if ($('remove-table').checked && !$('table-field').hidden) out.remove_table = 'true';
  const parts = $('keep-parts').value.trim();
  if (parts && !$('parts-field').hidden) out.keep_parts = parts;
  const smooth = $('smooth').value.trim();
  if (smooth !== '') out.smooth = smooth;
  const decimate = $('decimate').value;
  if (decimate) out.decimate = decimate;
  return out;
}

let estimateTimer = 0, estimateSeq = 0;
function estimateSoon() {
  clearTimeout(estimateTimer);
  estimateTimer = setTimeout(estimate, 450);
}
async function estimate() {
  if (!state.series || ended) return;
  const mine = ++estimateSeq;
  const el = $('estimate');
  el.textContent = 'Estimating…';
  const query = new URLSearchParams(chosenOptions());
  const resp = await api(`${state.series.links.estimate}?${query}`);
  if (mine !== estimateSeq) return;
  if (!resp.ok) { el.textContent = `No estimate: ${await problem(resp)}`; el.dataset.ok = 'no'; return; }
  const e = await resp.json();
  el.dataset.ok = 'yes';
  el.dataset.triangles = String(e.triangles);
  const format = String(e.format || 'stl').toUpperCase();
  const time = e.seconds === undefined ? '' : e.seconds < 1 ? ', under a second to convert'
    : `, about ${fmt(e.seconds, 0)} s to convert`;
  el.textContent = `About ${fmt(e.triangles)} triangles, ${mb(e.bytes)} as ${format}${time}.`;
}
['smooth', 'decimate', 'keep-parts', 'remove-table'].forEach(id => $(id).addEventListener('change', estimateSoon));

// ------------------------------------------------------------------- convert
$('convert').addEventListener('click', async () => {
  if (!state.series) return;
  say('convert-error', '');
  const sent = chosenOptions();
  const data = new FormData();
  data.append('series', String(state.n));
  for (const [k, v] of Object.entries(sent)) data.append(k, v);
  $('convert').disabled = true;
  const resp = await api(root.dataset.convertUrl, { method: 'POST', body: data });
  $('convert').disabled = false;
  if (resp.status !== 202) { say('convert-error', await problem(resp)); return; }
  const job = await resp.json();
  settingsOf.set(job.id, Object.assign({ series: state.series.number ?? state.n }, sent));
  upsert(job);
  pollSoon(300);
});

// ------------------------------------------------------------------- results
const cards = new Map(); // job id -> {card, job, shown}
let pollTimer = 0;
function pollSoon(ms) { clearTimeout(pollTimer); pollTimer = setTimeout(loadJobs, ms); }

async function loadJobs() {
  if (ended) return;
  const resp = await api(root.dataset.jobsUrl);
  if (!resp.ok) { pollSoon(5000); return; }
  const body = await resp.json();
  const jobs = body.jobs.slice().reverse(); // oldest first
  jobs.forEach(upsert);
  if (jobs.some(j => LIVE.has(j.status))) pollSoon(700);
}

function settingsText(job) {
  const r = job.report, o = (r && r.options) || settingsOf.get(job.id) || {};
  const parts = [];
  if (r && r.threshold) parts.push(`threshold ${fmt(r.threshold.value, 1)} ${r.threshold.unit === 'HU' ? 'HU' : ''} (${r.threshold.source})`);
  else if (o.preset) parts.push(`preset ${o.preset}`);
  else if (o.threshold !== undefined && o.threshold !== null) parts.push(`threshold ${o.threshold}`);
  if (o.smooth) parts.push(`smoothing ${o.smooth}`);
  if (o.decimate) parts.push(`keep ${o.decimate} of the triangles`);
  if (o.crop) parts.push('cropped');
  if (o.seed) parts.push('the part under a point');
  if (o.remove_table && o.remove_table !== 'false') parts.push('table removed');
  if (o.keep_parts) parts.push(`${o.keep_parts} largest parts`);
  if (o.largest) parts.push('largest part');
  return parts.join(', ');
}

function upsert(job) {
  $('results').hidden = false;
  let entry = cards.get(job.id);
  if (!entry) {
    const card = $('result-template').content.firstElementChild.cloneNode(true);
    card.dataset.job = job.id;
    card.querySelector('.n').textContent = String(cards.size + 1);
    card.querySelector('.compare').addEventListener('change', showCompare);
    card.querySelector('.delete').addEventListener('click', () => deleteJob(job.id));
    card.querySelector('.download').addEventListener('click', () => download(job.id, card));
    $('result-list').append(card);
    entry = { card, job, shown: null };
    cards.set(job.id, entry);
  }
  entry.job = job;
  const { card } = entry;
  card.dataset.status = job.status;
  card.querySelector('.settings').textContent = settingsText(job);
  const progress = card.querySelector('progress');
  const status = card.querySelector('.status');
  if (LIVE.has(job.status)) {
    const pct = Math.round((job.progress && job.progress.percent) || 0);
    const stage = (job.progress && job.progress.stage) || job.status;
    progress.hidden = false; progress.value = pct;
    status.textContent = `${STAGES[stage] || stage}: ${pct} %`;
  } else {
    progress.hidden = true;
    status.textContent = job.status === 'done' ? ''
      : job.status === 'failed' ? `Failed: ${(job.error && job.error.message) || 'the conversion failed'} (${(job.error && job.error.code) || 'failed'})`
      : 'Deleted.';
  }
  card.querySelector('.actions').hidden = job.status !== 'done';
  card.querySelector('.compare-field').hidden = job.status !== 'done';
  if (job.status === 'done' && entry.shown !== 'done') {
    entry.shown = 'done';
    showReport(card, job.report || {});
    showPreview(job.id, card);
  }
  if (job.status !== 'done') card.querySelector('.compare').checked = false;
  showCompare();
}

function showReport(card, r) {
  const dl = card.querySelector('dl.report');
  dl.replaceChildren();
  const rows = [
    ['Triangles', fmt(r.triangles || 0)],
    ['File size', mb((r.stl && r.stl.bytes) || 0)],
    ['Volume', `${fmt((r.volume_mm3 || 0) / 1000, 1)} cm³`],
    ['Area', `${fmt(r.area_mm2 || 0)} mm²`],
    ['Pieces', fmt(r.components || 0)],
    ['Watertight', r.watertight ? 'yes' : 'no'],
    ['Manifold', r.manifold ? 'yes' : 'no'],
    ['Time', r.timings_s && r.timings_s.total !== undefined ? `${fmt(r.timings_s.total, 2)} s` : '–'],
  ];
  for (const [k, v] of rows) {
    const dt = document.createElement('dt'); dt.textContent = k;
    const dd = document.createElement('dd'); dd.textContent = v;
    dl.append(dt, dd);
  }
  (r.warnings || []).forEach(w => { const dd = document.createElement('dd'); dd.className = 'warning'; dd.textContent = w; dl.append(dd); });
}

async function showPreview(jobId, card) {
  const canvas = card.querySelector('canvas.preview');
  const status = card.querySelector('.preview-status');
  status.textContent = 'Loading the 3D preview…';
  try {
    const resp = await api(`${jobBase}${jobId}/preview`, { headers: { Accept: 'application/octet-stream' } });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const buffer = await resp.arrayBuffer();
    const [{ decodePreview }, { show }] = await Promise.all([import('./meshpreview.js'), import('./meshview.js')]);
    const shown = show(canvas, decodePreview(buffer));
    canvas.dataset.drawn = 'yes';
    canvas.dataset.triangles = String(shown.triangles);
    canvas.dataset.bytes = String(buffer.byteLength);
    status.textContent = `Preview: ${fmt(shown.triangles)} triangles (${mb(buffer.byteLength)}); drag to turn it.`;
  } catch (err) {
    canvas.dataset.drawn = 'no';
    status.textContent = 'No 3D preview here; the STL can still be downloaded.';
  }
}

async function download(jobId, card) {
  const link = card.querySelector('a.saver');
  const resp = await api(`${jobBase}${jobId}/model.stl`, { headers: { Accept: 'model/stl' } });
  if (!resp.ok) { card.querySelector('.status').textContent = `The model could not be downloaded: ${await problem(resp)}`; return; }
  const url = URL.createObjectURL(await resp.blob());
  link.href = url;
  link.download = `model-${card.querySelector('.n').textContent}.stl`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

async function deleteJob(jobId) {
  const resp = await api(`${jobBase}${jobId}/delete`, { method: 'POST', redirect: 'manual' });
  if (resp.type !== 'opaqueredirect' && !resp.ok) return;
  const entry = cards.get(jobId);
  if (entry) upsert(Object.assign({}, entry.job, { status: 'deleted', report: null }));
}

function showCompare() {
  const chosen = [...cards.values()].filter(e => e.card.querySelector('.compare').checked);
  const section = $('compare');
  cards.forEach(e => e.card.classList.toggle('compared', chosen.includes(e)));
  section.hidden = chosen.length < 2;
  if (chosen.length < 2) return;
  const table = section.querySelector('table');
  const rows = [
    ['Model', e => e.card.querySelector('.n').textContent],
    ['Settings', e => settingsText(e.job)],
    ['Triangles', e => fmt(e.job.report.triangles || 0)],
    ['File size', e => mb((e.job.report.stl && e.job.report.stl.bytes) || 0)],
    ['Volume', e => `${fmt((e.job.report.volume_mm3 || 0) / 1000, 1)} cm³`],
    ['Pieces', e => fmt(e.job.report.components || 0)],
    ['Watertight', e => (e.job.report.watertight ? 'yes' : 'no')],
  ];
  table.replaceChildren(...rows.map(([label, get]) => {
    const tr = document.createElement('tr');
    const th = document.createElement('th'); th.scope = 'row'; th.textContent = label;
    tr.append(th, ...chosen.map(e => { const td = document.createElement('td'); td.textContent = get(e); return td; }));
    return tr;
  }));
  // the compared models side by side, first in the list
  const list = $('result-list');
  chosen.slice().reverse().forEach(e => list.prepend(e.card));
}

// ---------------------------------------------------------------------- done
$('done').addEventListener('click', async () => {
  $('done').disabled = true;
  const resp = await api(root.dataset.scanUrl, { method: 'DELETE' });
  if (resp.status !== 204 && resp.status !== 404) {
    $('done').disabled = false;
    say('done-status', `Not deleted: ${await problem(resp)}`);
    return;
  }
  gone(`Deleted: your upload${cards.size ? ` and the ${cards.size === 1 ? 'model' : `${cards.size} models`} made from it` : ''} are gone from this server.`);
});

function gone(message) {
  ended = true;
  clearTimeout(pollTimer);
  for (const id of ['series-picker', 'look', 'results', 'done-actions']) $(id).hidden = true;
  say('scan-status', '');
  say('done-status', message);
  root.dataset.state = 'deleted';
}

loadScan().catch(err => say('scan-error', `The workspace failed: ${err.message || err}`));
