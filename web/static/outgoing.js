// What the upload page sends: every chosen file de-identified in this
// browser first (deidentify.js), zips unpacked here member by member (fflate)
// and their members sent as files.  A file this browser cannot read as
// DICOM, or a DICOMDIR index, is named on the page (names never leave the
// browser) and not sent.  The page also shows the series the converter will
// see, read from the de-identified headers.
import { Unzip, UnzipInflate } from '/vendor/fflate/fflate.js';
import { Deidentifier, NotDicom, Profile } from './deidentify.js';

const ZIP = [0x50, 0x4b, 0x03, 0x04];
let profile = null;

function loadProfile(url) {
  if (!profile) {
    profile = fetch(url, { headers: { Accept: 'application/json' } })
      .then(r => { if (!r.ok) throw new Error(`profile: HTTP ${r.status}`); return r.json(); })
      .then(json => new Profile(json))
      .catch(err => { profile = null; throw err; });
  }
  return profile;
}

const nameOf = f => f.webkitRelativePath || f.name;

async function isZip(file) {
  const head = new Uint8Array(await file.slice(0, 4).arrayBuffer());
  return ZIP.every((b, i) => head[i] === b);
}

/** Each member of a zip, as {name, bytes} or {name, error}, read as a stream. */
async function* members(file) {
  const done = [];
  const unzip = new Unzip(stream => {
    if (stream.name.endsWith('/')) return; // a folder entry
    const entry = { name: `${nameOf(file)}: ${stream.name}`, parts: [], error: null };
    stream.ondata = (err, chunk, final) => {
      if (err) { entry.error = err; done.push(entry); return; }
      if (chunk && chunk.length) entry.parts.push(chunk);
      if (final) done.push(entry);
    };
    try { stream.start(); } catch (err) { entry.error = err; done.push(entry); }
  });
  unzip.register(UnzipInflate);
  const reader = file.stream().getReader();
  for (;;) {
    const { value, done: end } = await reader.read();
    unzip.push(end ? new Uint8Array(0) : value, end);
    while (done.length) {
      const entry = done.shift();
      if (entry.error) { yield { name: entry.name, error: entry.error }; continue; }
      const bytes = new Uint8Array(entry.parts.reduce((n, p) => n + p.length, 0));
      let at = 0;
      for (const p of entry.parts) { bytes.set(p, at); at += p.length; }
      entry.parts = null;
      yield { name: entry.name, bytes };
    }
    if (end) return;
  }
}

async function* sources(files) {
  for (const file of files) {
    let zipped = false;
    try { zipped = await isZip(file); } catch (err) { zipped = false; }
    if (!zipped) {
      yield { name: nameOf(file), bytes: new Uint8Array(await file.arrayBuffer()) };
      continue;
    }
    try {
      yield* members(file);
    } catch (err) {
      yield { name: nameOf(file), error: err, zip: true };
    }
  }
}

/**
 * De-identify ``files`` (File objects: DICOM files or zips).
 * Returns {files: [Blob], bytes, series: [...], refused: [name], indexes: [name]}.
 */
export async function prepare(files, { profileUrl, onProgress } = {}) {
  const deid = new Deidentifier(await loadProfile(profileUrl));
  const out = { files: [], bytes: 0, series: [], refused: [], indexes: [] };
  const series = new Map();
  let seen = 0;
  for await (const source of sources(files)) {
    seen += 1;
    if (onProgress) onProgress(seen);
    if (source.error) { out.refused.push(source.name); continue; }
    let made;
    try {
      made = deid.file(source.bytes);
    } catch (err) {
      if (!(err instanceof NotDicom)) console.warn('de-identification failed on a file');
      out.refused.push(source.name);
      continue;
    }
    if (made === null) { out.indexes.push(source.name); continue; }
    const blob = new Blob(made.chunks, { type: 'application/dicom' });
    out.files.push(blob);
    out.bytes += blob.size;
    const info = made.info;
    if (!info.image) continue;
    const key = `${info.series}|${info.rows}x${info.columns}`;
    const entry = series.get(key) || { modality: info.modality, number: info.number,
                                       rows: info.rows, columns: info.columns, images: 0 };
    entry.images += info.frames;
    series.set(key, entry);
  }
  out.series = [...series.values()].sort((a, b) => (Number(a.number) || 0) - (Number(b.number) || 0));
  return out;
}

function cell(row, text, label) {
  const td = row.insertCell();
  td.textContent = text;
  td.dataset.label = label;
}

/** Show what is sent in the page's #outgoing block (the names stay in the browser). */
export function show(root, ready) {
  const summary = root.querySelector('#outgoing-summary');
  const n = ready.files.length;
  summary.textContent = n
    ? `${n} file${n === 1 ? '' : 's'} will be sent: names, ids and dates removed before upload.`
    : 'Nothing can be sent: none of the files is a DICOM file this browser can read.';
  const body = root.querySelector('#outgoing-series tbody');
  body.replaceChildren();
  ready.series.forEach((s, i) => {
    const row = body.insertRow();
    cell(row, `Series ${i + 1}`, 'Series');
    cell(row, s.modality, 'Modality');
    cell(row, String(s.images), 'Images');
    cell(row, `${s.columns} × ${s.rows}`, 'Image size');
  });
  root.querySelector('#outgoing-series').hidden = !ready.series.length;
  const list = root.querySelector('#not-sent-list');
  list.replaceChildren();
  for (const name of ready.refused) {
    const li = document.createElement('li');
    li.textContent = `${name} (not readable as DICOM)`;
    list.append(li);
  }
  for (const name of ready.indexes) {
    const li = document.createElement('li');
    li.textContent = `${name} (a DICOMDIR index)`;
    list.append(li);
  }
  root.querySelector('#not-sent').hidden = !list.children.length;
  root.hidden = false;
}
