// The Vehicles page: the organisation's vehicles (in service, retired, or all) with their last
// position, live; adding one and showing its ingest token once with the settings for each
// tracker app; renaming, the speed unit, rotating or revoking the token, retiring and
// reinstating, and the vehicle's own alert settings.

import { api, ApiError, goToSignIn, goToSignInIfLapsed, stillSignedIn } from './api.js';
import { formatAgo, formatClock, formatLatLon, setServerTime } from './format.js';
import { busy, clearErrors, confirmAction, copyText, el, showApiError, showFieldError } from './forms.js';
import { connectLive } from './live.js';
import { qrSvg } from './qr.js';
import { SettingsForm, settingsSchemas } from './settings-form.js';
import { SPEED_UNITS, TRACKER_SPEED_UNITS, trackerSetups } from './trackers.js';

const $ = (id) => document.getElementById(id);
const isAdmin = document.body.dataset.role === 'admin';

/** id -> { vehicle, row, detail (the open management row, or null) } */
const shown = new Map();
let statusFilter = 'active';

// ---- the list ----

function statusOf(v) {
  return v.status || 'active';
}

function listed(v) {
  return statusFilter === 'all' || statusOf(v) === statusFilter;
}

async function load() {
  $('vehicles-error').hidden = true;
  try {
    const vehicles = await api(`/vehicles?status=${statusFilter}`);
    shown.clear();
    $('vehicles-body').replaceChildren();
    for (const v of vehicles.filter(listed)) addRow(v);
    renderEmpty();
    $('vehicles-table').dataset.ready = 'true';
  } catch (e) {
    if (goToSignInIfLapsed(e)) return;
    $('vehicles-error').textContent = e instanceof ApiError ? e.message : 'The vehicles could not be loaded.';
    $('vehicles-error').hidden = false;
  }
}

function renderEmpty() {
  $('vehicles-empty').hidden = shown.size > 0;
}

function addRow(v, { first = false } = {}) {
  // The fleet topic may announce a vehicle this page has just added, before the reply does.
  if (shown.has(v.id)) {
    const known = shown.get(v.id);
    updated(known, v);
    return known;
  }
  const manage = el('button', { className: 'button', text: 'Manage', attrs: { type: 'button', 'aria-expanded': 'false', 'aria-controls': `vehicle-${v.id}-manage` } });
  const row = el('tr', { className: 'vehicle-row', attrs: { 'data-vehicle-id': v.id } },
    el('th', { className: 'vehicle-row__name', attrs: { scope: 'row' } }),
    el('td', {}, el('span', { className: 'badge vehicle-row__status' })),
    el('td', { className: 'vehicle-row__unit' }),
    el('td', { className: 'vehicle-row__last' },
      el('span', { className: 'vehicle-row__when' }),
      el('span', { className: 'vehicle-row__where muted mono' })),
    el('td', { className: 'table__actions' }, manage));
  const entry = { vehicle: v, row, detail: null };
  shown.set(v.id, entry);
  manage.addEventListener('click', () => toggleManage(entry, manage));
  const body = $('vehicles-body');
  if (first) body.prepend(row);
  else body.append(row);
  renderRow(entry);
  renderEmpty();
  return entry;
}

function renderRow(entry) {
  const v = entry.vehicle;
  const row = entry.row;
  row.querySelector('.vehicle-row__name').textContent = v.name;
  const badge = row.querySelector('.vehicle-row__status');
  badge.textContent = statusOf(v) === 'retired' ? 'Retired' : 'In service';
  badge.dataset.status = statusOf(v);
  row.dataset.status = statusOf(v);
  row.querySelector('.vehicle-row__unit').textContent = SPEED_UNITS[v.speed_unit] || v.speed_unit;
  renderLast(entry);
  if (entry.detail) renderManage(entry);
}

function renderLast(entry) {
  const p = entry.vehicle.last_position;
  const cell = entry.row.querySelector('.vehicle-row__last');
  const when = cell.querySelector('.vehicle-row__when');
  const where = cell.querySelector('.vehicle-row__where');
  if (!p) {
    when.textContent = 'Never';
    where.textContent = '';
    delete cell.dataset.recordedAt;
    return;
  }
  cell.dataset.recordedAt = p.recorded_at;
  when.textContent = `${formatClock(p.recorded_at)} · ${formatAgo(p.recorded_at)}`;
  where.textContent = formatLatLon(p.lat, p.lon);
}

/** A newer position for a listed vehicle (a late one never replaces the last). */
function applyPosition(p) {
  const entry = shown.get(p.vehicle_id);
  if (!entry || p.late) return;
  const last = entry.vehicle.last_position;
  if (last && Date.parse(last.recorded_at) > Date.parse(p.recorded_at)) return;
  entry.vehicle.last_position = p;
  renderLast(entry);
}

/**
 * A vehicle created or changed anywhere (another dispatcher's page, the API): its row follows,
 * or it is added when the list shows its kind. A row already shown stays, with its new status,
 * as it does after this page's own changes; the name being typed in its form is left alone.
 */
function applyVehicle(data) {
  const entry = shown.get(data.id);
  if (entry) updated(entry, data);
  else if (listed(data)) addRow({ ...data, last_position: null }, { first: true });
}

$('status-filter').addEventListener('change', (event) => {
  statusFilter = event.target.value;
  load();
});

window.setInterval(() => {
  for (const entry of shown.values()) renderLast(entry);
}, 15000);

// ---- adding a vehicle ----

$('add-vehicle').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.currentTarget;
  clearErrors(form);
  const nameInput = $('new-vehicle-name');
  const name = nameInput.value.trim();
  if (!name) {
    showFieldError(nameInput, 'Give the vehicle a name.');
    nameInput.focus();
    return;
  }
  const tracker = $('new-vehicle-tracker').value;
  const body = { name };
  if (TRACKER_SPEED_UNITS[tracker]) body.speed_unit = TRACKER_SPEED_UNITS[tracker];
  await busy($('add-vehicle-button'), async () => {
    try {
      const reply = await api('/vehicles', { method: 'POST', body });
      form.reset();
      $('new-vehicle-tracker').value = tracker;
      if (listed(reply.vehicle)) addRow(reply.vehicle, { first: true });
      showToken(reply.vehicle, reply.ingest_token, tracker, 'created');
    } catch (e) {
      showApiError(form, e, { fields: { name: nameInput, speed_unit: $('new-vehicle-tracker') }, fallback: 'The vehicle was not added.' });
    }
  });
});

// ---- the token, shown once ----

function showToken(vehicle, token, tracker, why) {
  const panel = $('token-panel');
  const tokenInput = el('input', { className: 'input mono', attrs: { id: 'token-value', readonly: true, value: token, 'aria-describedby': 'token-warning' } });
  tokenInput.value = token;
  const copy = el('button', { className: 'button', text: 'Copy', attrs: { type: 'button' } });
  copy.addEventListener('click', () => copyText(token, copy));
  const close = el('button', { className: 'button', text: 'Done', attrs: { type: 'button', id: 'token-done' } });
  close.addEventListener('click', () => {
    panel.hidden = true;
    panel.replaceChildren();
  });
  const setups = trackerSetups(window.location.origin, token, vehicle);
  // The tracker chosen when adding the vehicle comes first.
  setups.sort((a, b) => (b.id === tracker) - (a.id === tracker));
  panel.dataset.vehicleId = String(vehicle.id);
  panel.replaceChildren(
    el('div', { className: 'console-section__head' },
      el('h2', { className: 'console-section__title', attrs: { id: 'token-heading' }, text: `${why === 'created' ? 'Added' : 'New token for'} ${vehicle.name}` }),
      close),
    el('p', { className: 'notice', attrs: { id: 'token-warning' }, text: 'This ingest token is shown once, now. Set up the device (below) or copy the token somewhere safe: to see one again, rotate it, which stops this one.' }),
    el('div', { className: 'field' },
      el('label', { className: 'field__label', text: 'Ingest token', attrs: { for: 'token-value' } }),
      el('div', { className: 'copy-row' }, tokenInput, copy)),
    el('div', { className: 'token__apps' }, ...setups.map(setupCard)));
  panel.hidden = false;
  panel.focus();
  panel.scrollIntoView({ block: 'start' });
}

function setupCard(s) {
  const textId = `setup-${s.id}-text`;
  const text = el('textarea', { className: 'input mono token__text', attrs: { id: textId, readonly: true, rows: 6, spellcheck: 'false' } });
  text.value = s.text;
  const copy = el('button', { className: 'button', text: 'Copy', attrs: { type: 'button' } });
  copy.addEventListener('click', () => copyText(s.text, copy));
  const card = el('article', { className: 'token__app', attrs: { 'data-app': s.id, 'aria-labelledby': `setup-${s.id}-title` } },
    el('h3', { className: 'token__app-title', text: s.title, attrs: { id: `setup-${s.id}-title` } }),
    el('p', { className: 'token__steps', text: s.steps }),
    el('label', { className: 'visually-hidden', text: `${s.title} settings`, attrs: { for: textId } }),
    text,
    el('div', { className: 'token__copy' }, copy));
  if (s.note) card.append(el('p', { className: 'notice token__note', text: s.note }));
  if (s.qr) {
    card.append(el('figure', { className: 'token__qr' },
      qrSvg(s.qr, `QR code for ${s.title}`),
      el('figcaption', { className: 'muted', text: s.qrSays })));
  }
  return card;
}

// ---- managing one vehicle ----

function toggleManage(entry, button) {
  if (entry.detail) {
    entry.detail.remove();
    entry.detail = null;
    button.setAttribute('aria-expanded', 'false');
    return;
  }
  const id = entry.vehicle.id;
  const box = el('div', { className: 'manage', attrs: { id: `vehicle-${id}-manage` } });
  entry.detail = el('tr', { className: 'vehicle-detail', attrs: { 'data-vehicle-id': id } }, el('td', { attrs: { colspan: 5 } }, box));
  entry.row.after(entry.detail);
  button.setAttribute('aria-expanded', 'true');
  buildManage(entry, box);
  box.querySelector('input').focus();
}

function buildManage(entry, box) {
  const v = entry.vehicle;
  const id = v.id;

  // Name and speed unit: one form, only the changed keys sent.
  const nameInput = el('input', { className: 'input', attrs: { id: `vehicle-${id}-name`, maxlength: 200, autocomplete: 'off' } });
  nameInput.value = v.name;
  const unitSelect = el('select', { className: 'input', attrs: { id: `vehicle-${id}-unit`, 'aria-describedby': `vehicle-${id}-unit-help` } },
    ...Object.entries(SPEED_UNITS).map(([value, label]) => el('option', { text: label, attrs: { value } })));
  unitSelect.value = v.speed_unit;
  const save = el('button', { className: 'button button--primary inline-form__submit', text: 'Save', attrs: { type: 'submit' } });
  const details = el('form', { className: 'inline-form', attrs: { novalidate: true, 'data-form': 'details' } },
    el('div', { className: 'field' }, el('label', { className: 'field__label', text: 'Name', attrs: { for: nameInput.id } }), nameInput),
    el('div', { className: 'field' },
      el('label', { className: 'field__label', text: 'Speed unit', attrs: { for: unitSelect.id } }), unitSelect,
      el('span', { className: 'field__hint muted', attrs: { id: `vehicle-${id}-unit-help` }, text: 'How OsmAnd-protocol speeds are read: the OsmAnd app sends m/s, Traccar Client’s query form knots.' })),
    save);
  details.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(details);
    const body = {};
    const name = nameInput.value.trim();
    if (!name) {
      showFieldError(nameInput, 'Give the vehicle a name.');
      nameInput.focus();
      return;
    }
    if (name !== entry.vehicle.name) body.name = name;
    if (unitSelect.value !== entry.vehicle.speed_unit) body.speed_unit = unitSelect.value;
    if (Object.keys(body).length === 0) return;
    await busy(save, async () => {
      try {
        updated(entry, await api(`/vehicles/${id}`, { method: 'PATCH', body }));
      } catch (e) {
        showApiError(details, e, { fields: { name: nameInput, speed_unit: unitSelect }, fallback: 'The vehicle was not changed.' });
      }
    });
  });

  // The ingest token.
  const rotate = el('button', { className: 'button', text: 'Rotate token', attrs: { type: 'button', 'data-action': 'rotate' } });
  const revoke = el('button', { className: 'button button--danger', text: 'Revoke token', attrs: { type: 'button', 'data-action': 'revoke' } });
  const tokenGroup = el('div', { className: 'manage__group', attrs: { 'data-group': 'token' } },
    el('h3', { className: 'manage__title', text: 'Ingest token' }),
    el('p', { className: 'muted', text: 'Shown only when it is made. Rotating makes a new one and stops the old; revoking locks the device out until the token is rotated.' }),
    el('div', { className: 'manage__buttons' }, rotate, revoke),
    el('p', { className: 'notice manage__done', attrs: { role: 'status' }, text: '' }));
  const tokenDone = tokenGroup.querySelector('.manage__done');
  tokenDone.hidden = true;
  rotate.addEventListener('click', async () => {
    const ok = await confirmAction({ title: `Rotate the token of ${entry.vehicle.name}?`, message: 'The device stops posting until it is set up with the new token, shown next.', confirm: 'Rotate token' });
    if (!ok) return;
    clearErrors(tokenGroup);
    await busy(rotate, async () => {
      try {
        const reply = await api(`/vehicles/${id}/token`, { method: 'POST' });
        tokenDone.hidden = true;
        showToken(entry.vehicle, reply.ingest_token, trackerFor(entry.vehicle), 'rotated');
      } catch (e) {
        showApiError(tokenGroup, e, { fallback: 'The token was not rotated.' });
      }
    });
  });
  revoke.addEventListener('click', async () => {
    const ok = await confirmAction({ title: `Revoke the token of ${entry.vehicle.name}?`, message: 'Its device is locked out at once; nothing it posts is stored until you rotate the token and set the device up again.', confirm: 'Revoke token' });
    if (!ok) return;
    clearErrors(tokenGroup);
    await busy(revoke, async () => {
      try {
        await api(`/vehicles/${id}/token`, { method: 'DELETE' });
        tokenDone.textContent = 'Token revoked: the device is locked out until the token is rotated.';
        tokenDone.hidden = false;
      } catch (e) {
        showApiError(tokenGroup, e, { fallback: 'The token was not revoked.' });
      }
    });
  });

  // Retiring and reinstating.
  const service = el('button', { className: 'button', attrs: { type: 'button', 'data-action': 'service' } });
  const serviceText = el('p', { className: 'muted manage__service-text' });
  const serviceGroup = el('div', { className: 'manage__group', attrs: { 'data-group': 'service' } },
    el('h3', { className: 'manage__title', text: 'Service' }), serviceText, el('div', { className: 'manage__buttons' }, service));
  service.addEventListener('click', async () => {
    const retiring = statusOf(entry.vehicle) !== 'retired';
    if (retiring) {
      const ok = await confirmAction({
        title: `Retire ${entry.vehicle.name}?`,
        message: 'Its token stops working and it leaves the fleet map. Its history (positions, tracks, alerts) stays, and it can be reinstated.',
        confirm: 'Retire vehicle',
      });
      if (!ok) return;
    }
    clearErrors(serviceGroup);
    await busy(service, async () => {
      try {
        updated(entry, await api(`/vehicles/${id}`, { method: 'PATCH', body: { status: retiring ? 'retired' : 'active' } }));
      } catch (e) {
        showApiError(serviceGroup, e, { fallback: retiring ? 'The vehicle was not retired.' : 'The vehicle was not reinstated.' });
      }
    });
  });

  const alertsBox = el('div', { className: 'manage__group', attrs: { 'data-group': 'alerts' } },
    el('h3', { className: 'manage__title', text: 'Alert settings for this vehicle' }),
    el('p', { className: 'muted', text: isAdmin ? 'Tick “Own value” to set a rule otherwise for this vehicle; the rest follow the organisation’s settings.' : 'The rules in force for this vehicle. Only an admin changes them.' }));
  box.append(details, tokenGroup, serviceGroup, alertsBox);
  renderManage(entry);
  mountAlertSettings(entry, alertsBox);
}

function renderManage(entry) {
  const box = entry.detail;
  if (!box) return;
  const retired = statusOf(entry.vehicle) === 'retired';
  const service = box.querySelector('[data-action="service"]');
  service.textContent = retired ? 'Reinstate' : 'Retire vehicle';
  service.classList.toggle('button--danger', !retired);
  box.querySelector('.manage__service-text').textContent = retired
    ? `Retired ${entry.vehicle.retired_at ? formatClock(entry.vehicle.retired_at, { seconds: false }) : ''}. Reinstating lets its current token post again (rotate it if the device is no longer trusted).`
    : 'Retire a vehicle that leaves the fleet: its token stops working, its history stays.';
}

function updated(entry, vehicle) {
  // A PATCH reply may leave out the last position the list already shows.
  entry.vehicle = { ...entry.vehicle, ...vehicle, last_position: vehicle.last_position ?? entry.vehicle.last_position };
  renderRow(entry);
}

function trackerFor(v) {
  return v.speed_unit === 'mps' ? 'osmand' : 'traccar';
}

async function mountAlertSettings(entry, box) {
  const id = entry.vehicle.id;
  const form = el('form', { className: 'settings', attrs: { novalidate: true, 'data-form': 'alerts' } });
  const fields = el('div', {}, el('p', { className: 'muted', text: 'Loading…' }));
  form.append(fields);
  box.append(form);
  let settingsForm;
  try {
    const [schemas, own, org] = await Promise.all([settingsSchemas(), api(`/vehicles/${id}/alert-settings`), api('/settings')]);
    settingsForm = new SettingsForm(fields, schemas, { sections: ['alerts'], mode: 'override', readOnly: !isAdmin, idPrefix: `vehicle-${id}` });
    settingsForm.set({ alerts: own.overrides }, { alerts: org.alerts });
  } catch (e) {
    fields.replaceChildren();
    showApiError(form, e, { fallback: 'The alert settings could not be loaded.' });
    return;
  }
  if (!isAdmin) return;
  const save = el('button', { className: 'button button--primary', text: 'Save alert settings', attrs: { type: 'submit' } });
  const status = el('span', { className: 'muted', attrs: { role: 'status', 'aria-live': 'polite' } });
  form.append(el('div', { className: 'settings__actions' }, save, status));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form);
    status.textContent = '';
    const { body, errors } = settingsForm.overrides();
    if (errors.length) {
      for (const [path, message] of errors) showFieldError(settingsForm.inputFor(path), message);
      settingsForm.inputFor(errors[0][0]).focus();
      return;
    }
    await busy(save, async () => {
      try {
        const reply = await api(`/vehicles/${id}/alert-settings`, { method: 'PUT', body });
        const org = await api('/settings');
        settingsForm.set({ alerts: reply.overrides }, { alerts: org.alerts });
        status.textContent = 'Saved.';
      } catch (e) {
        showApiError(form, e, { fields: (field) => settingsForm.inputFor(field), fallback: 'The alert settings were not saved.' });
      }
    });
  });
}

// ---- live ----

connectLive({
  topics: ['fleet'],
  onHello: (frame) => setServerTime(frame.server_time),
  onSnapshot: (topic, snapshot) => {
    if (topic !== 'fleet') return;
    for (const v of snapshot.vehicles || []) if (v.last_position) applyPosition(v.last_position);
  },
  onEvent: (frame) => {
    if (frame.type === 'position' && frame.data) applyPosition(frame.data);
    if (frame.type === 'vehicle' && frame.data) applyVehicle(frame.data);
  },
  onRefused: goToSignIn,
  checkAuth: stillSignedIn,
});

load();
