/* Digital Human browser client.
 *
 * Plain JS, no build step, no external resources. Talks to the server's REST API
 * (/api/...) and receives the avatar over WebRTC (video + audio tracks, plus an
 * "events" data channel carrying JSON events).
 *
 * The microphone is sent by default (audio transceiver sendrecv) when the browser grants it;
 * the server's VAD (hands-free) or the hold-to-talk button (push-to-talk) decides when the
 * user speaks. Client -> server control messages go on the same data channel:
 * {"type":"mic_mode","mode":"hands_free"|"push_to_talk"} and {"type":"ptt","down":bool}.
 *
 * Test hooks: window.dh = {state, sessionId, pc, events, avatarState, micMode, micEnabled, ...}.
 */
(() => {
  'use strict';

  // ---------------------------------------------------------------------------
  // Configuration
  // ---------------------------------------------------------------------------
  const params = new URLSearchParams(location.search);
  const CONFIG = {
    apiBase: '',                 // same origin
    avatarIdPattern: /^[A-Za-z0-9_-]{1,64}$/,
    avatarJobPollMs: 400,
    maxTextLength: 2000,
    iceGatherTimeoutMs: 2000,    // server has no trickle ICE: wait for gathering, at most this
    connectTimeoutMs: 20000,     // from offer answered to ICE connected
    disconnectGraceMs: 5000,     // 'disconnected' may recover; give up after this
    // Data-channel liveness (serve_app/events.py CHANNEL_PING_S / CHANNEL_LOST_S): no pong
    // this long means the session is gone server-side; ICE alone would take ~30 s to notice.
    channelPingMs: 2000,
    channelLostMs: 10000,
    reconnectAttempts: 3,        // offers on the same session after its media was lost
    reconnectDelayMs: 2000,
    statsIntervalMs: 1000,
    maxLogEntries: 500,
    // Send the microphone (audio transceiver sendrecv) when the browser grants it; ?mic=0
    // turns it off (receive only, type to talk).
    sendMicrophone: params.get('mic') !== '0',
    micConstraints: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    micModes: ['hands_free', 'push_to_talk'],
    meterFloorDb: -60,           // mic level meter: this dBFS shows as empty...
    meterCeilDb: -6,             // ...and this as full
    preferredVideoCodecs: ['video/VP8'],
  };

  const CONN = { IDLE: 'idle', CONNECTING: 'connecting', CONNECTED: 'connected', FAILED: 'failed' };

  // ---------------------------------------------------------------------------
  // Elements
  // ---------------------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  const el = {
    connState: $('conn-state'),
    serverStatus: $('server-status'),
    notice: $('notice'),
    noticeText: $('notice-text'),
    noticeClose: $('notice-close'),
    stage: $('stage'),
    video: $('video'),
    placeholder: $('placeholder'),
    placeholderImg: $('placeholder-img'),
    placeholderFallback: $('placeholder-fallback'),
    placeholderCaption: $('placeholder-caption'),
    unmute: $('unmute'),
    avatarState: $('avatar-state'),
    stats: $('stats'),
    latency: $('latency'),
    assistantText: $('assistant-text'),
    voiceCard: $('voice-card'),
    voiceState: $('voice-state'),
    voiceStateLabel: $('voice-state-label'),
    voiceStateHint: $('voice-state-hint'),
    micMute: $('mic-mute'),
    micMuteLabel: $('mic-mute-label'),
    micLevel: $('mic-level'),
    micLevelFill: $('mic-level-fill'),
    micLevelPeak: $('mic-level-peak'),
    micMode: $('mic-mode'),
    micStatus: $('mic-status'),
    ptt: $('ptt'),
    pttLabel: $('ptt-label'),
    transcript: $('transcript'),
    transcriptClear: $('transcript-clear'),
    ask: $('ask'),
    say: $('say'),
    avatarSelect: $('avatar-select'),
    avatarMeta: $('avatar-meta'),
    characterField: $('character-field'),
    characterSelect: $('character-select'),
    voiceField: $('voice-field'),
    voiceSelect: $('voice-select'),
    voiceMeta: $('voice-meta'),
    start: $('start'),
    stop: $('stop'),
    form: $('say-form'),
    text: $('text'),
    count: $('text-count'),
    send: $('send'),
    interrupt: $('interrupt'),
    log: $('log'),
    logClear: $('log-clear'),
    avatarsPanel: $('avatars-panel'),
    avatarGallery: $('avatar-gallery'),
    avatarGalleryStatus: $('avatar-gallery-status'),
    avatarForm: $('avatar-upload-form'),
    avatarFile: $('avatar-file'),
    avatarId: $('avatar-id'),
    avatarName: $('avatar-name'),
    adminToken: $('admin-token'),
    avatarUpload: $('avatar-upload'),
    avatarJob: $('avatar-job'),
    avatarProgress: $('avatar-progress'),
    avatarProgressText: $('avatar-progress-text'),
    avatarCancel: $('avatar-cancel'),
  };

  // ---------------------------------------------------------------------------
  // Public state for automated tests / debugging
  // ---------------------------------------------------------------------------
  const dh = {
    state: CONN.IDLE,        // connection state: idle | connecting | connected | failed
    sessionId: null,
    pc: null,
    events: [],              // every event object received on the data channel
    avatarState: 'offline',  // last {"type":"state"} value
    ready: false,            // {"type":"ready"} received for the current session
    channelOpen: false,
    lastTurnId: null,
    lastLatency: null,       // {turn_id, marks, text}
    stats: null,             // {fps, width, height, ...} of the inbound video
    avatars: [],
    defaultAvatar: null,     // "default" of GET /api/avatars
    avatarJob: null,         // last avatar upload job: {job_id, avatar_id, state, stage, percent, error}
    characters: [],
    voices: [],              // GET /api/voices
    micMode: 'hands_free',   // hands_free | push_to_talk (the server confirms with a mic_mode event)
    micEnabled: false,       // a microphone track is being sent in the current session
    micMuted: false,
    micLevel: 0,             // 0..1, the local mic level meter
    micError: null,          // why the microphone is not used, if it is not
    pttDown: false,          // the hold-to-talk button (or Space) is held
    sendAction: 'ask',       // what Enter / #send does with the text box: ask | say
    config: CONFIG,
  };
  window.dh = dh;

  // Current session (null when none). `gen` guards against stale async work after Stop.
  let session = null;
  let generation = 0;

  // ---------------------------------------------------------------------------
  // Small helpers
  // ---------------------------------------------------------------------------
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  function timestamp(d = new Date()) {
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  class ApiError extends Error {
    constructor(message, status, retryAfter = null) {
      super(message);
      this.name = 'ApiError';
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  function parseRetryAfter(value) {
    if (!value) return null;
    const secs = Number(value);
    if (Number.isFinite(secs)) return Math.max(0, Math.ceil(secs));
    const date = Date.parse(value);
    if (!Number.isNaN(date)) return Math.max(0, Math.ceil((date - Date.now()) / 1000));
    return null;
  }

  function detailToMessage(detail) {
    if (detail == null) return null;
    if (typeof detail === 'string') return detail;
    if (Array.isArray(detail)) {
      // FastAPI validation errors: [{loc, msg, type}, ...]
      return detail.map((d) => (d && d.msg ? d.msg : JSON.stringify(d))).join('; ');
    }
    if (typeof detail === 'object' && detail.message) return String(detail.message);
    return JSON.stringify(detail);
  }

  /** fetch JSON from the API; throws ApiError with the server's "detail" on failure. */
  async function api(path, { method = 'GET', body, auth = false, signal, keepalive } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (auth && session && session.token) headers.Authorization = `Bearer ${session.token}`;
    let resp;
    try {
      resp = await fetch(CONFIG.apiBase + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
        keepalive,
        cache: 'no-store',
      });
    } catch (err) {
      if (err && err.name === 'AbortError') throw err;
      throw new ApiError(`Cannot reach the server (${err && err.message ? err.message : err})`, 0);
    }
    let data = null;
    const text = resp.status === 204 ? '' : await resp.text();
    if (text) {
      try { data = JSON.parse(text); } catch { data = null; }
    }
    if (!resp.ok) {
      const msg = detailToMessage(data && data.detail)
        || (text && !data ? text.slice(0, 200) : null)
        || `${resp.status} ${resp.statusText || 'error'}`;
      throw new ApiError(msg, resp.status, parseRetryAfter(resp.headers.get('Retry-After')));
    }
    return data;
  }

  // ---------------------------------------------------------------------------
  // Log, notice
  // ---------------------------------------------------------------------------
  function log(message, kind = 'info') {
    const nearBottom = el.log.scrollHeight - el.log.scrollTop - el.log.clientHeight < 40;
    const li = document.createElement('li');
    li.className = `log-entry log-${kind}`;
    const time = document.createElement('time');
    time.textContent = timestamp();
    const msg = document.createElement('span');
    msg.className = 'log-msg';
    msg.textContent = message;
    li.append(time, msg);
    el.log.append(li);
    while (el.log.childElementCount > CONFIG.maxLogEntries) el.log.firstElementChild.remove();
    if (nearBottom) el.log.scrollTop = el.log.scrollHeight;
    if (kind === 'error') console.warn('[dh]', message); else console.debug('[dh]', message);
  }

  let noticeTimer = null;
  function showNotice(message, kind = 'error') {
    clearInterval(noticeTimer);
    noticeTimer = null;
    el.notice.dataset.kind = kind;
    el.noticeText.textContent = message;
    el.notice.hidden = false;
  }
  function hideNotice() {
    clearInterval(noticeTimer);
    noticeTimer = null;
    el.notice.hidden = true;
    el.noticeText.textContent = '';
  }
  function showBusyNotice(seconds) {
    let left = seconds == null ? null : seconds;
    const render = () => {
      el.noticeText.textContent = left == null
        ? 'Server busy, please retry shortly'
        : (left > 0 ? `Server busy, retry in ${left} s` : 'Server busy, you can retry now');
    };
    showNotice('', 'warn');
    render();
    if (left != null && left > 0) {
      noticeTimer = setInterval(() => {
        left -= 1;
        render();
        if (left <= 0) { clearInterval(noticeTimer); noticeTimer = null; }
      }, 1000);
    }
  }

  // ---------------------------------------------------------------------------
  // UI state
  // ---------------------------------------------------------------------------
  function setConnState(state) {
    dh.state = state;
    el.connState.textContent = state;
    el.connState.dataset.state = state;
    el.stage.dataset.conn = state;
    updateControls();
  }

  function setAvatarState(state) {
    dh.avatarState = state;
    el.avatarState.textContent = state;
    el.stage.dataset.avatarState = state;
    renderVoiceState();
  }

  /** The big conversation state: listening / thinking / speaking / idle (your turn). */
  function renderVoiceState() {
    const connected = dh.state === CONN.CONNECTED;
    const ptt = dh.micMode === 'push_to_talk';
    const micLive = dh.micEnabled && !dh.micMuted;
    let state = connected ? dh.avatarState : (dh.state === CONN.CONNECTING ? 'connecting' : 'offline');
    if (state === 'offline' && connected) state = 'idle';
    let label;
    let hint;
    switch (state) {
      case 'connecting':
        label = 'Connecting…';
        hint = 'Starting the avatar';
        break;
      case 'listening':
        label = 'Listening…';
        hint = ptt ? 'Release to send' : 'Hearing you; pause when you are done';
        break;
      case 'thinking':
        label = 'Thinking…';
        hint = micLive && !ptt ? 'Speak to interrupt' : 'Preparing the answer';
        break;
      case 'speaking':
        label = 'Speaking';
        if (micLive) hint = ptt ? 'Hold to talk to interrupt' : 'Just talk to interrupt';
        else hint = 'Esc or Interrupt stops it';
        break;
      case 'idle':
        label = 'Your turn';
        if (!dh.micEnabled) hint = 'Type a message below';
        else if (dh.micMuted) hint = 'Microphone muted; unmute or type';
        else hint = ptt ? 'Hold the button (or Space) and speak' : 'Just speak, or type below';
        break;
      case 'offline':
        label = 'Offline';
        hint = 'Press Start to begin a conversation';
        break;
      default:
        label = state;
        hint = '';
    }
    el.voiceState.dataset.state = state;
    el.voiceStateLabel.textContent = label;
    el.voiceStateHint.textContent = hint;
  }

  function updateControls() {
    const active = session !== null;
    const connected = dh.state === CONN.CONNECTED;
    el.start.disabled = active || !window.RTCPeerConnection;
    el.stop.disabled = !active;
    el.avatarSelect.disabled = active || el.avatarSelect.options.length === 0;
    renderGallerySelection();
    el.characterSelect.disabled = active;
    el.send.disabled = !connected;
    el.interrupt.disabled = !connected;
    const hasMic = active && !!(session && session.micTrack);
    el.micMute.disabled = !hasMic;
    el.ptt.disabled = !connected || !dh.micEnabled || dh.micMuted;
    renderMicControls();
    renderVoiceState();
    el.placeholderCaption.innerHTML = dh.state === CONN.CONNECTING
      ? 'Connecting…'
      : 'Press <strong>Start</strong> to talk';
  }

  function updateCounter() {
    const n = el.text.value.length;
    el.count.textContent = `${n} / ${CONFIG.maxTextLength}`;
    el.count.classList.toggle('over', n >= CONFIG.maxTextLength);
  }

  function showPlaceholder(show) {
    el.placeholder.hidden = !show;
    el.stage.classList.toggle('has-video', !show);
  }

  function setAssistantText(text, { interrupted = false, empty = false } = {}) {
    el.assistantText.textContent = text;
    el.assistantText.classList.toggle('empty', empty);
    el.assistantText.classList.toggle('interrupted', interrupted);
  }

  // ---------------------------------------------------------------------------
  // Avatars & characters
  // ---------------------------------------------------------------------------
  function selectedAvatar() {
    return dh.avatars.find((a) => a.id === el.avatarSelect.value) || null;
  }

  function updateAvatarPreview() {
    const a = selectedAvatar();
    const meta = [];
    if (a && a.kind) meta.push(a.kind);
    if (a && Array.isArray(a.size) && a.size.length === 2) meta.push(`${a.size[0]}×${a.size[1]}`);
    el.avatarMeta.textContent = meta.join(' · ');
    const url = a ? thumbUrl(a) : '';
    if (url) {
      el.placeholderImg.hidden = false;
      el.placeholderFallback.hidden = true;
      el.placeholderImg.alt = a ? `${a.name || a.id} preview` : '';
      if (el.placeholderImg.getAttribute('src') !== url) el.placeholderImg.src = url;
    } else {
      el.placeholderImg.hidden = true;
      el.placeholderImg.removeAttribute('src');
      el.placeholderFallback.hidden = false;
    }
    try { if (a) localStorage.setItem('dh.avatar', a.id); } catch { /* storage may be disabled */ }
    renderGallerySelection();
  }

  /**
   * (Re)load GET /api/avatars into #avatar-select and the gallery. `prefer`: the id to select
   * (e.g. a just-created avatar); otherwise the current choice, the saved one, the server default.
   */
  async function loadAvatars(prefer = null) {
    let avatars = [];
    let loaded = false;
    const current = el.avatarSelect.value;
    try {
      const data = await api('/api/avatars');
      avatars = (data && Array.isArray(data.avatars)) ? data.avatars.filter((a) => a && a.id) : [];
      dh.defaultAvatar = data && typeof data.default === 'string' ? data.default : null;
      if (data && typeof data.max_upload_mb === 'number') dh.maxUploadMb = data.max_upload_mb;
      loaded = true;
    } catch (err) {
      log(`Could not load avatars: ${err.message}`, 'error');
      setGalleryStatus(`Could not load avatars: ${err.message}`, 'error');
    }
    if (loaded) setGalleryStatus(avatars.length ? '' : 'No avatars on the server yet.');
    dh.avatars = avatars;
    renderGallery();
    el.avatarSelect.replaceChildren();
    if (avatars.length === 0) {
      // Let the server choose its default avatar.
      el.avatarSelect.append(new Option('Server default', ''));
    } else {
      for (const a of avatars) el.avatarSelect.append(new Option(a.name || a.id, a.id));
      let saved = null;
      try { saved = localStorage.getItem('dh.avatar'); } catch { /* ignore */ }
      const byId = (id) => (id ? avatars.find((a) => a.id === id) : undefined);
      const pick = byId(prefer) || byId(current) || byId(saved) || byId(dh.defaultAvatar)
        || byId('default') || avatars[0];
      el.avatarSelect.value = pick.id;
      log(`Loaded ${avatars.length} avatar${avatars.length === 1 ? '' : 's'}`);
    }
    updateAvatarPreview();
    updateControls();
  }

  // ---------------------------------------------------------------------------
  // Avatars panel: gallery, delete, upload with job progress
  // ---------------------------------------------------------------------------
  const thumbVersion = new Map();  // avatar id -> cache buster, for ids re-created in this page

  function thumbUrl(a) {
    let url = a.thumbnail_url || `/api/avatars/${encodeURIComponent(a.id)}/thumbnail`;
    const v = thumbVersion.get(a.id);
    if (v) url += `${url.includes('?') ? '&' : '?'}v=${v}`;
    return url;
  }

  function isDefaultAvatar(a) {
    return dh.defaultAvatar ? a.id === dh.defaultAvatar : a.id === 'default';
  }

  function setGalleryStatus(text, kind = 'info') {
    el.avatarGalleryStatus.textContent = text;
    el.avatarGalleryStatus.dataset.kind = kind;
  }

  function adminToken() {
    return el.adminToken.value.trim();
  }

  function renderGallery() {
    el.avatarGallery.setAttribute('aria-busy', 'false');
    const items = dh.avatars.map((a) => {
      const li = document.createElement('li');
      li.className = 'avatar-tile';
      li.dataset.id = a.id;

      const pick = document.createElement('button');
      pick.type = 'button';
      pick.className = 'avatar-pick';
      pick.dataset.id = a.id;
      pick.setAttribute('aria-pressed', 'false');
      pick.title = `Use ${a.name || a.id} at the next Start`;

      const thumb = document.createElement('span');
      thumb.className = 'avatar-thumb';
      const img = document.createElement('img');
      img.alt = '';
      img.loading = 'lazy';
      img.decoding = 'async';
      img.addEventListener('error', () => img.classList.add('broken'));
      img.src = thumbUrl(a);
      thumb.append(img);

      const name = document.createElement('span');
      name.className = 'avatar-tile-name';
      name.textContent = a.name || a.id;

      const meta = document.createElement('span');
      meta.className = 'avatar-tile-meta';
      if (a.kind) {
        const badge = document.createElement('span');
        badge.className = 'kind-badge';
        badge.dataset.kind = a.kind;
        badge.textContent = a.kind;
        meta.append(badge);
      }
      if (Array.isArray(a.size) && a.size.length === 2) {
        const size = document.createElement('span');
        size.textContent = `${a.size[0]}×${a.size[1]}`;
        meta.append(size);
      }
      if (isDefaultAvatar(a)) {
        const def = document.createElement('span');
        def.className = 'default-badge';
        def.textContent = 'default';
        meta.append(def);
      }
      pick.append(thumb, name, meta);
      li.append(pick);

      if (!isDefaultAvatar(a)) {
        const del = document.createElement('button');
        del.type = 'button';
        del.className = 'avatar-delete';
        del.dataset.id = a.id;
        del.textContent = '✕';
        del.title = `Delete ${a.name || a.id}`;
        del.setAttribute('aria-label', `Delete avatar ${a.name || a.id}`);
        li.append(del);
      }
      return li;
    });
    el.avatarGallery.replaceChildren(...items);
    renderGallerySelection();
  }

  /** Mark the gallery tile of the #avatar-select choice; no picking while a session runs. */
  function renderGallerySelection() {
    if (!el.avatarGallery) return;
    const value = el.avatarSelect.value;
    const locked = session !== null;
    for (const b of el.avatarGallery.querySelectorAll('.avatar-pick')) {
      b.setAttribute('aria-pressed', String(b.dataset.id === value));
      b.disabled = locked;
    }
  }

  function pickAvatar(id) {
    if (session !== null || !dh.avatars.some((a) => a.id === id)) return;
    el.avatarSelect.value = id;
    updateAvatarPreview();
    log(`Avatar ${id} selected for the next Start`);
  }

  /** The delete button asks once ("Delete?") and deletes on a second click within 4 s. */
  function onDeleteClick(btn) {
    const id = btn.dataset.id;
    if (!btn.classList.contains('confirm')) {
      btn.classList.add('confirm');
      btn.textContent = 'Delete?';
      btn.dataset.timer = String(setTimeout(() => {
        btn.classList.remove('confirm');
        btn.textContent = '✕';
      }, 4000));
      return;
    }
    clearTimeout(Number(btn.dataset.timer));
    btn.disabled = true;
    deleteAvatar(id).finally(() => { if (btn.isConnected) { btn.disabled = false; btn.classList.remove('confirm'); btn.textContent = '✕'; } });
  }

  /** DELETE /api/avatars/{id} with the admin token; returns true when it is gone. */
  async function deleteAvatar(id) {
    const token = adminToken();
    if (!token) {
      setGalleryStatus('Enter the admin token (below) to delete avatars.', 'error');
      el.adminToken.focus();
      return false;
    }
    try {
      const resp = await fetch(`/api/avatars/${encodeURIComponent(id)}`, {
        method: 'DELETE',
        headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
        cache: 'no-store',
      });
      if (!resp.ok && resp.status !== 404) throw await responseError(resp);
      thumbVersion.set(id, Date.now());
      log(`Avatar ${id} deleted`, 'out');
      await loadAvatars();
      setGalleryStatus(resp.status === 404 ? `Avatar ${id} was already gone.` : `Deleted avatar ${id}.`);
      return true;
    } catch (err) {
      setGalleryStatus(`Could not delete ${id}: ${err.message}`, 'error');
      log(`Delete avatar ${id} failed: ${err.message}`, 'error');
      return false;
    }
  }

  /** ApiError from a failed fetch/XHR response body ({"detail": ...} or text). */
  function errorFrom(status, statusText, text) {
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    const msg = detailToMessage(data && data.detail)
      || (text && !data ? text.slice(0, 200) : null)
      || `${status} ${statusText || 'error'}`;
    return new ApiError(msg, status);
  }
  async function responseError(resp) {
    let text = '';
    try { text = await resp.text(); } catch { /* ignore */ }
    return errorFrom(resp.status, resp.statusText, text);
  }

  // Upload + job polling. Only one job at a time.
  let upload = null;   // {xhr, jobId, statusUrl, token, timer, cancelled, done}

  const TERMINAL = ['done', 'failed', 'cancelled'];

  function showJob(state, text, percent = null) {
    el.avatarJob.hidden = false;
    el.avatarJob.dataset.state = state;
    el.avatarProgressText.textContent = text;
    if (percent == null) el.avatarProgress.removeAttribute('value');  // indeterminate
    else el.avatarProgress.value = Math.max(0, Math.min(100, percent));
    el.avatarCancel.disabled = !upload || upload.done;
  }

  function setUploadBusy(busy) {
    el.avatarUpload.disabled = busy;
    el.avatarFile.disabled = busy;
    el.avatarId.disabled = busy;
    el.avatarName.disabled = busy;
  }

  function slugFromFilename(name) {
    return name.replace(/\.[^.]*$/, '').replace(/[^A-Za-z0-9_-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 64);
  }

  function validateAvatarId() {
    const id = el.avatarId.value.trim();
    const ok = CONFIG.avatarIdPattern.test(id);
    el.avatarId.setAttribute('aria-invalid', String(!ok && id !== ''));
    return ok;
  }

  function finishUpload(u) {
    u.done = true;
    clearTimeout(u.timer);
    if (upload === u) setUploadBusy(false);
    el.avatarCancel.disabled = true;
  }

  function failUpload(u, message) {
    finishUpload(u);
    showJob('error', message, 0);
    log(`Avatar upload: ${message}`, 'error');
  }

  async function submitAvatar() {
    if (upload && !upload.done) return;
    const file = el.avatarFile.files && el.avatarFile.files[0];
    const id = el.avatarId.value.trim();
    const name = el.avatarName.value.trim();
    const token = adminToken();
    const problem = !file ? 'Choose an image or video file.'
      : !CONFIG.avatarIdPattern.test(id) ? 'The id must be 1–64 letters, digits, - or _.'
        : !token ? 'Enter the admin token.'
          // The server refuses bigger bodies before reading them (the browser would only see
          // the connection reset), so say it here.
          : dh.maxUploadMb && file.size > dh.maxUploadMb * 1048576
            ? `The file is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${dh.maxUploadMb} MB.`
            : null;
    if (problem) {
      upload = null;
      validateAvatarId();
      showJob('error', problem, 0);
      (!file || problem.startsWith('The file') ? el.avatarFile
        : !CONFIG.avatarIdPattern.test(id) ? el.avatarId : el.adminToken).focus();
      return;
    }
    const u = { xhr: null, jobId: null, statusUrl: null, token, avatarId: id, timer: null, cancelled: false, done: false };
    upload = u;
    dh.avatarJob = { job_id: null, avatar_id: id, state: 'uploading', stage: 'uploading', percent: 0, error: null };
    setUploadBusy(true);
    showJob('uploading', `Uploading ${file.name}…`, 0);
    el.avatarCancel.disabled = false;
    log(`Uploading avatar ${id} (${file.name}, ${(file.size / 1048576).toFixed(1)} MB)`);

    const form = new FormData();
    form.append('file', file, file.name);
    form.append('id', id);
    form.append('name', name || id);

    let created;
    try {
      created = await new Promise((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        u.xhr = xhr;
        xhr.open('POST', '/api/avatars');
        xhr.setRequestHeader('Authorization', `Bearer ${token}`);
        xhr.setRequestHeader('Accept', 'application/json');
        xhr.upload.addEventListener('progress', (e) => {
          if (!e.lengthComputable || upload !== u) return;
          const pct = Math.round((e.loaded / e.total) * 100);
          showJob('uploading', `Uploading ${file.name}… ${pct}%`, pct);
        });
        xhr.addEventListener('load', () => {
          if (xhr.status >= 200 && xhr.status < 300) {
            try { resolve(JSON.parse(xhr.responseText)); } catch { reject(new Error('Malformed upload response')); }
          } else {
            reject(errorFrom(xhr.status, xhr.statusText, xhr.responseText));
          }
        });
        xhr.addEventListener('error', () => reject(new ApiError('Cannot reach the server', 0)));
        xhr.addEventListener('abort', () => reject(Object.assign(new Error('Upload cancelled'), { name: 'AbortError' })));
        xhr.send(form);
      });
    } catch (err) {
      if (upload !== u) return;
      if (err && err.name === 'AbortError') {
        finishUpload(u);
        showJob('cancelled', 'Upload cancelled.', 0);
        log('Avatar upload cancelled');
        return;
      }
      failUpload(u, err.message);
      return;
    } finally {
      u.xhr = null;
    }
    if (upload !== u) return;
    if (!created || !created.job_id) { failUpload(u, 'Malformed upload response (no job_id)'); return; }
    u.jobId = created.job_id;
    u.avatarId = created.avatar_id || id;
    u.statusUrl = created.status_url || `/api/avatars/jobs/${encodeURIComponent(created.job_id)}`;
    dh.avatarJob = { job_id: u.jobId, avatar_id: u.avatarId, state: 'queued', stage: null, percent: 0, error: null };
    log(`Avatar ${u.avatarId}: job ${u.jobId} queued`);
    showJob('queued', u.cancelled ? 'Cancelling…' : 'Queued…', 0);
    if (u.cancelled) cancelJob(u);
    pollJob(u, 0);
  }

  function jobText(job) {
    const pct = Number.isFinite(job.percent) ? Math.round(job.percent) : null;
    switch (job.state) {
      case 'queued': return 'Queued…';
      case 'running': return `${job.stage ? job.stage.charAt(0).toUpperCase() + job.stage.slice(1) : 'Working'}…${pct != null ? ` ${pct}%` : ''}`;
      case 'done': return `Done: avatar ${job.avatar_id || ''} is ready.`;
      case 'failed': return `Failed: ${job.error || 'unknown error'}`;
      case 'cancelled': return 'Cancelled.';
      default: return `${job.state || 'unknown'}${pct != null ? ` ${pct}%` : ''}`;
    }
  }

  async function pollJob(u, failures) {
    if (upload !== u || u.done) return;
    let job;
    try {
      const resp = await fetch(u.statusUrl, {
        headers: { Authorization: `Bearer ${u.token}`, Accept: 'application/json' },
        cache: 'no-store',
      });
      if (!resp.ok) throw await responseError(resp);
      job = await resp.json();
    } catch (err) {
      if (upload !== u || u.done) return;
      // A blip is retried; a missing job or a refused token is final.
      const final = err instanceof ApiError && [401, 403, 404, 410].includes(err.status);
      if (final || failures >= 10) { failUpload(u, `Lost track of the job: ${err.message}`); return; }
      u.timer = setTimeout(() => pollJob(u, failures + 1), CONFIG.avatarJobPollMs * 2);
      return;
    }
    if (upload !== u || u.done || !job) return;
    dh.avatarJob = { ...job, job_id: job.id || u.jobId, avatar_id: job.avatar_id || u.avatarId };
    const state = job.state || 'running';
    const pct = state === 'done' ? 100 : (Number.isFinite(job.percent) ? job.percent : (state === 'queued' ? 0 : null));
    if (!TERMINAL.includes(state)) {
      showJob(state, u.cancelled ? 'Cancelling…' : jobText(dh.avatarJob), pct);
      el.avatarCancel.disabled = u.cancelled;
      u.timer = setTimeout(() => pollJob(u, 0), CONFIG.avatarJobPollMs);
      return;
    }
    finishUpload(u);
    showJob(state, jobText(dh.avatarJob), state === 'cancelled' ? (pct || 0) : pct);
    if (state === 'done') {
      log(`Avatar ${u.avatarId} ready`, 'event');
      thumbVersion.set(u.avatarId, Date.now());
      el.avatarForm.reset();
      el.adminToken.value = u.token;  // reset() clears it; keep it for this tab
      el.avatarId.removeAttribute('aria-invalid');
      await loadAvatars(u.avatarId);
      if (session === null && el.avatarSelect.value === u.avatarId) updateAvatarPreview();
    } else if (state === 'failed') {
      log(`Avatar ${u.avatarId} failed: ${job.error || 'unknown error'}`, 'error');
    } else {
      log(`Avatar ${u.avatarId} job cancelled`);
    }
  }

  async function cancelJob(u = upload) {
    if (!u || u.done) return;
    u.cancelled = true;
    el.avatarCancel.disabled = true;
    if (u.xhr) { u.xhr.abort(); return; }   // still uploading: just stop sending
    if (!u.jobId) return;                   // the job id is not known yet; cancelled once it is
    el.avatarProgressText.textContent = 'Cancelling…';
    try {
      const resp = await fetch(`/api/avatars/jobs/${encodeURIComponent(u.jobId)}`, {
        method: 'DELETE',
        headers: { Authorization: `Bearer ${u.token}`, Accept: 'application/json' },
        cache: 'no-store',
      });
      // 409 and the like: the job already finished; the next poll shows how.
      if (!resp.ok && resp.status !== 404 && resp.status !== 409) throw await responseError(resp);
      log(`Cancel sent for job ${u.jobId}`, 'out');
    } catch (err) {
      log(`Cancel failed: ${err.message}`, 'error');
      if (upload === u && !u.done) {
        u.cancelled = false;
        el.avatarCancel.disabled = false;
      }
    }
  }

  async function loadCharacters() {
    try {
      const data = await api('/api/characters');
      const chars = (data && Array.isArray(data.characters)) ? data.characters.filter((c) => c && c.id) : [];
      dh.characters = chars;
      el.characterSelect.replaceChildren();
      for (const c of chars) el.characterSelect.append(new Option(c.name || c.id, c.id));
      el.characterField.hidden = chars.length === 0;
    } catch (err) {
      el.characterField.hidden = true;
      log(`Could not load characters: ${err.message}`, 'error');
    }
  }

  /** GET /api/voices into #voice-select; each option names its backend (edge, piper, ...). */
  async function loadVoices() {
    try {
      const data = await api('/api/voices');
      const voices = (data && Array.isArray(data.voices)) ? data.voices.filter((v) => v && v.id) : [];
      dh.voices = voices;
      el.voiceSelect.replaceChildren(new Option("The character's own", ''));
      for (const v of voices) {
        const tags = [v.backend, v.language, v.default ? 'default' : '', v.fallback ? 'fallback' : ''].filter(Boolean);
        el.voiceSelect.append(new Option(`${v.id} (${tags.join(', ')})`, v.id));
      }
      el.voiceField.hidden = voices.length === 0;
      showVoiceMeta();
    } catch (err) {
      el.voiceField.hidden = true;
      log(`Could not load voices: ${err.message}`, 'error');
    }
  }

  function showVoiceMeta() {
    const v = (dh.voices || []).find((x) => x.id === el.voiceSelect.value);
    el.voiceMeta.textContent = v ? `Backend: ${v.backend}` : '';
  }

  /** PATCH the session's voice (at once while talking; right after creation otherwise). */
  async function applyVoice(sess) {
    const voice = el.voiceSelect.value;
    if (!sess || !sess.id || !voice) return;
    try {
      const changed = await api(sessionPath(sess, ''), { method: 'PATCH', auth: true, body: { voice } });
      log(`Voice: ${changed.voice}`, 'event');
    } catch (err) {
      log(`Could not switch the voice: ${err.message}`, 'error');
    }
  }

  async function checkHealth() {
    try {
      const data = await api('/api/health');
      const ok = data && data.status === 'ok';
      el.serverStatus.textContent = ok ? 'server: ok' : `server: ${data && data.status ? data.status : 'unknown'}`;
      el.serverStatus.dataset.ok = ok ? 'true' : 'false';
    } catch (err) {
      el.serverStatus.textContent = 'server: unreachable';
      el.serverStatus.dataset.ok = 'false';
      log(`Health check failed: ${err.message}`, 'error');
    }
  }

  // ---------------------------------------------------------------------------
  // WebRTC
  // ---------------------------------------------------------------------------
  function normalizeIceServers(list) {
    if (!Array.isArray(list)) return [];
    return list
      .filter((s) => s && s.urls && (typeof s.urls === 'string' || (Array.isArray(s.urls) && s.urls.length)))
      .map((s) => {
        const out = { urls: s.urls };
        if (s.username != null) out.username = s.username;
        if (s.credential != null) out.credential = s.credential;
        return out;
      });
  }

  // ---------------------------------------------------------------------------
  // Microphone: capture, level meter, mute, mode, push-to-talk
  // ---------------------------------------------------------------------------
  function micErrorMessage(err) {
    const name = err && err.name;
    if (name === 'NotAllowedError' || name === 'SecurityError') return 'microphone permission denied';
    if (name === 'NotFoundError' || name === 'OverconstrainedError') return 'no microphone found';
    if (name === 'NotReadableError' || name === 'AbortError') return 'the microphone is in use or failed to start';
    return `microphone unavailable (${err && err.message ? err.message : err})`;
  }

  /**
   * The microphone stream, or null (with the reason in dh.micError) when it is turned off,
   * unsupported or refused: the session then receives only and the user types.
   * Called from the Start click handler so the permission prompt follows the click.
   */
  async function getLocalAudio() {
    dh.micError = null;
    if (!CONFIG.sendMicrophone) {
      dh.micError = 'microphone turned off (?mic=0)';
      return null;
    }
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      dh.micError = window.isSecureContext
        ? 'this browser cannot capture the microphone'
        : 'the microphone needs HTTPS (or localhost)';
      return null;
    }
    setMicStatus('Asking for the microphone…');
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: CONFIG.micConstraints, video: false });
      if (!stream.getAudioTracks().length) throw new DOMException('no audio track', 'NotFoundError');
      return stream;
    } catch (err) {
      dh.micError = micErrorMessage(err);
      return null;
    }
  }

  function setMicStatus(text, kind = '') {
    el.micStatus.textContent = text;
    el.micStatus.dataset.kind = kind;
  }

  function describeMic() {
    if (!session) {
      if (dh.micError) setMicStatus(`Microphone off: ${dh.micError}.`, 'warn');
      else setMicStatus('The microphone is used when you press Start.');
      return;
    }
    if (!dh.micEnabled) {
      if (dh.micError) setMicStatus(`Microphone off: ${dh.micError}. Type to talk.`, 'warn');
      return;
    }
    const track = session.micTrack;
    const name = track && track.label ? track.label : 'microphone';
    if (dh.micMuted) setMicStatus(`Muted: ${name}. The avatar hears nothing.`, 'warn');
    else if (dh.micMode === 'push_to_talk') setMicStatus(`Push to talk: hold the button or the Space bar while you speak (${name}).`);
    else setMicStatus(`Hands-free: just speak; pause to let the avatar answer (${name}).`);
  }

  function renderMicControls() {
    el.voiceCard.dataset.mic = dh.micEnabled ? (dh.micMuted ? 'muted' : 'on') : 'off';
    el.voiceCard.dataset.mode = dh.micMode;
    if (el.micMode.value !== dh.micMode) el.micMode.value = dh.micMode;
    el.micMute.setAttribute('aria-pressed', String(dh.micMuted));
    el.micMuteLabel.textContent = dh.micMuted ? 'Unmute' : 'Mute';
    el.ptt.hidden = dh.micMode !== 'push_to_talk';
    el.ptt.setAttribute('aria-pressed', String(dh.pttDown));
    el.ptt.classList.toggle('held', dh.pttDown);
    el.pttLabel.textContent = dh.pttDown ? 'Listening… release to send' : 'Hold to talk';
    describeMic();
  }

  // Level meter: an AnalyserNode on the local track, drawn every animation frame.
  const meter = { ctx: null, source: null, analyser: null, buf: null, raf: 0, peak: 0, peakAt: 0 };

  /** Create/resume the AudioContext inside the click handler (autoplay policy). */
  function primeAudioContext() {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return;
    try {
      if (!meter.ctx) meter.ctx = new Ctx();
      if (meter.ctx.state === 'suspended') meter.ctx.resume().catch(() => {});
    } catch (err) {
      log(`Mic meter unavailable: ${err.message}`, 'debug');
    }
  }

  function startMeter(stream) {
    stopMeter();
    if (!meter.ctx || !stream) return;
    try {
      meter.source = meter.ctx.createMediaStreamSource(stream);
      meter.analyser = meter.ctx.createAnalyser();
      meter.analyser.fftSize = 1024;
      meter.analyser.smoothingTimeConstant = 0;
      meter.buf = new Float32Array(meter.analyser.fftSize);
      meter.source.connect(meter.analyser);  // not to the destination: no local echo
      if (meter.ctx.state === 'suspended') meter.ctx.resume().catch(() => {});
    } catch (err) {
      log(`Mic meter unavailable: ${err.message}`, 'debug');
      stopMeter();
      return;
    }
    let shown = 0;
    const draw = () => {
      meter.raf = requestAnimationFrame(draw);
      if (!meter.analyser) return;
      meter.analyser.getFloatTimeDomainData(meter.buf);
      let sum = 0;
      for (let i = 0; i < meter.buf.length; i += 1) sum += meter.buf[i] * meter.buf[i];
      const rms = Math.sqrt(sum / meter.buf.length);
      const db = rms > 0 ? 20 * Math.log10(rms) : -Infinity;
      const level = Math.max(0, Math.min(1, (db - CONFIG.meterFloorDb) / (CONFIG.meterCeilDb - CONFIG.meterFloorDb)));
      // Fast attack, slower release, so speech reads as a steady bar.
      shown = level > shown ? level : shown * 0.9 + level * 0.1;
      const now = performance.now();
      if (shown >= meter.peak || now - meter.peakAt > 1200) { meter.peak = shown; meter.peakAt = now; }
      setMeter(shown, meter.peak);
    };
    meter.raf = requestAnimationFrame(draw);
  }

  function setMeter(level, peak = 0) {
    dh.micLevel = Math.round(level * 1000) / 1000;
    el.micLevelFill.style.transform = `scaleX(${level})`;
    el.micLevelPeak.style.left = `${Math.round(peak * 1000) / 10}%`;
    el.micLevelPeak.hidden = peak <= 0.01;
    el.micLevel.setAttribute('aria-valuenow', String(Math.round(level * 100)));
    el.micLevel.dataset.hot = level > 0.35 ? 'true' : 'false';
  }

  function stopMeter() {
    cancelAnimationFrame(meter.raf);
    meter.raf = 0;
    if (meter.source) { try { meter.source.disconnect(); } catch { /* ignore */ } }
    meter.source = null;
    meter.analyser = null;
    meter.peak = 0;
    setMeter(0, 0);
  }

  /** Client -> server control message on the events channel; false when it is not open. */
  function sendControl(sess, message) {
    if (!sess || !sess.dc || sess.dc.readyState !== 'open') return false;
    try {
      sess.dc.send(JSON.stringify(message));
      return true;
    } catch (err) {
      log(`Could not send ${message.type}: ${err.message}`, 'warn');
      return false;
    }
  }

  function setMicMode(mode, { user = false } = {}) {
    if (!CONFIG.micModes.includes(mode)) return;
    // Leaving push-to-talk while the button is held cancels that utterance: the server drops
    // held audio on a mode change, so no "ptt up" (which would send it) goes out.
    if (mode !== 'push_to_talk') dh.pttDown = false;
    dh.micMode = mode;
    if (user) {
      try { localStorage.setItem('dh.micMode', mode); } catch { /* ignore */ }
      if (session && dh.micEnabled && sendControl(session, { type: 'mic_mode', mode })) {
        log(`Mic mode → ${mode.replace(/_/g, ' ')}`, 'out');
      }
    }
    updateControls();
  }

  function setMicMuted(muted) {
    const sess = session;
    if (!sess || !sess.micTrack) return;
    if (muted) pttRelease();
    dh.micMuted = muted;
    sess.micTrack.enabled = !muted;  // a disabled track sends silence: the VAD hears nothing
    log(muted ? 'Microphone muted' : 'Microphone unmuted', 'out');
    updateControls();
  }

  function pttPress() {
    const sess = session;
    if (dh.pttDown || !sess || dh.micMode !== 'push_to_talk' || el.ptt.disabled) return;
    dh.pttDown = true;
    sendControl(sess, { type: 'ptt', down: true });
    renderMicControls();
  }

  function pttRelease() {
    if (!dh.pttDown) return;
    dh.pttDown = false;
    if (session) sendControl(session, { type: 'ptt', down: false });
    renderMicControls();
  }

  function addVideoTransceiver(pc) {
    const tr = pc.addTransceiver('video', { direction: 'recvonly' });
    // Prefer VP8 (cheapest for the server to encode); keep the rest as fallbacks.
    try {
      if (tr.setCodecPreferences && window.RTCRtpReceiver && RTCRtpReceiver.getCapabilities) {
        const caps = RTCRtpReceiver.getCapabilities('video');
        if (caps && caps.codecs) {
          const rank = (c) => {
            const i = CONFIG.preferredVideoCodecs.indexOf(c.mimeType);
            return i === -1 ? CONFIG.preferredVideoCodecs.length : i;
          };
          const codecs = caps.codecs.map((c, i) => [c, i]).sort((a, b) => rank(a[0]) - rank(b[0]) || a[1] - b[1]).map((x) => x[0]);
          tr.setCodecPreferences(codecs);
        }
      }
    } catch (err) {
      log(`Codec preference not applied: ${err.message}`, 'debug');
    }
    return tr;
  }

  /** Audio: receive only, or send+receive when a microphone stream is given. */
  function addAudioTransceiver(pc, micStream) {
    const micTrack = micStream ? micStream.getAudioTracks()[0] : null;
    if (micTrack) {
      return pc.addTransceiver(micTrack, { direction: 'sendrecv', streams: [micStream] });
    }
    return pc.addTransceiver('audio', { direction: 'recvonly' });
  }

  function waitForIceGathering(pc, timeoutMs) {
    if (pc.iceGatheringState === 'complete') return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (complete) => {
        clearTimeout(timer);
        pc.removeEventListener('icegatheringstatechange', onChange);
        resolve(complete);
      };
      const onChange = () => { if (pc.iceGatheringState === 'complete') done(true); };
      const timer = setTimeout(() => done(false), timeoutMs);
      pc.addEventListener('icegatheringstatechange', onChange);
    });
  }

  function createPeerConnection(sess, iceServers) {
    const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle' });
    sess.pc = pc;
    dh.pc = pc;

    addVideoTransceiver(pc);
    addAudioTransceiver(pc, sess.micStream);

    // The data channel must exist before the offer so it is negotiated in it.
    const dc = pc.createDataChannel('events', { ordered: true });
    sess.dc = dc;
    dc.onopen = () => {
      if (sess !== session) return;
      dh.channelOpen = true;
      log('Events channel open');
      // Tell the server how this user talks (it defaults to hands-free).
      if (dh.micEnabled) sendControl(sess, { type: 'mic_mode', mode: dh.micMode });
      sess.lastPong = performance.now();
      sess.pingTimer = setInterval(() => {
        if (sess !== session) return;
        if (performance.now() - sess.lastPong > CONFIG.channelLostMs) {
          reconnect(sess, 'Connection lost (the server stopped answering)');
          return;
        }
        sendControl(sess, { type: 'ping' });
      }, CONFIG.channelPingMs);
    };
    dc.onclose = () => {
      if (sess !== session) return;
      dh.channelOpen = false;
      log('Events channel closed');
    };
    dc.onmessage = (e) => onChannelMessage(sess, e.data);

    pc.ontrack = (e) => {
      if (sess !== session) return;
      sess.remoteStream.addTrack(e.track);
      log(`Receiving ${e.track.kind}`);
      e.track.addEventListener('ended', () => log(`Remote ${e.track.kind} track ended`));
      if (el.video.srcObject !== sess.remoteStream) el.video.srcObject = sess.remoteStream;
      playVideo();
    };

    pc.onconnectionstatechange = () => onPcStateChange(sess);
    pc.oniceconnectionstatechange = () => {
      if (sess !== session) return;
      // Fallback for browsers without RTCPeerConnection.connectionState.
      if (pc.connectionState === undefined) onPcStateChange(sess);
    };
    return pc;
  }

  function pcState(pc) {
    if (pc.connectionState !== undefined) return pc.connectionState;
    const ice = pc.iceConnectionState;
    if (ice === 'completed') return 'connected';
    if (ice === 'checking') return 'connecting';
    return ice;
  }

  function onPcStateChange(sess) {
    if (sess !== session) return;
    const state = pcState(sess.pc);
    log(`Peer connection: ${state}`, state === 'failed' ? 'error' : 'info');
    clearTimeout(sess.disconnectTimer);
    sess.disconnectTimer = null;
    if (state === 'connected') {
      clearTimeout(sess.connectTimer);
      sess.connectTimer = null;
      if (sess.reconnectNotice) {
        sess.reconnectNotice = false;
        hideNotice();
      }
      if (dh.state !== CONN.CONNECTED) {
        setConnState(CONN.CONNECTED);
        if (!sess.keepNotice) hideNotice();
        startStats(sess);
      }
    } else if (state === 'failed') {
      fail('Connection failed (media could not reach the server; check ICE/TURN settings)');
    } else if (state === 'disconnected') {
      sess.disconnectTimer = setTimeout(() => {
        if (sess === session && pcState(sess.pc) !== 'connected') reconnect(sess, 'Connection lost');
      }, CONFIG.disconnectGraceMs);
    } else if (state === 'closed' && dh.state === CONN.CONNECTED) {
      fail('Connection closed');
    }
  }

  function playVideo() {
    const v = el.video;
    if (!v.srcObject) return;
    const p = v.play();
    if (!p || !p.catch) return;
    p.then(() => { el.unmute.hidden = true; }).catch((err) => {
      if (!v.srcObject) return;
      if (err && err.name === 'NotAllowedError') {
        // Autoplay with sound blocked: show the picture muted and offer a button for sound.
        if (!v.muted) {
          v.muted = true;
          el.unmute.hidden = false;
          log('Autoplay with sound blocked; click "Enable sound"', 'warn');
          v.play().catch(() => {});
        }
      } else if (err && err.name !== 'AbortError') {
        log(`Video playback: ${err.message}`, 'warn');
      }
    });
  }

  // ---------------------------------------------------------------------------
  // Stats (delivered fps / resolution), exposed as dh.stats
  // ---------------------------------------------------------------------------
  function startStats(sess) {
    stopStats(sess);
    let prev = null;
    sess.statsTimer = setInterval(async () => {
      if (sess !== session || !sess.pc) return;
      try {
        const report = await sess.pc.getStats();
        let video = null;
        let audio = null;
        let pair = null;
        report.forEach((s) => {
          if (s.type === 'inbound-rtp' && (s.kind || s.mediaType) === 'video') video = s;
          else if (s.type === 'inbound-rtp' && (s.kind || s.mediaType) === 'audio') audio = s;
          else if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
        });
        if (!video) return;
        let fps = video.framesPerSecond;
        if (fps == null && prev && video.framesDecoded != null) {
          const dt = (video.timestamp - prev.timestamp) / 1000;
          if (dt > 0) fps = (video.framesDecoded - prev.framesDecoded) / dt;
        }
        prev = video;
        const stats = {
          fps: fps != null ? Math.round(fps * 10) / 10 : null,
          width: video.frameWidth || el.video.videoWidth || null,
          height: video.frameHeight || el.video.videoHeight || null,
          framesDecoded: video.framesDecoded != null ? video.framesDecoded : null,
          framesDropped: video.framesDropped != null ? video.framesDropped : null,
          packetsLost: (video.packetsLost || 0) + (audio && audio.packetsLost ? audio.packetsLost : 0),
          jitterMs: audio && audio.jitter != null ? Math.round(audio.jitter * 1000) : null,
          rttMs: pair && pair.currentRoundTripTime != null ? Math.round(pair.currentRoundTripTime * 1000) : null,
        };
        dh.stats = stats;
        const parts = [];
        if (stats.width && stats.height) parts.push(`${stats.width}×${stats.height}`);
        if (stats.fps != null) parts.push(`${Math.round(stats.fps)} fps`);
        if (stats.rttMs != null) parts.push(`rtt ${stats.rttMs} ms`);
        el.stats.textContent = parts.join(' · ');
        el.stats.hidden = parts.length === 0;
      } catch { /* pc closed meanwhile */ }
    }, CONFIG.statsIntervalMs);
  }
  function stopStats(sess) {
    if (sess && sess.statsTimer) clearInterval(sess.statsTimer);
    if (sess) sess.statsTimer = null;
  }

  // ---------------------------------------------------------------------------
  // Transcript (the chat view): user lines and assistant lines, keyed by turn id
  // ---------------------------------------------------------------------------
  function assistantName() {
    if (!el.characterField.hidden && el.characterSelect.selectedIndex >= 0) {
      const opt = el.characterSelect.options[el.characterSelect.selectedIndex];
      if (opt && opt.textContent) return opt.textContent;
    }
    const a = selectedAvatar();
    return (a && (a.name || a.id)) || 'Assistant';
  }

  /** Append a line; returns {li, text} where `text` is the element holding the words. */
  function addLine(role, text, { turn = null, note = '' } = {}) {
    const box = el.transcript;
    const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 60;
    const li = document.createElement('li');
    li.className = `msg ${role}`;
    if (turn != null) li.dataset.turn = String(turn);
    const who = document.createElement('span');
    who.className = 'msg-who';
    who.textContent = role === 'user' ? 'You' : assistantName();
    if (note) {
      const n = document.createElement('span');
      n.className = 'msg-note';
      n.textContent = note;
      who.append(' ', n);
    }
    const body = document.createElement('span');
    body.className = 'msg-text';
    body.textContent = text;
    li.append(who, body);
    box.append(li);
    while (box.childElementCount > CONFIG.maxLogEntries) box.firstElementChild.remove();
    if (nearBottom) box.scrollTop = box.scrollHeight;
    return { li, text: body };
  }

  function findLine(role, turn) {
    if (turn == null) return null;
    const key = String(turn);
    for (const li of el.transcript.children) {
      if (li.dataset.turn === key && li.classList.contains(role)) return li;
    }
    return null;
  }

  function scrollTranscript() {
    const box = el.transcript;
    if (box.scrollHeight - box.scrollTop - box.clientHeight < 120) box.scrollTop = box.scrollHeight;
  }

  function markInterrupted(turn) {
    const li = findLine('assistant', turn);
    if (li) { li.classList.add('interrupted'); li.classList.remove('live'); }
    if (turn != null && String(turn) === (session && session.textTurn)) {
      el.assistantText.classList.add('interrupted');
    }
  }

  // ---------------------------------------------------------------------------
  // Events from the server
  // ---------------------------------------------------------------------------
  const LATENCY_LABELS = {
    speech_end: 'speech end',
    asr_done: 'asr',
    llm_first_token: 'llm',
    tts_first_audio: 'tts',
    first_frame_sent: 'first frame',
    end_confirmed: 'vad end',
  };

  function formatLatency(marks) {
    if (!marks || typeof marks !== 'object') return '';
    const entries = Object.entries(marks).filter(([, v]) => typeof v === 'number' && Number.isFinite(v));
    if (!entries.length) return '';
    // Marks are times in ms; show each relative to the turn's start mark.
    const startKey = ['request', 'say_received', 'speech_end'].find((k) => typeof marks[k] === 'number');
    const base = startKey ? marks[startKey] : Math.min(...entries.map(([, v]) => v));
    return entries
      .filter(([k]) => k !== startKey)
      .sort((a, b) => a[1] - b[1])
      .map(([k, v]) => `${LATENCY_LABELS[k] || k.replace(/_/g, ' ')} ${Math.round(v - base)} ms`)
      .join(' · ');
  }

  function onChannelMessage(sess, raw) {
    if (sess !== session) return;
    let ev;
    try {
      ev = JSON.parse(typeof raw === 'string' ? raw : new TextDecoder().decode(raw));
    } catch {
      log(`Unparseable event: ${String(raw).slice(0, 200)}`, 'warn');
      return;
    }
    if (!ev || typeof ev !== 'object') {
      log(`Event: ${JSON.stringify(ev)}`, 'event');
      return;
    }
    if (ev.type === 'pong') {  // the data channel's liveness answer, not an event
      sess.lastPong = performance.now();
      return;
    }
    dh.events.push(ev);
    handleEvent(sess, ev);
  }

  function handleEvent(sess, ev) {
    const turn = ev.turn_id != null ? String(ev.turn_id) : null;
    switch (ev.type) {
      case 'state': {
        const state = String(ev.state || 'unknown');
        if (turn !== null && state === 'thinking') sess.activeTurn = turn;
        setAvatarState(state);
        log(`State: ${state}${turn ? ` (${turn})` : ''}`, 'event');
        const line = findLine('assistant', turn);
        if (line) line.classList.toggle('live', state === 'speaking' || state === 'thinking');
        if (state === 'speaking' && sess.pendingSay) {
          log(`Client: Send → speaking in ${Math.round(performance.now() - sess.pendingSay)} ms`, 'debug');
          sess.pendingSay = null;
        }
        break;
      }
      case 'ready':
        dh.ready = true;
        sess.reconnects = 0;  // the server answers on this connection: a later loss may try again
        log(ev.resumed ? 'Session resumed on the server (the conversation goes on)' : 'Avatar media started', 'event');
        break;
      case 'mic_mode': {
        const mode = String(ev.mode || '');
        if (CONFIG.micModes.includes(mode) && mode !== dh.micMode) setMicMode(mode);
        // A mode change drops a half-heard utterance: do not stay "listening".
        if (dh.avatarState === 'listening') setAvatarState('idle');
        log(`Mic mode: ${mode.replace(/_/g, ' ')}`, 'event');
        break;
      }
      case 'user_transcript': {
        const text = typeof ev.text === 'string' ? ev.text.trim() : '';
        let li = findLine('user', turn);
        if (!li) li = addLine('user', '', { turn, note: '(spoken)' }).li;
        li.querySelector('.msg-text').textContent = text || 'Nothing recognised';
        li.classList.toggle('empty', !text);
        scrollTranscript();
        log(`Heard: ${text || '(nothing recognised)'}`, 'event');
        break;
      }
      case 'assistant_text': {
        const text = typeof ev.text === 'string' ? ev.text : '';
        if (turn !== null && turn === sess.textTurn && sess.assistantText) {
          if (ev.delta === true) {
            sess.assistantText += text;               // token/chunk deltas: appended raw
          } else if (text.startsWith(sess.assistantText)) {
            sess.assistantText = text;                // cumulative text
          } else {
            sess.assistantText = `${sess.assistantText} ${text}`.replace(/\s+/g, ' '); // next sentence
          }
        } else {
          sess.assistantText = text;
          sess.textTurn = turn;
        }
        dh.lastTurnId = turn;
        setAssistantText(sess.assistantText.trim(), { empty: false });
        let li = findLine('assistant', turn);
        if (!li) {
          li = addLine('assistant', '', { turn }).li;
          li.classList.add('live');
          if (ev.delta !== true) li.classList.add('verbatim');
        }
        li.querySelector('.msg-text').textContent = sess.assistantText.trim();
        scrollTranscript();
        if (ev.delta !== true) log(`Assistant: ${text}`, 'event');
        else if (!sess.loggedDelta || sess.loggedDelta !== turn) {
          sess.loggedDelta = turn;
          log(`Assistant answering (${turn})…`, 'event');
        }
        break;
      }
      case 'turn_end': {
        const interrupted = !!ev.interrupted;
        if (turn !== null && turn === sess.activeTurn) sess.activeTurn = null;
        const li = findLine('assistant', turn);
        if (li) li.classList.remove('live');
        if (interrupted) {
          markInterrupted(turn);
          sess.lastInterrupted = turn;
        } else if (li && turn === sess.textTurn) {
          log(`Assistant: ${sess.assistantText.trim()}`, 'event');
        }
        log(`Turn ${turn || ''} ended${interrupted ? ' (interrupted)' : ''}`, 'event');
        break;
      }
      case 'barge_in': {
        // The user started talking over the avatar: the current reply stops.
        const target = sess.activeTurn || sess.lastInterrupted || sess.textTurn;
        if (target) markInterrupted(target);
        log('Barge-in: you interrupted the avatar', 'event');
        break;
      }
      case 'utterance_truncated': {
        const message = ev.message || `You spoke for more than ${ev.max_s || '?'} s; answering what was heard so far`;
        showNotice(String(message), 'warn');
        log(`Utterance truncated: ${message}`, 'warn');
        break;
      }
      case 'session_expiring': {
        const message = ev.message || 'This session ends soon.';
        showNotice(`${message} (${ev.seconds_left ?? '?'} s left)`, 'warn');
        log(`Session expiring in ${ev.seconds_left ?? '?'} s`, 'warn');
        break;
      }
      case 'session': {
        log(`Session: avatar ${ev.avatar}, voice ${ev.voice}`, 'event');
        break;
      }
      case 'error': {
        const message = ev.message || ev.detail || 'Unknown server error';
        const stage = ev.stage ? String(ev.stage) : '';
        const text = String(message);
        showNotice(text.charAt(0).toUpperCase() + text.slice(1), 'error');
        log(`Server error${stage ? ` (${stage})` : ''}: ${message}`, 'error');
        break;
      }
      case 'latency': {
        const line = formatLatency(ev.marks);
        dh.lastLatency = { turn_id: ev.turn_id, marks: ev.marks, text: line };
        el.latency.textContent = line;
        log(`Latency${turn ? ` ${turn}` : ''}: ${line || JSON.stringify(ev.marks)}`, 'event');
        break;
      }
      default:
        log(`Event: ${JSON.stringify(ev)}`, 'event');
    }
  }

  // ---------------------------------------------------------------------------
  // Session lifecycle
  // ---------------------------------------------------------------------------
  function sessionPath(sess, suffix = '') {
    return `/api/sessions/${encodeURIComponent(sess.id)}${suffix}`;
  }

  async function start() {
    if (session) return;
    hideNotice();
    const gen = ++generation;
    const sess = {
      gen,
      id: null,
      token: null,
      pc: null,
      dc: null,
      micStream: null,
      micTrack: null,
      remoteStream: new MediaStream(),
      abort: new AbortController(),
      connectTimer: null,
      disconnectTimer: null,
      statsTimer: null,
      assistantText: '',
      textTurn: null,
      activeTurn: null,       // the turn between its "thinking" state and its turn_end
      lastInterrupted: null,
      loggedDelta: null,
      pendingSay: null,
      keepNotice: false,      // a microphone notice stays up when the media connects
      iceServers: [],
      reconnects: 0,          // tries since the server last said ready
      reconnecting: false,
      reconnectNotice: false, // the "reconnecting" notice is up
    };
    session = sess;
    dh.events.length = 0;   // same array object, emptied per session
    dh.ready = false;
    dh.channelOpen = false;
    dh.stats = null;
    dh.lastLatency = null;
    dh.lastTurnId = null;
    el.latency.textContent = '';
    el.stats.hidden = true;
    el.transcript.replaceChildren();   // a new session is a new conversation
    setAssistantText('Nothing said yet.', { empty: true });
    dh.micEnabled = false;
    dh.micMuted = false;
    dh.pttDown = false;
    setConnState(CONN.CONNECTING);
    if (CONFIG.sendMicrophone) primeAudioContext();  // inside the click: allowed to start

    // Attach the (still empty) stream and call play() inside the click handler so the
    // browser counts playback as user-initiated; tracks are added to it as they arrive.
    el.video.muted = false;
    el.video.srcObject = sess.remoteStream;
    el.video.play().catch(() => { /* retried once tracks arrive */ });

    try {
      sess.micStream = await getLocalAudio();
      if (sess !== session) {
        if (sess.micStream) sess.micStream.getTracks().forEach((t) => t.stop());
        return;
      }
      if (sess.micStream) {
        sess.micTrack = sess.micStream.getAudioTracks()[0];
        dh.micEnabled = true;
        dh.micError = null;
        startMeter(sess.micStream);
        sess.micTrack.addEventListener('ended', () => {
          if (sess !== session) return;
          dh.micEnabled = false;
          dh.micError = 'the microphone stopped (unplugged or revoked)';
          stopMeter();
          showNotice('The microphone stopped; you can still type.', 'warn');
          log('Microphone track ended', 'warn');
          updateControls();
        });
        log(`Microphone on: ${sess.micTrack.label || 'default device'} (${dh.micMode.replace(/_/g, ' ')})`);
      } else {
        sess.keepNotice = CONFIG.sendMicrophone;
        if (CONFIG.sendMicrophone) {
          showNotice(`Microphone off: ${dh.micError}. The avatar can't hear you; type your messages instead.`, 'warn');
        }
        log(`No microphone: ${dh.micError}; receiving only`, 'warn');
      }
      updateControls();

      const body = {};
      if (el.avatarSelect.value) body.avatar = el.avatarSelect.value;
      if (!el.characterField.hidden && el.characterSelect.value) body.character = el.characterSelect.value;
      log(`Creating session${body.avatar ? ` (avatar ${body.avatar})` : ''}…`);
      const created = await api('/api/sessions', { method: 'POST', body, signal: sess.abort.signal });
      if (!created || !created.session_id || !created.token) throw new Error('Malformed session response');
      sess.id = created.session_id;
      sess.token = created.token;
      if (sess !== session) { deleteRemote(sess); return; }
      dh.sessionId = sess.id;
      log(`Session ${sess.id} created`);
      applyVoice(sess);
      sess.iceServers = normalizeIceServers(created.ice_servers);
      await connectMedia(sess);
    } catch (err) {
      if (sess !== session) return;
      if (err && err.name === 'AbortError') return;
      if (err instanceof ApiError && err.status === 503) {
        log(`Server busy: ${err.message}`, 'warn');
        await teardown(sess, { remote: true, state: CONN.FAILED });
        showBusyNotice(err.retryAfter);
        return;
      }
      fail(err && err.message ? err.message : String(err));
    }
  }

  /** Offer this session's media (a new peer connection) and apply the server's answer. */
  async function connectMedia(sess) {
    const pc = createPeerConnection(sess, sess.iceServers);
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    const complete = await waitForIceGathering(pc, CONFIG.iceGatherTimeoutMs);
    if (sess !== session) return;
    if (!complete) log('ICE gathering not complete after 2 s; sending the candidates so far', 'warn');

    const answer = await api(sessionPath(sess, '/offer'), {
      method: 'POST',
      auth: true,
      body: { sdp: pc.localDescription.sdp, type: pc.localDescription.type },
      signal: sess.abort.signal,
    });
    if (sess !== session) return;
    if (!answer || !answer.sdp) throw new Error('Malformed SDP answer');
    await pc.setRemoteDescription({ type: answer.type || 'answer', sdp: answer.sdp });
    if (sess !== session) return;
    log('SDP answer applied; connecting media…');

    sess.connectTimer = setTimeout(() => {
      if (sess === session && dh.state === CONN.CONNECTING) {
        fail('Timed out connecting media (is UDP blocked? configure a TURN server)');
      }
    }, CONFIG.connectTimeoutMs);
    onPcStateChange(sess); // in case it is already connected
  }

  /**
   * The media of a connected session stopped (its actor may have died with its node): offer
   * again on the same session with its token. The server resumes it on a new actor with its
   * history (README "No single point of failure"); the page keeps its transcript. A session
   * that has ended answers 404 (403 for a token it no longer knows), one whose actor still
   * holds a peer 409: then we fail.
   */
  async function reconnect(sess, reason) {
    if (sess !== session || sess.reconnecting) return;
    if (sess.reconnects >= CONFIG.reconnectAttempts) {
      fail(reason);
      return;
    }
    sess.reconnecting = true;
    sess.reconnects += 1;
    log(`${reason}; reconnecting (try ${sess.reconnects} of ${CONFIG.reconnectAttempts})…`, 'warn');
    showNotice('Connection lost; reconnecting…', 'warn');
    sess.reconnectNotice = true;
    closePeer(sess);
    sess.remoteStream = new MediaStream();
    el.video.srcObject = sess.remoteStream;
    dh.ready = false;
    dh.channelOpen = false;
    dh.pc = null;
    setConnState(CONN.CONNECTING);
    try {
      await connectMedia(sess);
    } catch (err) {
      if (sess !== session) return;
      if (err instanceof ApiError && (err.status === 404 || err.status === 403 || err.status === 409)) {
        fail(`${reason}; the session cannot be resumed (${err.message})`);
        return;
      }
      log(`Reconnect failed: ${err && err.message ? err.message : err}`, 'warn');
      setTimeout(() => { sess.reconnecting = false; reconnect(sess, reason); }, CONFIG.reconnectDelayMs);
      return;
    }
    sess.reconnecting = false;
  }

  function deleteRemote(sess, { keepalive = false } = {}) {
    if (!sess || !sess.id || !sess.token || sess.deleted) return Promise.resolve();
    sess.deleted = true;
    return fetch(sessionPath(sess), {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${sess.token}` },
      keepalive,
    }).then((resp) => {
      if (!resp.ok && resp.status !== 404) log(`Delete session: HTTP ${resp.status}`, 'warn');
    }).catch((err) => {
      if (!keepalive) log(`Delete session failed: ${err.message}`, 'warn');
    });
  }

  function closeLocal(sess) {
    try { sess.abort.abort(); } catch { /* ignore */ }
    closePeer(sess);
    if (sess.micStream) sess.micStream.getTracks().forEach((t) => t.stop());
  }

  /** The peer connection and what runs for it; the session and the microphone stay. */
  function closePeer(sess) {
    clearInterval(sess.pingTimer);
    clearTimeout(sess.connectTimer);
    clearTimeout(sess.disconnectTimer);
    stopStats(sess);
    if (sess.dc) {
      sess.dc.onmessage = null;
      sess.dc.onopen = null;
      sess.dc.onclose = null;
      try { sess.dc.close(); } catch { /* ignore */ }
    }
    if (sess.pc) {
      sess.pc.ontrack = null;
      sess.pc.onconnectionstatechange = null;
      sess.pc.oniceconnectionstatechange = null;
      try { sess.pc.close(); } catch { /* ignore */ }
    }
    sess.remoteStream.getTracks().forEach((t) => t.stop());
  }

  async function teardown(sess, { remote = true, state = CONN.IDLE, keepalive = false } = {}) {
    if (!sess) return;
    const isCurrent = sess === session;
    closeLocal(sess);
    if (isCurrent) {
      session = null;
      dh.sessionId = null;
      dh.pc = null;
      dh.channelOpen = false;
      dh.micEnabled = false;
      dh.micMuted = false;
      dh.pttDown = false;
      stopMeter();
      el.video.pause();
      el.video.srcObject = null;
      el.video.muted = false;
      el.unmute.hidden = true;
      el.stats.hidden = true;
      showPlaceholder(true);
      setAvatarState('offline');
      setConnState(state);
    }
    if (remote) await deleteRemote(sess, { keepalive });
  }

  function fail(message) {
    const sess = session;
    showNotice(message, 'error');
    log(message, 'error');
    if (sess) teardown(sess, { remote: true, state: CONN.FAILED });
    else setConnState(CONN.FAILED);
  }

  async function stop() {
    const sess = session;
    if (!sess) return;
    log('Stopping session');
    hideNotice();
    await teardown(sess, { remote: true, state: CONN.IDLE });
    log('Session closed');
    el.start.focus();
  }

  /** Set what Enter / #send does: "ask" (the LLM answers) or "say" (verbatim). */
  function setSendAction(action) {
    dh.sendAction = action === 'say' ? 'say' : 'ask';
    el.ask.setAttribute('aria-checked', String(dh.sendAction === 'ask'));
    el.say.setAttribute('aria-checked', String(dh.sendAction === 'say'));
    el.send.textContent = dh.sendAction === 'ask' ? 'Ask' : 'Say';
    el.text.placeholder = dh.sendAction === 'ask'
      ? 'Ask something…  (Enter sends, Shift+Enter new line, Esc interrupts)'
      : 'Type what the avatar should say…  (Enter sends, Shift+Enter new line, Esc interrupts)';
  }

  /**
   * Send the text box: "ask" -> POST /ask (the character answers it aloud; shown as your line),
   * "say" -> POST /say (the avatar says exactly this).
   */
  async function send(action = dh.sendAction) {
    const sess = session;
    if (!sess || dh.state !== CONN.CONNECTED) return;
    const text = el.text.value.trim();
    if (!text) {
      log(`Type something to ${action} first`, 'warn');
      el.text.focus();
      return;
    }
    if (text.length > CONFIG.maxTextLength) {
      showNotice(`Text is too long (${text.length} / ${CONFIG.maxTextLength} characters)`);
      return;
    }
    el.send.disabled = true;
    // Your typed question shows at once; the server's reply lines follow under it.
    const line = action === 'ask' ? addLine('user', text, { note: '(typed)' }).li : null;
    try {
      const t0 = performance.now();
      const res = await api(sessionPath(sess, action === 'ask' ? '/ask' : '/say'), { method: 'POST', auth: true, body: { text } });
      if (sess !== session) return;
      sess.pendingSay = t0;
      const turn = res && res.turn_id != null ? res.turn_id : '?';
      if (line && turn !== '?') line.dataset.turn = String(turn);
      log(`You (${action}): ${text}  (turn ${turn}, ${Math.round(performance.now() - t0)} ms)`, 'out');
      if (el.text.value.trim() === text) el.text.value = '';
      updateCounter();
      if (!sess.keepNotice) hideNotice();
    } catch (err) {
      if (sess !== session) return;
      if (line) line.classList.add('failed');
      showNotice(err.message);
      log(`${action === 'ask' ? 'Ask' : 'Say'} failed: ${err.message}`, 'error');
      if (err instanceof ApiError && err.status === 404) {
        // Its actor may have died (a lost node) before the pings tell: resuming says which.
        reconnect(sess, 'The session did not answer');
      } else if (err instanceof ApiError && (err.status === 401 || err.status === 410)) {
        teardown(sess, { remote: false, state: CONN.FAILED });
      }
    } finally {
      updateControls();
      el.text.focus();
    }
  }

  async function interrupt() {
    const sess = session;
    if (!sess || dh.state !== CONN.CONNECTED) return;
    try {
      await api(sessionPath(sess, '/interrupt'), { method: 'POST', auth: true });
      log('Interrupt sent', 'out');
    } catch (err) {
      if (sess !== session) return;
      showNotice(err.message);
      log(`Interrupt failed: ${err.message}`, 'error');
    }
  }

  // ---------------------------------------------------------------------------
  // Wiring
  // ---------------------------------------------------------------------------
  el.start.addEventListener('click', () => { start(); });
  el.stop.addEventListener('click', () => { stop(); });
  el.interrupt.addEventListener('click', () => { interrupt(); });
  el.form.addEventListener('submit', (e) => { e.preventDefault(); send(); });
  el.text.addEventListener('input', updateCounter);
  el.text.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      if (!el.send.disabled) send();
    } else if (e.key === 'Escape' && dh.state === CONN.CONNECTED) {
      e.preventDefault();
      interrupt();
    }
  });
  el.ask.addEventListener('click', () => setSendAction('ask'));
  el.say.addEventListener('click', () => setSendAction('say'));
  // Arrow keys move between the two radio buttons.
  for (const b of [el.ask, el.say]) {
    b.addEventListener('keydown', (e) => {
      if (['ArrowLeft', 'ArrowRight', 'ArrowUp', 'ArrowDown'].includes(e.key)) {
        e.preventDefault();
        const next = dh.sendAction === 'ask' ? 'say' : 'ask';
        setSendAction(next);
        (next === 'ask' ? el.ask : el.say).focus();
      }
    });
  }
  el.transcriptClear.addEventListener('click', () => el.transcript.replaceChildren());

  // Microphone controls.
  el.micMode.addEventListener('change', () => setMicMode(el.micMode.value, { user: true }));
  el.micMute.addEventListener('click', () => setMicMuted(!dh.micMuted));
  // Hold to talk: pointer (mouse, touch, pen) held on the button.
  el.ptt.addEventListener('pointerdown', (e) => {
    if (e.button !== 0) return;
    e.preventDefault();
    try { el.ptt.setPointerCapture(e.pointerId); } catch { /* ignore */ }
    pttPress();
  });
  for (const type of ['pointerup', 'pointercancel', 'lostpointercapture']) {
    el.ptt.addEventListener(type, () => pttRelease());
  }
  el.ptt.addEventListener('contextmenu', (e) => e.preventDefault());  // long-press menu on touch
  // Keyboard on the focused button: Enter/Space held.
  el.ptt.addEventListener('keydown', (e) => {
    if ((e.key === 'Enter' || e.key === ' ') && !e.repeat) { e.preventDefault(); pttPress(); }
  });
  el.ptt.addEventListener('keyup', (e) => {
    if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); pttRelease(); }
  });
  // Space held anywhere (but in a text field) talks in push-to-talk mode; M toggles mute.
  const typingIn = (t) => t && (t.isContentEditable || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT'
    || (t.tagName === 'INPUT' && !['button', 'checkbox', 'radio', 'submit', 'reset'].includes(t.type)));
  document.addEventListener('keydown', (e) => {
    if (typingIn(e.target) || e.ctrlKey || e.metaKey || e.altKey || e.target === el.ptt) return;
    if (e.code === 'Space' || e.key === ' ') {
      if (dh.micMode !== 'push_to_talk' || !session) return;
      e.preventDefault();  // no page scroll, no click on a focused button
      if (!e.repeat) pttPress();
    } else if ((e.key === 'm' || e.key === 'M') && !e.repeat && session && session.micTrack) {
      setMicMuted(!dh.micMuted);
    }
  });
  document.addEventListener('keyup', (e) => {
    if ((e.code === 'Space' || e.key === ' ') && dh.pttDown && e.target !== el.ptt) {
      e.preventDefault();
      pttRelease();
    }
  });
  window.addEventListener('blur', () => pttRelease());
  document.addEventListener('visibilitychange', () => { if (document.hidden) pttRelease(); });
  el.avatarSelect.addEventListener('change', updateAvatarPreview);
  el.voiceSelect.addEventListener('change', () => { showVoiceMeta(); applyVoice(session); });
  el.placeholderImg.addEventListener('error', () => {
    el.placeholderImg.hidden = true;
    el.placeholderFallback.hidden = false;
  });
  el.placeholderImg.addEventListener('load', () => {
    el.placeholderImg.hidden = false;
    el.placeholderFallback.hidden = true;
  });
  // Hide the placeholder once real video frames are showing.
  const revealVideo = () => {
    if (session && el.video.videoWidth > 0 && !el.video.paused) showPlaceholder(false);
  };
  el.video.addEventListener('playing', revealVideo);
  el.video.addEventListener('resize', revealVideo);
  el.video.addEventListener('loadeddata', revealVideo);
  el.unmute.addEventListener('click', () => {
    el.video.muted = false;
    el.video.play().then(() => { el.unmute.hidden = true; }).catch((err) => log(`Sound: ${err.message}`, 'warn'));
  });
  // Avatars panel.
  el.avatarGallery.addEventListener('click', (e) => {
    const del = e.target.closest('.avatar-delete');
    if (del) { onDeleteClick(del); return; }
    const pick = e.target.closest('.avatar-pick');
    if (pick && !pick.disabled) pickAvatar(pick.dataset.id);
  });
  el.avatarForm.addEventListener('submit', (e) => { e.preventDefault(); submitAvatar(); });
  el.avatarCancel.addEventListener('click', () => { cancelJob(); });
  el.avatarId.addEventListener('input', validateAvatarId);
  el.avatarFile.addEventListener('change', () => {
    const f = el.avatarFile.files && el.avatarFile.files[0];
    if (f && !el.avatarId.value.trim()) {
      el.avatarId.value = slugFromFilename(f.name);
      validateAvatarId();
    }
  });
  // The admin token lives in sessionStorage only (this tab), never localStorage or the URL.
  try { el.adminToken.value = sessionStorage.getItem('dh.adminToken') || ''; } catch { /* ignore */ }
  el.adminToken.addEventListener('input', () => {
    try {
      if (el.adminToken.value) sessionStorage.setItem('dh.adminToken', el.adminToken.value);
      else sessionStorage.removeItem('dh.adminToken');
    } catch { /* storage may be disabled */ }
  });
  try {
    if (localStorage.getItem('dh.avatarsPanel') === 'closed') el.avatarsPanel.open = false;
  } catch { /* ignore */ }
  el.avatarsPanel.addEventListener('toggle', () => {
    try { localStorage.setItem('dh.avatarsPanel', el.avatarsPanel.open ? 'open' : 'closed'); } catch { /* ignore */ }
  });
  el.noticeClose.addEventListener('click', hideNotice);
  el.logClear.addEventListener('click', () => el.log.replaceChildren());

  // Closing the tab (or navigating away) ends the session on the server.
  window.addEventListener('pagehide', () => {
    const sess = session;
    if (sess) teardown(sess, { remote: true, state: CONN.IDLE, keepalive: true });
  });
  // Restored from the back/forward cache: the old session is gone.
  window.addEventListener('pageshow', (e) => {
    if (e.persisted) { setConnState(CONN.IDLE); setAvatarState('offline'); showPlaceholder(true); }
  });

  // Test hooks for the avatars panel (deleteAvatar skips the two-click confirmation).
  dh.loadAvatars = loadAvatars;
  dh.deleteAvatar = deleteAvatar;

  // Initial state
  if (!window.RTCPeerConnection) showNotice('This browser does not support WebRTC.');
  try {
    const savedMode = localStorage.getItem('dh.micMode');
    if (CONFIG.micModes.includes(savedMode)) dh.micMode = savedMode;
  } catch { /* storage may be disabled */ }
  if (CONFIG.micModes.includes(params.get('mode'))) dh.micMode = params.get('mode');
  if (!CONFIG.sendMicrophone) dh.micError = 'microphone turned off (?mic=0)';
  setSendAction('ask');
  updateCounter();
  setConnState(CONN.IDLE);
  setAvatarState('offline');
  showPlaceholder(true);
  log('Page loaded');
  checkHealth();
  loadAvatars();
  loadCharacters();
  loadVoices();
})();
