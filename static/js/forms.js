// What the console's forms share: errors shown next to the field they belong to (the API's
// `field`), a form-wide error otherwise, and a busy submit button. Nothing here clears what the
// person typed: a refused form keeps its values.

import { ApiError, goToSignIn } from './api.js';

/** The message element under `input`, made on first use and tied to it for screen readers. */
function errorElement(input) {
  const id = `${input.id}-error`;
  let el = document.getElementById(id);
  if (!el) {
    el = document.createElement('p');
    el.className = 'field-error';
    el.id = id;
    el.setAttribute('role', 'alert');
    const holder = input.closest('.field, .setting') || input.parentElement;
    holder.append(el);
    const described = (input.getAttribute('aria-describedby') || '').split(' ').filter(Boolean);
    input.setAttribute('aria-describedby', [...described, id].join(' '));
  }
  return el;
}

/** Show `message` next to `input` and mark it invalid. */
export function showFieldError(input, message) {
  const el = errorElement(input);
  el.textContent = message;
  el.hidden = false;
  input.setAttribute('aria-invalid', 'true');
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
  let el = form.querySelector(':scope > .form-error, .form-error[data-form-wide]');
  if (!el) {
    el = document.createElement('p');
    el.className = 'form-error';
    el.dataset.formWide = '';
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

/** What a person reads for a failed call. */
export function errorText(e, fallback) {
  if (e instanceof ApiError) return e.message || fallback;
  return 'The server cannot be reached. Nothing was changed; try again.';
}

/**
 * Show a failed call's error: at the field the API named (`fields` maps the API's field names
 * to inputs; a function or an object), else for the whole form. A lapsed session goes to the
 * sign-in page. Focuses the field at fault.
 */
export function showApiError(form, e, fields = {}, fallback = 'That did not work.') {
  if (e instanceof ApiError && e.status === 401) {
    goToSignIn();
    return;
  }
  const lookup = typeof fields === 'function' ? fields : (name) => fields[name];
  const input = e instanceof ApiError && e.field != null ? lookup(e.field) : null;
  if (input) {
    showFieldError(input, errorText(e, fallback));
    input.focus();
  } else {
    showFormError(form, errorText(e, fallback));
  }
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

/** Copy `text` to the clipboard; says so on `button` for a moment. */
export async function copyText(text, button) {
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = 'Copied';
  } catch {
    button.textContent = 'Select and copy';
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

let dialog = null;

/**
 * Ask before something that cannot simply be undone. A modal `<dialog>` (Escape cancels, the
 * focus stays inside it); resolves to true when confirmed.
 */
export function confirmAction({ title, message, confirm }) {
  if (!dialog) {
    dialog = el('dialog', { className: 'confirm', attrs: { id: 'confirm-dialog', 'aria-labelledby': 'confirm-title', 'aria-describedby': 'confirm-message' } });
    const form = el('form', { attrs: { method: 'dialog' } },
      el('h2', { className: 'confirm__title', attrs: { id: 'confirm-title' } }),
      el('p', { className: 'confirm__message', attrs: { id: 'confirm-message' } }),
      el('div', { className: 'confirm__actions' },
        el('button', { className: 'button', text: 'Cancel', attrs: { id: 'confirm-cancel', value: 'cancel', type: 'submit' } }),
        el('button', { className: 'button button--danger', attrs: { id: 'confirm-ok', value: 'ok', type: 'submit' } })));
    dialog.append(form);
    document.body.append(dialog);
  }
  dialog.querySelector('#confirm-title').textContent = title;
  dialog.querySelector('#confirm-message').textContent = message;
  dialog.querySelector('#confirm-ok').textContent = confirm;
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
