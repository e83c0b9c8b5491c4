// Job page: poll the status, move the progress bar, announce stages,
// reload when the job leaves the queue; count down to automatic deletion.
const section = document.getElementById('job');
const statusUrl = section.dataset.statusUrl;
const bar = document.getElementById('progress');
const text = document.getElementById('progress-text');
const STAGES = { queued: 'Waiting in the queue', running: 'Starting', reading: 'Reading the scan',
  surface: 'Extracting the surface', mesh: 'Shaping the mesh', writing: 'Writing the STL',
  done: 'Done' };
let lastAnnounced = '';

async function poll() {
  let view;
  try {
    const resp = await fetch(statusUrl, { headers: { Accept: 'application/json' }, cache: 'no-store' });
    if (!resp.ok) { setTimeout(poll, 2000); return; }
    view = await resp.json();
  } catch (err) { setTimeout(poll, 2000); return; }
  const pct = Math.round((view.progress && view.progress.percent) || 0);
  const stage = (view.progress && view.progress.stage) || view.status;
  if (bar) { bar.value = pct; bar.textContent = `${pct} %`; }
  const label = `${STAGES[stage] || stage}: ${pct} %`;
  // announce each stage once, and every quarter, not every tick
  const key = `${stage}:${Math.floor(pct / 25)}`;
  if (text && key !== lastAnnounced) { text.textContent = label; lastAnnounced = key; }
  else if (text) { text.dataset.current = label; }
  if (view.status !== section.dataset.status) {
    if (bar && view.status === 'done') { bar.value = 100; text.textContent = 'Done: 100 %'; }
    setTimeout(() => window.location.reload(), view.status === 'done' ? 400 : 0);
    return;
  }
  setTimeout(poll, 600);
}

if (section.dataset.status === 'queued' || section.dataset.status === 'running') poll();

const left = document.getElementById('time-left');
const expires = section.dataset.expires;
if (left && expires) {
  const at = Date.parse(expires);
  const tick = () => {
    const s = Math.max(0, Math.round((at - Date.now()) / 1000));
    const m = Math.ceil(s / 60);
    left.textContent = s <= 0 ? 'now' : `in ${m} minute${m === 1 ? '' : 's'}`;
  };
  tick();
  setInterval(tick, 15000);
}
