// Job page: poll the status while the job is queued or running, move the
// progress bar, announce stages; reload when it leaves the queue; count down
// to automatic deletion and show the deleted state when the time is up.
//
// Polling (each poll is one access-log row): every 0.7 s while the progress
// moves, backing off (x1.5) while it does not, to 5 s when running and 10 s
// when waiting in the queue; paused while the tab is hidden; stopped for good
// when the job is done, failed, deleted or waiting for a series choice.
// The states in which it polls and the stages' names come from the server
// (worker/states.py and web/jobs.py), in the page's data- attributes.
const section = document.getElementById('job');
const statusUrl = section.dataset.statusUrl;
const bar = document.getElementById('progress');
const text = document.getElementById('progress-text');
const STAGES = JSON.parse(section.dataset.stages || '{}');
const WAITING = JSON.parse(section.dataset.waiting || '[]');
const FAST = 700;
const MAX_RUNNING = 5000;
const MAX_QUEUED = 10000;
const MAX_TROUBLE = 30000;

let lastAnnounced = '';
let lastSeen = '';
let delay = FAST;
let timer = null;
let paused = false;
let stopped = false;

function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(poll, ms);
}

function stop(reloadAfter) {
  stopped = true;
  clearTimeout(timer);
  if (reloadAfter !== undefined) setTimeout(() => window.location.reload(), reloadAfter);
}

function show(view) {
  const pct = Math.round((view.progress && view.progress.percent) || 0);
  const stage = (view.progress && view.progress.stage) || view.status;
  if (bar) { bar.value = pct; bar.textContent = `${pct} %`; }
  const label = `${STAGES[stage] || stage}: ${pct} %`;
  // announce each stage once, and every quarter, not every tick
  const key = `${stage}:${Math.floor(pct / 25)}`;
  if (text && key !== lastAnnounced) { text.textContent = label; lastAnnounced = key; }
  else if (text) { text.dataset.current = label; }
  return `${view.status}:${stage}:${pct}`;
}

async function poll() {
  if (stopped) return;
  if (document.hidden) { paused = true; return; }
  let resp;
  try {
    resp = await fetch(statusUrl, { headers: { Accept: 'application/json' }, cache: 'no-store' });
  } catch (err) {
    delay = Math.min(delay * 2, MAX_TROUBLE);
    schedule(delay);
    return;
  }
  if (resp.status === 404 || resp.status === 410) { stop(0); return; } // the page says why
  if (resp.status === 429) {
    const wait = parseInt(resp.headers.get('Retry-After') || '', 10);
    schedule(1000 * (wait > 0 ? wait : 30));
    return;
  }
  if (!resp.ok) {
    delay = Math.min(delay * 2, MAX_TROUBLE);
    schedule(delay);
    return;
  }
  let view;
  try { view = await resp.json(); } catch (err) { schedule(MAX_TROUBLE); return; }
  const seen = show(view);
  if (!WAITING.includes(view.status)) {
    if (bar && view.status === 'done') { bar.value = 100; text.textContent = 'Done: 100 %'; }
    stop(view.status === 'done' ? 400 : 0);
    return;
  }
  if (seen !== lastSeen) {
    lastSeen = seen;
    delay = FAST;
  } else {
    delay = Math.min(delay * 1.5, view.status === 'queued' ? MAX_QUEUED : MAX_RUNNING);
  }
  schedule(delay);
}

document.addEventListener('visibilitychange', () => {
  if (!document.hidden && paused && !stopped) {
    paused = false;
    delay = FAST;
    poll();
  }
});

if (WAITING.includes(section.dataset.status)) schedule(FAST);

// the countdown to automatic deletion; when it is up, the page shows what is left
const left = document.getElementById('time-left');
const expires = section.dataset.expires;
if (left && expires) {
  const at = Date.parse(expires);
  const clock = document.getElementById('expires-at');
  if (clock) {  // the server says UTC; the browser knows the reader's time zone
    clock.textContent = new Date(at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }
  let ticker = null;
  const tick = () => {
    const s = Math.max(0, Math.round((at - Date.now()) / 1000));
    const m = Math.ceil(s / 60);
    if (s <= 0) {
      left.textContent = 'now';
      clearInterval(ticker);
      // the sweeper deletes it at (or just before) this time: show that state
      setTimeout(() => window.location.reload(), 5000);
      return;
    }
    left.textContent = s < 60 ? `in ${s} seconds` : `in ${m} minute${m === 1 ? '' : 's'}`;
  };
  tick();
  ticker = setInterval(tick, 1000);
}
