// The chat panel: one shipment's conversation, live on the page's LiveClient (`chat:N`).
//
//   mountChat(el, live, { shipmentId, large: false, share: '' })   // share: a share token
//
// Message text is only ever set with textContent, never parsed as HTML. Messages are sent over
// the WebSocket with a client id, so a re-send after a reconnect is stored once; every `chat`
// event replaces the message it carries (edits, deletions and reactions included). Older pages
// load when the list is scrolled to its top. Typing indicators expire on their own after the
// `expires_in_ms` the server gives; `presence` says who is here.

import { api } from './api.js';
import { formatClock } from './format.js';
import { tones } from './sound.js';

const REACTIONS = ['👍', '✅', '❤️'];
const TYPING_SEND_EVERY_MS = 2000;

/** A short single tone for a message from someone else. */
function blip() {
  tones([660], { volume: 0.15 });
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

export function mountChat(root, live, options) {
  const o = { large: false, sound: true, share: '', ...options };
  const topic = `chat:${o.shipmentId}`;
  root.classList.add('chat');
  if (o.large) root.classList.add('chat--large');
  const heading = el('h2', 'panel__heading', 'Chat ');
  const unreadEl = el('span', 'count chat__unread', '0');
  unreadEl.title = 'Unread';
  heading.append(unreadEl);
  const presenceEl = el('p', 'muted chat__presence');
  const listEl = el('ol', 'list chat__list');
  const typingEl = el('p', 'muted chat__typing');
  typingEl.hidden = true;
  const form = el('form', 'chat__form');
  const input = el('input', 'input chat__input');
  input.type = 'text';
  input.maxLength = 2000;
  input.placeholder = 'Message';
  input.setAttribute('aria-label', 'Message');
  const sendButton = el('button', 'button button--primary chat__send', 'Send');
  sendButton.type = 'submit';
  form.append(input, sendButton);
  root.replaceChildren(heading, presenceEl, listEl, typingEl, form);

  const messages = new Map(); // id -> message
  const reads = new Map(); // participant -> read_seq
  const typing = new Map(); // participant -> { name, until }
  let me = '';
  let unread = 0;
  let nextBefore = null;
  let loadingOlder = false;
  let lastTypingSent = 0;
  let editing = null;

  function seenBy(m) {
    const names = [];
    for (const [participant, seq] of reads) {
      if (participant !== m.author.key && seq >= m.seq) names.push(participant === me ? 'you' : participant);
    }
    return names;
  }

  function row(m) {
    const li = el('li', 'chat__message');
    li.dataset.messageId = String(m.id);
    li.dataset.mine = m.author.key === me ? 'true' : 'false';
    if (m.deleted) li.dataset.deleted = 'true';
    const meta = el('span', 'chat__meta', `${m.author.name} · ${formatClock(m.created_at, { seconds: false })}${m.edited_at ? ' · edited' : ''}`);
    const body = el('span', 'chat__body', m.deleted ? 'Message deleted' : m.body);
    li.append(meta, body);
    if (!m.deleted) {
      const actions = el('span', 'chat__actions');
      for (const emoji of REACTIONS) {
        const who = (m.reactions && m.reactions[emoji]) || [];
        const b = el('button', 'button chat__react', who.length ? `${emoji} ${who.length}` : emoji);
        b.type = 'button';
        b.setAttribute('aria-pressed', who.includes(me) ? 'true' : 'false');
        b.addEventListener('click', () => live.send({ type: 'chat_react', id: m.id, emoji }));
        actions.append(b);
      }
      if (m.author.key === me) {
        const edit = el('button', 'button chat__edit', 'Edit');
        edit.type = 'button';
        edit.addEventListener('click', () => {
          editing = m.id;
          input.value = m.body;
          input.focus();
        });
        const del = el('button', 'button chat__delete', 'Delete');
        del.type = 'button';
        del.addEventListener('click', () => live.send({ type: 'chat_delete', id: m.id }));
        actions.append(edit, del);
      }
      li.append(actions);
    }
    const seen = seenBy(m);
    if (m.author.key === me && seen.length) li.append(el('span', 'muted chat__seen', `Seen by ${seen.join(', ')}`));
    return li;
  }

  function render() {
    const atBottom = listEl.scrollHeight - listEl.scrollTop - listEl.clientHeight < 40;
    const sorted = [...messages.values()].sort((a, b) => a.seq - b.seq);
    listEl.replaceChildren(...sorted.map(row));
    unreadEl.textContent = String(unread);
    unreadEl.dataset.unread = String(unread);
    if (atBottom) listEl.scrollTop = listEl.scrollHeight;
  }

  function renderTyping() {
    const now = Date.now();
    const names = [...typing.entries()].filter(([, t]) => t.until > now).map(([, t]) => t.name);
    typingEl.hidden = names.length === 0;
    typingEl.textContent = names.length ? `${names.join(', ')} typing…` : '';
  }
  window.setInterval(renderTyping, 1000);

  /** Marks everything shown as read when the page is being looked at. */
  function markRead() {
    if (document.visibilityState !== 'visible' || messages.size === 0) return;
    const newest = Math.max(...[...messages.values()].map((m) => m.seq));
    if ((reads.get(me) || 0) >= newest) return;
    live.send({ type: 'chat_read', topic, seq: newest });
  }
  document.addEventListener('visibilitychange', markRead);

  async function loadOlder() {
    if (loadingOlder || nextBefore == null) return;
    loadingOlder = true;
    try {
      const page = await api(`/shipments/${o.shipmentId}/chat?before=${nextBefore}`, { share: o.share });
      const height = listEl.scrollHeight;
      for (const m of page.messages || []) messages.set(m.id, m);
      nextBefore = page.next_before;
      render();
      listEl.scrollTop = listEl.scrollHeight - height;
    } catch (e) {
      console.error('chat: could not load older messages', e);
    } finally {
      loadingOlder = false;
    }
  }
  listEl.addEventListener('scroll', () => {
    if (listEl.scrollTop < 20) loadOlder();
  });

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const body = input.value.trim();
    if (!body) return;
    const sent = editing != null
      ? live.send({ type: 'chat_edit', id: editing, body })
      : live.send({ type: 'chat_send', topic, client_id: crypto.randomUUID(), body, ref: 'chat' });
    if (sent) {
      input.value = '';
      editing = null;
    }
  });
  input.addEventListener('input', () => {
    const now = Date.now();
    if (now - lastTypingSent < TYPING_SEND_EVERY_MS || !input.value) return;
    lastTypingSent = now;
    live.send({ type: 'typing', topic });
  });

  live.listen({
    onSnapshot(t, snapshot) {
      if (t !== topic) return;
      me = snapshot.me || '';
      messages.clear();
      for (const m of snapshot.messages || []) messages.set(m.id, m);
      reads.clear();
      for (const r of snapshot.reads || []) reads.set(r.participant, r.read_seq);
      unread = snapshot.unread || 0;
      nextBefore = snapshot.next_before;
      render();
      markRead();
    },
    onEvent(frame) {
      if (frame.topic !== topic) return;
      if (frame.type === 'chat') {
        const m = frame.data;
        const isNew = !messages.has(m.id);
        messages.set(m.id, m);
        if (isNew && m.author.key !== me) {
          typing.delete(m.author.key);
          renderTyping();
          if (o.sound) blip();
          unread += 1;
        }
        render();
        markRead();
      } else if (frame.type === 'chat_read') {
        reads.set(frame.data.participant, frame.data.read_seq);
        render();
      } else if (frame.type === 'chat_unread') {
        unread = frame.unread;
        render();
      } else if (frame.type === 'typing') {
        typing.set(frame.participant, { name: frame.name, until: Date.now() + (frame.expires_in_ms || 5000) });
        renderTyping();
      } else if (frame.type === 'presence') {
        const others = (frame.online || []).filter((p) => p.participant !== me).map((p) => p.name);
        presenceEl.textContent = others.length ? `Online: ${others.join(', ')}` : 'No one else online';
      }
    },
  });
  live.addTopic(topic);
  render();
}
