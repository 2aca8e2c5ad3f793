// What the console's forms share: errors shown next to the field they belong to (the API's
// `field`), a form-wide error otherwise, a busy submit button, a copy button, and a
// confirmation asked in a modal dialog. Nothing here clears what the person typed: a refused
// form keeps its values.
//
// A field is found by its control, or by the API's name for it: a wrapper carrying
// `data-field="<the API's field name>"` (several names may share one wrapper). Its message goes
// in the wrapper's `.field-error`, made on first use.

import { ApiError, goToSignInIfLapsed } from './api.js';
import { statusLabel } from './format.js';

/** The element holding `input`'s label, control and message. */
function fieldHolder(input) {
  return input.closest('[data-field]') || input.closest('.field, .setting') || input.parentElement;
}

/** The message element of `input`'s field, made on first use and tied to it for screen readers. */
function errorElement(input) {
  const holder = fieldHolder(input);
  let el = holder.querySelector(':scope > .field-error');
  if (!el) {
    el = document.createElement('p');
    el.className = 'field-error';
    el.setAttribute('role', 'alert');
    holder.append(el);
  }
  if (!el.id && input.id) el.id = `${input.id}-error`;
  const described = (input.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
  if (el.id && !described.includes(el.id)) input.setAttribute('aria-describedby', [...described, el.id].join(' '));
  return el;
}

/** Show `message` next to `input` and mark it invalid. */
export function showFieldError(input, message) {
  const el = errorElement(input);
  el.textContent = message;
  el.hidden = false;
  input.setAttribute('aria-invalid', 'true');
}

/**
 * The control of the API's field `name` in `form`: the first control in the wrapper
 * `[data-field~="name"]`, the wrapper of `circle.radius_m` falling back to that of `circle`.
 * Null when the form has no such field.
 */
export function fieldInput(form, name) {
  let key = String(name);
  while (key) {
    const wrapper = form.querySelector(`[data-field~="${CSS.escape(key)}"]`);
    if (wrapper) return wrapper.querySelector('input, select, textarea');
    const dot = key.lastIndexOf('.');
    key = dot > 0 ? key.slice(0, dot) : '';
  }
  return null;
}

/** Clear every field error and the form-wide error inside `root`. */
export function clearErrors(root) {
  for (const el of root.querySelectorAll('.field-error, .form-error')) {
    el.textContent = '';
    el.hidden = true;
  }
  for (const el of root.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
}

/** The form-wide error element of `form` (`.form-error`), made on first use. */
function formErrorElement(form) {
  let el = form.querySelector(':scope > .form-error, .form-error[data-form-error]');
  if (!el) {
    el = document.createElement('p');
    el.className = 'form-error';
    el.dataset.formError = '';
    el.setAttribute('role', 'alert');
    form.append(el);
  }
  return el;
}

/** Show `message` for the whole form. */
export function showFormError(form, message) {
  const el = formErrorElement(form);
  el.textContent = message;
  el.hidden = false;
}

/**
 * Show `message` at the API's field `name` of `form` and focus it, or for the whole form when
 * the form has no such field (or `name` is null). Returns `name` when shown at the field.
 */
export function showErrorAt(form, name, message) {
  const input = name != null ? fieldInput(form, name) : null;
  if (!input) {
    showFormError(form, message);
    return null;
  }
  showFieldError(input, message);
  input.focus();
  return name;
}

/** What a person reads for a failed call. */
export function errorText(e, fallback = 'That did not work.') {
  if (e instanceof ApiError) return e.message || fallback;
  return 'The server cannot be reached. Nothing was changed; try again.';
}

/**
 * The field a `409` is about, which the API does not name: the first `data-field` of `form`
 * whose name its message speaks of ("this vehicle already has…" is `vehicle_id`'s).
 */
function conflictGuess(form, message) {
  const text = ` ${String(message).toLowerCase().replace(/[^a-z0-9]+/g, ' ')} `;
  for (const wrapper of form.querySelectorAll('[data-field]')) {
    for (const name of wrapper.dataset.field.split(/\s+/).filter(Boolean)) {
      const words = name.replace(/_ids?$/, '').replace(/[._]+/g, ' ');
      if (text.includes(` ${words} `)) return name;
    }
  }
  return null;
}

/**
 * Show a failed call's error in `form`: at the field the API named, else for the whole form.
 * `fields` maps the API's field names to inputs (an object or a function); a name it does not
 * map is looked up as a `data-field` wrapper. A `409` names no field: `conflictField(message)`
 * picks one (by default the form's field its message speaks of). A lapsed session goes to the
 * sign-in page. Focuses the field at fault and returns the API's name for it, or null.
 */
export function showApiError(form, e, { fields = {}, conflictField = (m) => conflictGuess(form, m), fallback } = {}) {
  if (goToSignInIfLapsed(e)) return null;
  const message = errorText(e, fallback);
  let name = null;
  if (e instanceof ApiError) name = e.field ?? (e.status === 409 ? conflictField(e.message) : null);
  const lookup = typeof fields === 'function' ? fields : (key) => fields[key];
  const input = name != null ? lookup(name) : null;
  if (!input) return showErrorAt(form, name, message);
  showFieldError(input, message);
  input.focus();
  return name;
}

/** Run `action` with `button` disabled (and marked busy), whatever it does. */
export async function busy(button, action) {
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    return await action();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

/**
 * Copy `text` to the clipboard; says so on `button` for a moment. When the browser refuses,
 * `select` (the input showing the text) is selected for the person to copy by hand.
 */
export async function copyText(text, button, { select } = {}) {
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = 'Copied';
  } catch {
    button.textContent = 'Select and copy';
    if (select) select.select();
  }
  window.setTimeout(() => {
    button.textContent = label;
  }, 1500);
}

/** `document.createElement(tag)` with a class, text and attributes. */
export function el(tag, { className, text, attrs } = {}, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  if (attrs) for (const [k, v] of Object.entries(attrs)) if (v != null && v !== false) node.setAttribute(k, v === true ? '' : String(v));
  node.append(...children);
  return node;
}

/** A `<select>`'s option for a vehicle (a retired one says so). */
export function vehicleOption(v) {
  return new Option(v.status === 'retired' ? `${v.name} (retired)` : v.name, String(v.id));
}

/** A `<select>`'s option for a driver. */
export function driverOption(u) {
  return new Option(u.email, String(u.id));
}

/** A `<select>`'s option for a shipment: its reference and status. */
export function shipmentOption(s) {
  return new Option(`${s.reference} (${statusLabel(s.status)})`, String(s.id));
}

let dialog = null;

/**
 * Ask before something that cannot simply be undone: a modal `<dialog>` (Escape or the
 * `cancel` button says no, the focus stays inside it and returns where it was); resolves to
 * true when the person presses the `confirm` button.
 */
export function confirmAction({ title, message = '', confirm = 'Confirm', cancel = 'Cancel' }) {
  if (!dialog) {
    dialog = el('dialog', { className: 'dialog', attrs: { id: 'confirm-dialog', 'aria-labelledby': 'confirm-title', 'aria-describedby': 'confirm-message' } });
    dialog.append(el('form', { className: 'dialog__form', attrs: { method: 'dialog' } },
      el('h2', { className: 'dialog__title', attrs: { id: 'confirm-title' } }),
      el('p', { className: 'dialog__message', attrs: { id: 'confirm-message' } }),
      el('div', { className: 'dialog__actions' },
        el('button', { className: 'button', attrs: { id: 'confirm-cancel', value: 'cancel', type: 'submit' } }),
        el('button', { className: 'button button--danger', attrs: { id: 'confirm-ok', value: 'ok', type: 'submit' } }))));
    document.body.append(dialog);
  }
  dialog.querySelector('#confirm-title').textContent = title;
  const text = dialog.querySelector('#confirm-message');
  text.textContent = message;
  text.hidden = !message;
  dialog.querySelector('#confirm-ok').textContent = confirm;
  dialog.querySelector('#confirm-cancel').textContent = cancel;
  dialog.returnValue = '';
  const opener = document.activeElement;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      if (opener && opener.isConnected) opener.focus();
      resolve(dialog.returnValue === 'ok');
    }, { once: true });
    dialog.showModal();
    dialog.querySelector('#confirm-cancel').focus();
  });
}
