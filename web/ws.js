/* WebSocket client for a Digital Human session: plain JS, no build step.
 *
 * Protocol (README "WebSocket sessions"): POST /api/sessions, then open
 * /ws/sessions/{id} and send {"type":"hello","token":...,"face":"jpeg"|"visemes"}.
 * Text messages: the session's events, plus "welcome", "mouth" keyframes and "ping".
 * Binary: kind (1 byte) | frame index (uint32 LE) | payload; kind 1 = 40 ms of PCM16 audio
 * at welcome.audio_rate, kind 2 = a JPEG frame. Frame n plays at n * 40 ms: audio, picture
 * and mouth keyframes line up by index. The client acks the newest frame it took in (flow
 * control) and answers pings. Mic: PCM16 mono 16 kHz in binary messages of 20 ms.
 *
 * Test hooks: window.dhws = {state, events, frames, audioFrames, mouths, welcome, ...}.
 */
const AUDIO = 1, JPEG = 2;
const ACK_EVERY = 5;           // frames between acks
const MIC_RATE = 16000, MIC_FRAME = 320;  // 20 ms
const PLAYOUT_LEAD_S = 0.12;   // audio is scheduled this far ahead of its first frame

const $ = (id) => document.getElementById(id);
const canvas = $('face'), ctx = canvas.getContext('2d');
const dhws = window.dhws = {
  state: 'idle', events: [], frames: 0, audioFrames: 0, loudFrames: [], jpegSizes: {}, mouths: [],
  welcome: null, sessionId: null, drawnFrames: 0, lastFrame: -1, closeCode: null,
};
let ws = null, session = null, audioCtx = null, audioBase = null, acked = -1, mic = null;

function setState(state) { dhws.state = state; $('ws-state').textContent = state; }
function log(line) {
  const el = $('ws-log');
  el.textContent = `${new Date().toISOString().slice(11, 23)} ${line}\n` + el.textContent.slice(0, 20000);
}

async function start() {
  $('ws-start').disabled = true;
  setState('connecting');
  const r = await fetch('/api/sessions', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: '{}' });
  if (!r.ok) { log(`session refused: ${r.status} ${await r.text()}`); setState('failed'); $('ws-start').disabled = false; return; }
  session = await r.json();
  dhws.sessionId = session.session_id;
  audioCtx = new AudioContext();
  connect(false);
}

function connect(resume) {
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws/sessions/${session.session_id}`;
  ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => ws.send(JSON.stringify({ type: 'hello', token: session.token, face: $('ws-face').value }));
  ws.onmessage = (m) => (typeof m.data === 'string' ? onText(m.data) : onBinary(m.data));
  ws.onclose = (e) => {
    dhws.closeCode = e.code;
    log(`closed ${e.code} ${e.reason}`);
    setState('closed');
    $('ws-stop').disabled = true; $('ws-start').disabled = false;
  };
  $('ws-stop').disabled = false;
}

function onText(text) {
  const ev = JSON.parse(text);
  switch (ev.type) {
    case 'welcome': dhws.welcome = ev; acked = ev.first_frame - 1; setState('connected'); log(`welcome ${text}`); return;
    case 'ping': ws.send('{"type":"pong"}'); return;
    case 'pong': return;
    case 'mouth': dhws.mouths.push(ev); if (dhws.mouths.length > 500) dhws.mouths.shift(); drawMouth(ev); took(ev.frame); return;
    default: onEvent(ev);
  }
}

function onEvent(ev) {
  dhws.events.push(ev);
  if (ev.type === 'user_transcript') $('ws-transcript').textContent = `You: ${ev.text}`;
  else if (ev.type === 'assistant_text') {
    const el = $('ws-transcript');
    el.textContent = ev.delta ? `${el.textContent.startsWith('Avatar: ') ? el.textContent : 'Avatar: '}${ev.text}` : `Avatar: ${ev.text}`;
  } else if (ev.type === 'state') setState(ev.state);
  else if (ev.type === 'error') log(`error (${ev.stage}): ${ev.message}`);
  if (ev.type !== 'assistant_text' || !ev.delta) log(JSON.stringify(ev));
}

function onBinary(buffer) {
  const view = new DataView(buffer);
  const kind = view.getUint8(0), frame = view.getUint32(1, true);
  const payload = buffer.slice(5);
  if (kind === AUDIO) playAudio(frame, new Int16Array(payload));
  else if (kind === JPEG) drawJpeg(frame, payload);
  took(frame);
}

function took(frame) {
  if (frame > dhws.lastFrame) dhws.lastFrame = frame;
  if (frame - acked >= ACK_EVERY && ws.readyState === WebSocket.OPEN) {
    acked = frame;
    ws.send(JSON.stringify({ type: 'ack', frame }));
  }
}

function playAudio(frame, pcm) {
  dhws.audioFrames += 1;
  let peak = 0;
  for (let i = 0; i < pcm.length; i += 8) peak = Math.max(peak, Math.abs(pcm[i]));
  if (peak > 1000 && dhws.loudFrames.length < 5000) dhws.loudFrames.push(frame);
  if (!audioCtx || !dhws.welcome) return;
  const rate = dhws.welcome.audio_rate, fps = dhws.welcome.fps;
  if (audioBase === null || audioCtx.currentTime > audioBase + frame / fps + 0.5) {
    audioBase = audioCtx.currentTime + PLAYOUT_LEAD_S - frame / fps;  // (re)anchor the clock
  }
  const at = audioBase + frame / fps;
  if (at < audioCtx.currentTime) return;  // too late to play: skipped, like a lost packet
  const buffer = audioCtx.createBuffer(1, pcm.length, rate);
  const data = buffer.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) data[i] = pcm[i] / 32768;
  const source = audioCtx.createBufferSource();
  source.buffer = buffer;
  source.connect(audioCtx.destination);
  source.start(at);
}

async function drawJpeg(frame, payload) {
  dhws.frames += 1;
  if (Object.keys(dhws.jpegSizes).length < 5000) dhws.jpegSizes[frame] = payload.byteLength;
  const bitmap = await createImageBitmap(new Blob([payload], { type: 'image/jpeg' }));
  ctx.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  dhws.drawnFrames += 1;
}

const MOUTH_OPEN = { A: 0.05, B: 0.25, C: 0.6, D: 1, E: 0.7, F: 0.4, G: 0.2, H: 0.45, X: 0 };
function drawMouth(ev) {  // a 2D rig: what a three.js or Unity client would do with blend shapes
  const open = (MOUTH_OPEN[ev.viseme] ?? 0) * (0.4 + 0.6 * ev.weight);
  ctx.fillStyle = '#26303c'; ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = '#e0b48a'; ctx.beginPath(); ctx.arc(256, 240, 170, 0, 2 * Math.PI); ctx.fill();
  ctx.fillStyle = '#222'; ctx.beginPath(); ctx.arc(196, 200, 16, 0, 2 * Math.PI); ctx.arc(316, 200, 16, 0, 2 * Math.PI); ctx.fill();
  ctx.fillStyle = '#7a2230'; ctx.beginPath(); ctx.ellipse(256, 320, 60, 4 + 50 * open, 0, 0, 2 * Math.PI); ctx.fill();
  dhws.drawnFrames += 1;
}

async function toggleMic(on) {
  if (!on) { if (mic) { mic.stream.getTracks().forEach((t) => t.stop()); mic.ctx.close(); mic = null; } return; }
  const stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true, channelCount: 1 } });
  const micCtx = new AudioContext({ sampleRate: MIC_RATE });
  const source = micCtx.createMediaStreamSource(stream);
  const node = micCtx.createScriptProcessor(1024, 1, 1);
  let pending = new Int16Array(0);
  node.onaudioprocess = (e) => {
    const input = e.inputBuffer.getChannelData(0);
    const pcm = new Int16Array(pending.length + input.length);
    pcm.set(pending);
    for (let i = 0; i < input.length; i++) pcm[pending.length + i] = Math.max(-1, Math.min(1, input[i])) * 32767;
    let at = 0;
    for (; at + MIC_FRAME <= pcm.length; at += MIC_FRAME) {
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(pcm.slice(at, at + MIC_FRAME).buffer);
    }
    pending = pcm.slice(at);
  };
  source.connect(node); node.connect(micCtx.destination);
  mic = { stream, ctx: micCtx };
}

function send(message) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message)); }
$('ws-start').onclick = () => start().catch((e) => { log(String(e)); setState('failed'); });
async function stop() {  // ends the session too (a dropped socket alone waits resume_ttl_s for a reconnect)
  if (ws) ws.close(1000, 'stopped');
  toggleMic(false);
  if (session) {
    const s = session; session = null;
    await fetch(`/api/sessions/${s.session_id}`, { method: 'DELETE', headers: { Authorization: `Bearer ${s.token}` } });
  }
}
$('ws-stop').onclick = () => stop().catch((e) => log(String(e)));
$('ws-form').onsubmit = (e) => { e.preventDefault(); send({ type: 'ask', text: $('ws-text').value }); };
$('ws-say').onclick = () => send({ type: 'say', text: $('ws-text').value });
$('ws-interrupt').onclick = () => send({ type: 'interrupt' });
$('ws-mic').onchange = (e) => toggleMic(e.target.checked).catch((err) => { log(`mic: ${err}`); e.target.checked = false; });
window.addEventListener('pagehide', () => { if (ws) ws.close(1000, 'page closed'); });
