// MoodLane web control surface: an XY pad (valence x, arousal y), presets, a lane
// recorder and live status, over one WebSocket. Every control goes out as an OSC-shaped
// message ({address, args}) and takes the bridge's OSC path; what is shown is the status
// dict /moodlane/status sends, plus what is being played. No libraries, no network but
// this page's own server.
"use strict";

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");
const TRAIL_S = 20, ROLL_S = 8;

const state = {
  ws: null, connected: false, hello: null, status: null, target: [0, 0], frames: 0,
  trail: [], notes: [], spectro: [], audio: null, offset: 0,
  hand: null,               // the pad point under the pointer, [v, a], while pressed
  pending: null,            // the last pad point not sent yet (one per animation frame)
  rec: null, lane: null,    // the recording in progress, the last one finished
};
window.moodlane = state;  // for the browser test and the curious

// -- the socket -------------------------------------------------------------------------
function connect(delay = 500) {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws` + (token ? `?token=${encodeURIComponent(token)}` : "");
  const ws = new WebSocket(url);
  state.ws = ws;
  ws.onopen = () => { state.connected = true; setConn("connected", true); delay = 500; };
  ws.onclose = () => {
    state.connected = false;
    setConn("disconnected: retrying", false);
    setTimeout(() => connect(Math.min(delay * 2, 5000)), delay);
  };
  ws.onmessage = (ev) => {
    let m;
    try { m = JSON.parse(ev.data); } catch { return; }
    if (m.type === "hello") onHello(m);
    else if (m.type === "status") onStatus(m);
    else if (m.type === "error") showError(m.error);
  };
}

function send(address, args = []) {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify({ address, args }));
}

function setConn(text, ok) {
  const c = $("conn");
  c.textContent = text;
  c.className = ok ? "good" : "bad";
}

let errorTimer = null;
function showError(text) {
  $("error").textContent = "server: " + text;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => { $("error").textContent = ""; }, 4000);
}

// -- what the server says ---------------------------------------------------------------
function onHello(h) {
  state.hello = h;
  $("engine").textContent = `${h.engine} engine (${h.kind})` + (h.backend ? ` · ${h.backend}` : "") + (h.osc ? ` · OSC ${h.osc}` : "") + ` · v${h.version}`;
  const box = $("presets");
  box.replaceChildren();
  for (const p of h.presets) {
    const b = document.createElement("button");
    b.textContent = p.name;
    b.title = `${p.description} (valence ${p.valence.toFixed(2)}, arousal ${p.arousal.toFixed(2)})`;
    b.dataset.preset = p.name;
    b.onclick = () => { send("/moodlane/preset", [p.name]); recordPoint(p.valence, p.arousal); };
    box.appendChild(b);
  }
  const modes = $("modes");
  modes.replaceChildren();
  for (const m of h.modes) {
    const b = document.createElement("button");
    b.textContent = m;
    b.dataset.mode = m;
    b.onclick = () => send("/moodlane/mode", [m]);
    modes.appendChild(b);
  }
}

function onStatus(m) {
  const now = performance.now();
  state.frames += 1;
  state.offset = now - m.t * 1000;  // server monotonic ms -> this page's clock
  const s = m.status;
  state.status = s;
  state.target = m.target;
  state.trail.push([now, s.va[0], s.va[1], m.target[0], m.target[1]]);
  while (state.trail.length && state.trail[0][0] < now - TRAIL_S * 1000) state.trail.shift();
  for (const [t, pitch, vel] of m.notes) state.notes.push([t * 1000 + state.offset, pitch, vel]);
  while (state.notes.length && state.notes[0][0] < now - ROLL_S * 1000 - 4000) state.notes.shift();
  state.audio = m.audio;
  if (m.audio) {
    state.spectro.push(m.audio.bands);
    if (state.spectro.length > 280) state.spectro.shift();
  }
  const va = $("s-va");
  va.textContent = `${fmt(s.va[0])} / ${fmt(s.va[1])}`;
  va.dataset.v = s.va[0];
  va.dataset.a = s.va[1];
  const tg = $("s-target");
  tg.textContent = `${fmt(m.target[0])} / ${fmt(m.target[1])}`;
  tg.dataset.v = m.target[0];
  tg.dataset.a = m.target[1];
  $("s-tempo").textContent = `${s.tempo.toFixed(1)} BPM`;
  $("s-playing").textContent = s.playing ? `playing (${s.mode})` : `stopped (${s.mode})`;
  $("s-buffer").textContent = `${s.buffer.toFixed(2)} beats`;
  $("s-latency").textContent = s.latency ? `${s.latency.toFixed(0)} ms (median)` : "–";
  $("s-underruns").textContent = s.underruns;
  $("s-dropped").textContent = `${s.osc_dropped + s.web_dropped} (OSC ${s.osc_dropped}, web ${s.web_dropped})`;
  $("s-notes").textContent = s.notes;
  $("s-notes").dataset.n = s.notes;
  $("play").classList.toggle("on", !!s.playing);
  for (const b of $("modes").children) b.classList.toggle("on", b.dataset.mode === s.mode);
  const notes = !state.hello || state.hello.kind === "notes";  // an audio engine plays no notes
  $("roll").hidden = !notes;
  $("audiobox").hidden = !m.audio;
  $("activity-title").textContent = "Playing: " + [notes && "notes", m.audio && "level and spectrum"].filter(Boolean).join(", ");
  if (m.audio) {
    const pct = (db) => Math.max(0, Math.min(100, (db + 60) / 60 * 100));
    $("meter-rms").style.width = pct(m.audio.rms_db) + "%";
    $("meter-peak").style.left = pct(m.audio.peak_db) + "%";
  }
}

const fmt = (x) => (x >= 0 ? "+" : "") + x.toFixed(2);

// -- the pad ----------------------------------------------------------------------------
const pad = $("pad");
function padPoint(ev) {
  const r = pad.getBoundingClientRect();
  const x = (ev.clientX - r.left) / r.width, y = (ev.clientY - r.top) / r.height;
  const clamp = (u) => Math.max(-1, Math.min(1, u));
  return [clamp(2 * x - 1), clamp(1 - 2 * y)];
}
pad.addEventListener("pointerdown", (ev) => {
  pad.setPointerCapture(ev.pointerId);
  state.hand = padPoint(ev);
  state.pending = state.hand;
  flush();
});
pad.addEventListener("pointermove", (ev) => {
  if (state.hand === null) return;
  state.hand = padPoint(ev);
  state.pending = state.hand;
});
const release = () => { if (state.hand !== null) { state.pending = state.hand; flush(); } state.hand = null; };
pad.addEventListener("pointerup", release);
pad.addEventListener("pointercancel", release);

function flush() {
  if (!state.pending) return;
  const [v, a] = state.pending;
  state.pending = null;
  send("/moodlane/va", [round3(v), round3(a)]);
  recordPoint(v, a);
}
const round3 = (x) => Math.round(x * 1000) / 1000;

// -- transport --------------------------------------------------------------------------
$("play").onclick = () => send("/moodlane/play");
$("stop").onclick = () => send("/moodlane/stop");

// -- the lane recorder: what the hand does, as `render --automation` reads it -----------
function recordPoint(v, a) {
  const r = state.rec;
  if (!r) return;
  const t = (performance.now() - r.t0) / 1000;
  const last = r.points[r.points.length - 1];
  if (last && t - last[0] < 0.02 && r.points.length > 1) r.points[r.points.length - 1] = [t, v, a];
  else r.points.push([t, v, a]);
}
$("rec").onclick = () => {
  const b = $("rec");
  if (!state.rec) {
    const tempo = state.status ? state.status.tempo : 120;
    state.rec = { t0: performance.now(), tempo, points: [] };
    recordPoint(state.target[0], state.target[1]);  // where the lanes are when it starts
    b.classList.add("on");
    b.textContent = "■ Stop recording";
    $("save").disabled = true;
  } else {
    const r = state.rec;
    state.rec = null;
    const t = (performance.now() - r.t0) / 1000;
    const last = r.points[r.points.length - 1];
    r.points.push([t, last[1], last[2]]);  // hold to the moment it stopped
    state.lane = r;
    b.classList.remove("on");
    b.textContent = "● Record lane";
    $("save").disabled = false;
  }
  showRec();
};
function showRec() {
  const r = state.rec || state.lane;
  if (!r) return;
  const secs = state.rec ? (performance.now() - r.t0) / 1000 : r.points[r.points.length - 1][0];
  $("rec-state").textContent = `${state.rec ? "recording" : "recorded"} ${secs.toFixed(1)} s, ${r.points.length} points at ${r.tempo.toFixed(0)} BPM`;
}
setInterval(showRec, 200);

function laneJSON(r) {
  const beats = r.tempo / 60;
  return {
    format: "moodlane.automation",
    version: 1,
    unit: "beats",
    tempo: r.tempo,
    source: "moodlane web pad",
    recorded: new Date().toISOString(),
    points: r.points.map(([t, v, a]) => ({ time: round3(t * beats), valence: round3(v), arousal: round3(a) })),
  };
}
$("save").onclick = () => {
  if (!state.lane) return;
  const blob = new Blob([JSON.stringify(laneJSON(state.lane), null, 1)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
  a.download = `moodlane-lane-${stamp}.json`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
};

// -- drawing ----------------------------------------------------------------------------
function drawPad() {
  const g = pad.getContext("2d"), W = pad.width, H = pad.height;
  const px = (v) => (v + 1) / 2 * W, py = (a) => (1 - a) / 2 * H;
  g.clearRect(0, 0, W, H);
  const quads = [["tense", -1, 1, "#3a2226"], ["happy", 1, 1, "#3a3322"], ["sad", -1, -1, "#222a3a"], ["calm", 1, -1, "#223a2e"]];
  for (const [name, sv, sa, col] of quads) {
    g.fillStyle = col;
    g.fillRect(sv < 0 ? 0 : W / 2, sa > 0 ? 0 : H / 2, W / 2, H / 2);
    g.fillStyle = "#8a8f99";
    g.font = "14px system-ui";
    g.textAlign = sv < 0 ? "left" : "right";
    g.fillText(name, sv < 0 ? 10 : W - 10, sa > 0 ? 22 : H - 10);
  }
  g.strokeStyle = "#3a404c";
  g.lineWidth = 1;
  g.beginPath(); g.moveTo(W / 2, 0); g.lineTo(W / 2, H); g.moveTo(0, H / 2); g.lineTo(W, H / 2); g.stroke();
  // the smoothed trail, fading
  const tr = state.trail, now = performance.now();
  for (let i = 1; i < tr.length; i++) {
    g.strokeStyle = `rgba(74,163,255,${Math.max(0, 1 - (now - tr[i][0]) / (TRAIL_S * 1000))})`;
    g.lineWidth = 2;
    g.beginPath(); g.moveTo(px(tr[i - 1][1]), py(tr[i - 1][2])); g.lineTo(px(tr[i][1]), py(tr[i][2])); g.stroke();
  }
  // the target (the hand, or the server's target) as a ring; the smoothed point as a dot
  const t = state.hand || state.target;
  g.strokeStyle = "#f2a93b"; g.lineWidth = 3;
  g.beginPath(); g.arc(px(t[0]), py(t[1]), 14, 0, 2 * Math.PI); g.stroke();
  if (state.status) {
    g.fillStyle = "#4aa3ff";
    g.beginPath(); g.arc(px(state.status.va[0]), py(state.status.va[1]), 8, 0, 2 * Math.PI); g.fill();
  }
}

function drawRoll() {
  const c = $("roll"), g = c.getContext("2d"), W = c.width, H = c.height, now = performance.now();
  g.clearRect(0, 0, W, H);
  const lo = 28, hi = 100, x = (t) => W - (now - t) / (ROLL_S * 1000) * W, y = (p) => H - (p - lo) / (hi - lo) * H;
  g.strokeStyle = "#2b303a";
  for (let p = 36; p < hi; p += 12) { g.beginPath(); g.moveTo(0, y(p)); g.lineTo(W, y(p)); g.stroke(); }
  const open = new Map();
  const bars = [];
  for (const [t, p, v] of state.notes) {
    if (v > 0) { if (open.has(p)) bars.push([open.get(p)[0], t, p, open.get(p)[1]]); open.set(p, [t, v]); }
    else if (open.has(p)) { const [t0, v0] = open.get(p); bars.push([t0, t, p, v0]); open.delete(p); }
  }
  for (const [p, [t0, v0]] of open) bars.push([t0, now, p, v0]);
  for (const [t0, t1, p, v] of bars) {
    if (t1 < now - ROLL_S * 1000) continue;
    g.fillStyle = `hsla(${35 - v / 4}, 90%, 60%, ${0.35 + v / 200})`;
    g.fillRect(x(t0), y(p) - 2, Math.max(2, x(t1) - x(t0)), 4);
  }
}

function drawSpectro() {
  const c = $("spectro"), g = c.getContext("2d"), W = c.width, H = c.height, cols = state.spectro;
  g.clearRect(0, 0, W, H);
  const w = 2;
  for (let i = 0; i < cols.length; i++) {
    const col = cols[i], bh = H / col.length, x0 = W - (cols.length - i) * w;
    for (let j = 0; j < col.length; j++) {
      const u = Math.max(0, Math.min(1, (col[j] + 90) / 80));
      g.fillStyle = `hsl(${240 - 200 * u}, 80%, ${8 + 55 * u}%)`;
      g.fillRect(x0, H - (j + 1) * bh, w, bh + 0.5);
    }
  }
}

function drawTrail() {
  const c = $("trail"), g = c.getContext("2d"), W = c.width, H = c.height, now = performance.now(), tr = state.trail;
  g.clearRect(0, 0, W, H);
  const x = (t) => W - (now - t) / (TRAIL_S * 1000) * W, y = (u) => (1 - u) / 2 * (H - 8) + 4;
  g.strokeStyle = "#2b303a"; g.beginPath(); g.moveTo(0, y(0)); g.lineTo(W, y(0)); g.stroke();
  const line = (k, col, dash) => {
    g.strokeStyle = col; g.setLineDash(dash); g.lineWidth = 2; g.beginPath();
    tr.forEach((p, i) => (i ? g.lineTo(x(p[0]), y(p[k])) : g.moveTo(x(p[0]), y(p[k]))));
    g.stroke(); g.setLineDash([]);
  };
  line(3, "rgba(74,163,255,.45)", [4, 4]); line(4, "rgba(242,169,59,.45)", [4, 4]);
  line(1, "#4aa3ff", []); line(2, "#f2a93b", []);
  g.fillStyle = "#4aa3ff"; g.fillText("valence", 6, 12); g.fillStyle = "#f2a93b"; g.fillText("arousal", 60, 12);
}

function frame() {
  flush();
  drawPad();
  drawRoll();
  if (state.audio) drawSpectro();
  drawTrail();
  requestAnimationFrame(frame);
}

connect();
requestAnimationFrame(frame);
