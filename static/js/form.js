// Forms on the console pages: the API's refusals shown next to the field they name, and
// nothing typed lost. A field's wrapper carries `data-field="<the API's field name>"` and holds
// a `.field-error` element; the form has one `.form-error` for what names no field.

import { ApiError, goToSignIn } from './api.js';

/** Clear every error shown in `form`. */
export function clearErrors(form) {
  for (const el of form.querySelectorAll('.field-error, [data-form-error]')) {
    el.textContent = '';
    el.hidden = true;
  }
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
}

/** The wrapper of the API field `name` (`circle.radius_m` falls back to `circle`). */
function fieldWrapper(form, name) {
  let key = name;
  while (key) {
    const el = form.querySelector(`[data-field~="${CSS.escape(key)}"]`);
    if (el) return el;
    const dot = key.lastIndexOf('.');
    key = dot > 0 ? key.slice(0, dot) : '';
  }
  return null;
}

/**
 * Show `message` next to the field the API named (`field`), or in the form's general error
 * when no field of the form matches. Focuses the field's first control. Returns the wrapper
 * it was shown in, or null.
 */
export function showFieldError(form, field, message) {
  const wrapper = field ? fieldWrapper(form, field) : null;
  const target = wrapper ? wrapper.querySelector('.field-error') : form.querySelector('[data-form-error]');
  if (target) {
    target.textContent = message;
    target.hidden = false;
  }
  if (wrapper) {
    const control = wrapper.querySelector('input, select, textarea');
    if (control) {
      control.setAttribute('aria-invalid', 'true');
      control.focus({ preventScroll: false });
    }
  }
  return wrapper;
}

/**
 * Show a failed call's error in `form`: a validation error next to its field; `conflictField`
 * picks a field for a `409` from its message (the API names none); anything else in the
 * general error. A lapsed session goes to the sign-in. Returns the field it was shown at.
 */
export function showApiError(form, e, { conflictField = () => null } = {}) {
  if (e instanceof ApiError && e.status === 401) {
    goToSignIn();
    return null;
  }
  if (!(e instanceof ApiError)) {
    showFieldError(form, null, 'The server could not be reached. Nothing was lost: try again.');
    return null;
  }
  const field = e.field || (e.status === 409 ? conflictField(e.message) : null);
  showFieldError(form, field, e.message);
  return field;
}
