// The live connection shared by the pages: one WebSocket to /api/v1/ws that subscribes to a
// few topics, keeps the highest `seq` seen on each, and after any drop reconnects with
// exponential backoff (full jitter) and resubscribes with `since`, so nothing is missed. It asks
// for `?batch=true`: frames the server has ready together arrive as one message holding a JSON
// array of them, which costs the page one message event and one parse instead of one per frame.
//
// States shown in #conn-status[data-state]: connecting, live, reconnecting, closed.

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30000;
const STABLE_AFTER_MS = 10000; // a connection live this long resets the backoff
const PING_EVERY_MS = 25000;
const SILENT_LIMIT_MS = 60000; // no frame at all for this long: the socket is dead
const CLOSE_REFUSED = 1008;

const noop = () => {};

export class LiveClient {
  /**
   * @param {object} o
   * @param {string[]} o.topics       topics to subscribe to, e.g. ["fleet"] or ["shipment:7"]
   * @param {string} [o.share]        share token, sent as ?share= (customer view)
   * @param {Function} [o.onSnapshot] (topic, snapshot) after each `subscribed`
   * @param {Function} [o.onEvent]    (frame) for each event frame (position, alert, …)
   * @param {Function} [o.onState]    (state, detail) when the connection state changes
   * @param {Function} [o.onHello]    (frame) once per connection
   * @param {Function} [o.onRefused]  () when the server refused the credentials (close 1008)
   * @param {Function} [o.checkAuth]  async () => boolean; asked when a socket failed before it
   *                                  opened, since the browser hides an HTTP 401 on upgrade
   * @param {HTMLElement} [o.statusEl] defaults to #conn-status
   */
  constructor(o) {
    this.topics = o.topics.slice();
    this.share = o.share || '';
    this.onSnapshot = o.onSnapshot || noop;
    this.onEvent = o.onEvent || noop;
    this.onState = o.onState || noop;
    this.onHello = o.onHello || noop;
    this.onRefused = o.onRefused || noop;
    this.checkAuth = o.checkAuth || null;
    this.statusEl = o.statusEl || document.getElementById('conn-status');
    this.closedText = 'Disconnected';

    this.listeners = []; // more { onSnapshot, onEvent } from modules mounted later (alerts.js)
    this.seqs = new Map(); // topic -> highest seq seen
    this.ws = null;
    this.attempt = 0;
    this.openedAt = 0;
    this.lastFrameAt = 0;
    this.pending = new Set(); // topics not yet confirmed on this connection
    this.retryAt = 0;
    this.retryTimer = 0;
    this.countdownTimer = 0;
    this.pingTimer = 0;
    this.stopped = false;
    this.state = '';

    this.wake = () => {
      if (this.retryTimer) this.connectNow();
      else this.render();
    };
    window.addEventListener('online', this.wake);
    window.addEventListener('offline', () => this.render());
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible' && this.retryTimer) this.connectNow();
    });
  }

  start() {
    this.setState('connecting');
    this.open();
    return this;
  }

  /** Stop for good (no reconnect). */
  stop(text) {
    this.stopped = true;
    if (text) this.closedText = text;
    this.clearTimers();
    if (this.ws) this.detach(this.ws).close(1000);
    this.ws = null;
    this.setState('closed');
  }

  /**
   * Also hand snapshots and events to `handlers` ({ onSnapshot, onEvent }), so a module such as
   * the alerts panel can share this connection with the page that made it.
   */
  listen(handlers) {
    this.listeners.push(handlers);
  }

  /** Subscribe to one more topic, now if connected, and after every reconnect. */
  addTopic(topic) {
    if (this.topics.includes(topic)) return;
    this.topics.push(topic);
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.pending.add(topic);
      this.send({ type: 'subscribe', topic, ref: `sub:${topic}` });
    }
  }

  /** The highest seq seen on `topic`, or undefined. */
  highestSeq(topic) {
    return this.seqs.get(topic);
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  // ---- connection lifecycle ----

  url() {
    const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws';
    const query = new URLSearchParams({ batch: 'true' });
    if (this.share) query.set('share', this.share);
    return `${scheme}://${window.location.host}/api/v1/ws?${query}`;
  }

  open() {
    this.clearTimers();
    this.retryAt = 0;
    this.openedAt = 0;
    this.render();
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch (e) {
      console.error('live: cannot open WebSocket', e);
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => this.handleOpen(ws);
    ws.onmessage = (ev) => this.handleMessage(ev);
    ws.onclose = (ev) => this.handleClose(ws, ev);
    ws.onerror = () => {}; // a close event always follows
  }

  handleOpen(ws) {
    if (ws !== this.ws) return;
    this.openedAt = Date.now();
    this.lastFrameAt = this.openedAt;
    this.pending = new Set(this.topics);
    for (const topic of this.topics) {
      const frame = { type: 'subscribe', topic, ref: `sub:${topic}` };
      const since = this.seqs.get(topic);
      if (since !== undefined) frame.since = since;
      this.send(frame);
    }
    this.pingTimer = window.setInterval(() => this.tick(), PING_EVERY_MS);
  }

  tick() {
    if (Date.now() - this.lastFrameAt > SILENT_LIMIT_MS) {
      console.warn('live: no frame for a minute, reconnecting');
      const ws = this.ws;
      this.ws = null;
      if (ws) this.detach(ws).close(4000, 'silent');
      this.scheduleReconnect();
      return;
    }
    this.send({ type: 'ping' });
  }

  handleMessage(ev) {
    this.lastFrameAt = Date.now();
    let message;
    try {
      message = JSON.parse(ev.data);
    } catch {
      console.error('live: frame is not JSON', ev.data);
      return;
    }
    // Frames ready together come as one array, in order (?batch=true).
    if (Array.isArray(message)) {
      for (const frame of message) this.handleFrame(frame);
    } else {
      this.handleFrame(message);
    }
  }

  handleFrame(frame) {
    switch (frame.type) {
      case 'hello':
        this.onHello(frame);
        break;
      case 'subscribed': {
        const snapshot = frame.snapshot || {};
        this.noteSeq(frame.topic, snapshot.seq);
        this.onSnapshot(frame.topic, snapshot);
        for (const l of this.listeners) if (l.onSnapshot) l.onSnapshot(frame.topic, snapshot);
        this.confirm(frame.topic);
        break;
      }
      case 'pong':
      case 'unsubscribed':
        break;
      case 'error':
        console.error(`live: server error ${frame.code}: ${frame.message}`, frame);
        // A refused subscription will not be confirmed; do not wait on it forever.
        if (typeof frame.ref === 'string' && frame.ref.startsWith('sub:')) {
          this.confirm(frame.ref.slice(4));
        }
        break;
      default:
        if (frame.topic) {
          this.noteSeq(frame.topic, frame.seq);
          this.onEvent(frame);
        }
        for (const l of this.listeners) if (l.onEvent) l.onEvent(frame);
    }
  }

  confirm(topic) {
    this.pending.delete(topic);
    if (this.pending.size === 0 && this.openedAt) this.setState('live');
  }

  async handleClose(ws, ev) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.clearTimers();
    if (this.stopped) return;
    if (ev.code === CLOSE_REFUSED) {
      this.refused();
      return;
    }
    const neverOpened = !this.openedAt;
    if (!neverOpened && Date.now() - this.openedAt >= STABLE_AFTER_MS) this.attempt = 0;
    this.openedAt = 0;
    if (neverOpened && this.checkAuth) {
      this.setState('reconnecting');
      let ok = true;
      try {
        ok = await this.checkAuth();
      } catch {
        ok = true; // the network is down; keep trying
      }
      if (this.stopped) return;
      if (!ok) {
        this.refused();
        return;
      }
    }
    this.scheduleReconnect();
  }

  refused() {
    this.stop();
    this.onRefused();
  }

  scheduleReconnect() {
    if (this.stopped) return;
    this.clearTimers();
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const delay = Math.random() * ceiling; // full jitter
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this.retryTimer = window.setTimeout(() => this.connectNow(), delay);
    this.countdownTimer = window.setInterval(() => this.render(), 1000);
    this.setState('reconnecting');
  }

  connectNow() {
    if (this.stopped) return;
    this.setState('reconnecting');
    this.open();
  }

  detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    return ws;
  }

  clearTimers() {
    window.clearTimeout(this.retryTimer);
    window.clearInterval(this.countdownTimer);
    window.clearInterval(this.pingTimer);
    this.retryTimer = this.countdownTimer = this.pingTimer = 0;
  }

  noteSeq(topic, seq) {
    if (typeof seq !== 'number' || !Number.isFinite(seq)) return;
    const seen = this.seqs.get(topic);
    if (seen === undefined || seq > seen) this.seqs.set(topic, seq);
  }

  // ---- state display ----

  setState(state) {
    const changed = state !== this.state;
    this.state = state;
    this.render();
    if (changed) this.onState(state, this.detail());
  }

  detail() {
    return {
      offline: navigator.onLine === false,
      retryInMs: this.retryAt ? Math.max(0, this.retryAt - Date.now()) : 0,
    };
  }

  render() {
    const el = this.statusEl;
    if (!el) return;
    const { offline, retryInMs } = this.detail();
    let text;
    switch (this.state) {
      case 'live':
        text = 'Live';
        break;
      case 'connecting':
        text = 'Connecting…';
        break;
      case 'closed':
        text = this.closedText;
        break;
      default: {
        const secs = Math.ceil(retryInMs / 1000);
        text = this.retryTimer && secs > 0 ? `Reconnecting in ${secs} s…` : 'Reconnecting…';
        if (offline) text = `Offline · ${text.charAt(0).toLowerCase()}${text.slice(1)}`;
      }
    }
    el.dataset.state = this.state;
    if (offline && this.state !== 'live') el.dataset.offline = '';
    else delete el.dataset.offline;
    const label = el.querySelector('.conn__label') || el;
    if (label.textContent !== text) label.textContent = text;
    el.title = this.state === 'live' ? 'Receiving live updates' : text;
  }
}

/** Create and start a LiveClient; see the constructor for the options. */
export function connectLive(options) {
  return new LiveClient(options).start();
}
