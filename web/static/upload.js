// Upload page: drag and drop (folders too), upload progress, readable errors.
// What is sent is made by outgoing.js: every file de-identified here first
// (zips unpacked here), sent as "file-N"; file names never leave the browser.
import { prepare, show } from './outgoing.js';

const form = document.getElementById('upload');
const folderInput = document.getElementById('folder');
const filesInput = document.getElementById('files');
const dropzone = document.getElementById('dropzone');
const chosen = document.getElementById('chosen');
const statusEl = document.getElementById('upload-status');
const errorEl = document.getElementById('upload-error');
const sending = document.getElementById('sending');
const bar = document.getElementById('upload-progress');
const submit = document.getElementById('submit');
const preset = document.getElementById('preset');
const threshold = document.getElementById('threshold');

const outgoingEl = document.getElementById('outgoing');

// "drag them here" only where something can drag: a mouse or a pen, not a touch screen
if (window.matchMedia('(any-pointer: fine)').matches) {
  document.getElementById('drag-hint').hidden = false;
}

let dropped = null; // files from a drop, when the last choice was a drop
let outgoing = null; // the de-identified files of the current choice (a promise)
let choice = 0; // which choice the page shows

function showThreshold() {
  const custom = preset.value === 'threshold';
  threshold.disabled = !custom;
  threshold.required = custom;
  document.getElementById('threshold-field').classList.toggle('muted', !custom);
}
preset.addEventListener('change', showThreshold);
showThreshold();

function currentFiles() {
  if (dropped) return dropped;
  return [...folderInput.files, ...filesInput.files];
}

function describe(files) {
  if (!files.length) return 'Nothing chosen yet.';
  const bytes = files.reduce((n, f) => n + f.size, 0);
  const size = bytes < 1048576 ? `${Math.max(1, Math.round(bytes / 1024))} kB`
                               : `${(bytes / 1048576).toFixed(1)} MB`;
  return `${files.length} file${files.length === 1 ? '' : 's'} chosen (${size}).`;
}

function update() {
  const files = currentFiles();
  chosen.textContent = describe(files);
  const refusal = files.length ? tooMuch(files) : null;
  if (refusal) fail(refusal); else errorEl.hidden = true;
  prepareOutgoing(files);
}

// de-identify the choice now, so the page can say what will be sent
function prepareOutgoing(files) {
  const mine = ++choice;
  outgoingEl.hidden = !files.length;
  if (!files.length) { outgoing = null; return; }
  const summary = document.getElementById('outgoing-summary');
  summary.textContent = 'Removing names, ids and dates in this browser…';
  outgoing = prepare(files, {
    profileUrl: form.dataset.profileUrl,
    onProgress: n => { if (mine === choice) summary.textContent = `Removing names, ids and dates in this browser: file ${n}…`; },
  });
  outgoing.then(ready => { if (mine === choice) show(outgoingEl, ready); },
                () => { if (mine === choice) summary.textContent = 'The files could not be de-identified in this browser.'; });
}
folderInput.addEventListener('change', () => { dropped = null; filesInput.value = ''; update(); });
filesInput.addEventListener('change', () => { dropped = null; folderInput.value = ''; update(); });

function readEntry(entry) {
  if (entry.isFile) return new Promise((ok, fail) => entry.file(f => ok([f]), fail));
  if (!entry.isDirectory) return Promise.resolve([]);
  const reader = entry.createReader();
  return new Promise((ok, fail) => {
    const all = [];
    const next = () => reader.readEntries(async entries => {
      if (!entries.length) {
        const nested = await Promise.all(all.map(readEntry));
        ok(nested.flat());
        return;
      }
      all.push(...entries);
      next();
    }, fail);
    next();
  });
}

['dragenter', 'dragover'].forEach(t => dropzone.addEventListener(t, e => {
  e.preventDefault(); dropzone.classList.add('over');
}));
['dragleave', 'drop'].forEach(t => dropzone.addEventListener(t, () => dropzone.classList.remove('over')));
dropzone.addEventListener('drop', async e => {
  e.preventDefault();
  const items = [...(e.dataTransfer.items || [])];
  const entries = items.map(i => i.webkitGetAsEntry && i.webkitGetAsEntry()).filter(Boolean);
  try {
    dropped = entries.length ? (await Promise.all(entries.map(readEntry))).flat()
                             : [...e.dataTransfer.files];
  } catch (err) {
    dropped = [...e.dataTransfer.files];
  }
  folderInput.value = ''; filesInput.value = '';
  update();
});

function fail(message) {
  errorEl.textContent = message;
  errorEl.hidden = false;
  statusEl.textContent = '';
  sending.hidden = true;
  submit.disabled = false;
  document.getElementById('look-first').disabled = false;
}

// what the server would refuse, said before a byte is sent
function tooMuch(files) {
  const maxBytes = Number(form.dataset.maxBytes || 0);
  const maxFiles = Number(form.dataset.maxFiles || 0);
  const bytes = files.reduce((n, f) => n + f.size, 0);
  // each file is a form part with a few hundred bytes of headers
  const body = bytes + 400 * files.length + 4096;
  const mb = n => (n / 1048576).toFixed(n < 10485760 ? 1 : 0);
  if (maxFiles && files.length > maxFiles) {
    return `That is ${files.length} files; this server takes at most ${maxFiles} in one upload. ` +
      'Choose the folder of one series, or fewer files.';
  }
  if (maxBytes && body > maxBytes) {
    return `That is ${mb(bytes)} MB; this server takes at most ${mb(maxBytes)} MB in one upload. ` +
      'Choose the folder of one series, or a zip of it.';
  }
  return null;
}

// "Look first": the upload becomes a scan workspace (POST /api/v1/scans with
// this session), where the options are chosen while looking at the slices
const lookFirst = document.getElementById('look-first');
lookFirst.hidden = false;
document.getElementById('look-help').hidden = false;

form.addEventListener('submit', async e => {
  e.preventDefault();
  errorEl.hidden = true;
  const look = e.submitter === lookFirst;
  const files = currentFiles();
  if (!files.length) { fail('Choose a folder, a zip or DICOM files first.'); return; }
  const refusal = tooMuch(files);
  if (refusal) { fail(refusal); return; }
  if (!look && preset.value === 'threshold' && !threshold.value.trim()) {
    fail('Enter a threshold for a custom level.');
    threshold.focus();
    return;
  }
  let ready;
  try {
    submit.disabled = true;
    ready = await outgoing;
  } catch (err) {
    fail('The files could not be de-identified in this browser, so nothing was sent.');
    return;
  }
  if (!ready.files.length) {
    fail('None of the files is a DICOM file this browser can read: nothing was sent.');
    return;
  }
  const tooBig = tooMuch(ready.files);
  if (tooBig) { fail(tooBig); return; }
  const data = new FormData();
  if (!look) {  // a scan takes only the files: its options are chosen on its page
    for (const [name, value] of new FormData(form)) {
      if (name !== 'files') data.append(name, value);
    }
  }
  ready.files.forEach((f, i) => data.append('files', f, `file-${i + 1}`));
  const xhr = new XMLHttpRequest();
  xhr.open('POST', look ? form.dataset.scanUrl : form.action);
  xhr.setRequestHeader('Accept', 'application/json');
  xhr.setRequestHeader('X-CSRFToken', document.querySelector('meta[name=csrf-token]').content);
  xhr.upload.addEventListener('progress', ev => {
    if (!ev.lengthComputable) return;
    const pct = Math.round(100 * ev.loaded / ev.total);
    bar.value = pct; bar.textContent = `${pct} %`;
    if (pct % 10 === 0) statusEl.textContent = `Uploading: ${pct} %`;
  });
  // the last byte is sent: the server now reads what came (unpacks, checks each file)
  xhr.upload.addEventListener('load', () => {
    bar.value = 100; bar.textContent = '100 %';
    statusEl.textContent = 'Uploaded. The server is reading the files (unpacking zips, ' +
      'checking that each one is DICOM)…';
  });
  xhr.addEventListener('load', () => {
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
    if (look && xhr.status === 201 && body && body.id) {
      statusEl.textContent = 'Uploaded. Opening your scan…';
      window.location.assign(form.dataset.scanPage + encodeURIComponent(body.id));
    } else if (xhr.status === 201 && body && body.url) {
      statusEl.textContent = 'Uploaded. Opening the job page…';
      window.location.assign(body.url);
    } else if (body && body.detail) {
      fail(body.detail);
    } else {
      fail(`The upload was refused (HTTP ${xhr.status}).`);
    }
  });
  xhr.addEventListener('error', () => fail('The upload did not reach the server (network error, or the upload is too large).'));
  submit.disabled = true;
  lookFirst.disabled = true;
  sending.hidden = false;
  statusEl.textContent = 'Uploading…';
  xhr.send(data);
});
