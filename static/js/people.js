// The People page: everyone in the organisation. Admins add dispatchers and drivers, change
// roles, disable and enable people and sign them out everywhere; dispatchers and admins make a
// driver's one-time phone link, shown with its QR code.

import { api, ApiError, goToSignIn, goToSignInIfLapsed } from './api.js';
import { busy, clearErrors, confirmAction, copyText, el, errorText, showApiError, showFieldError } from './forms.js';
import { showPhoneLink } from './qr.js';

const $ = (id) => document.getElementById(id);
const isAdmin = document.body.dataset.role === 'admin';
const me = document.body.dataset.userEmail;

const ROLES = { admin: 'Admin', dispatcher: 'Dispatcher', driver: 'Driver' };

async function load() {
  try {
    const people = await api('/users');
    people.sort((a, b) => a.email.localeCompare(b.email));
    $('people-body').replaceChildren(...people.map(row));
    $('people-table').dataset.ready = 'true';
  } catch (e) {
    if (goToSignInIfLapsed(e)) return;
    $('people-error').textContent = e instanceof ApiError ? e.message : 'The people could not be loaded.';
    $('people-error').hidden = false;
  }
}

function row(user) {
  const tr = el('tr', { className: 'person-row', attrs: { 'data-user-id': user.id } });
  tr.person = user;
  render(tr);
  return tr;
}

/** Build the row's cells from `tr.person`. */
function render(tr) {
  const user = tr.person;
  const id = user.id;
  const self = user.email === me;
  tr.dataset.role = user.role;
  tr.dataset.disabled = String(!!user.disabled);

  const email = el('th', { attrs: { scope: 'row' } }, el('span', { className: 'person-row__email', text: user.email }));
  if (self) email.append(' ', el('span', { className: 'badge', text: 'you' }));

  const roleCell = el('td', { className: 'person-row__role' });
  const actions = el('td', { className: 'table__actions' });
  const error = el('p', { className: 'form-error person-row__error', attrs: { role: 'alert' } });
  error.hidden = true;

  if (isAdmin && !self) {
    const select = el('select', { className: 'input input--compact', attrs: { id: `person-${id}-role`, 'aria-label': `Role of ${user.email}` } },
      ...Object.entries(ROLES).map(([value, label]) => el('option', { text: label, attrs: { value } })));
    select.value = user.role;
    select.addEventListener('change', async () => {
      const ok = await confirmAction({
        title: `Make ${user.email} ${ROLES[select.value].toLowerCase()}?`,
        message: 'A new role signs them out everywhere: they sign in again to work with it.',
        confirm: 'Change role',
      });
      if (ok) change(tr, { role: select.value }, select);
      else select.value = tr.person.role;
    });
    roleCell.append(select);
  } else {
    roleCell.textContent = ROLES[user.role] || user.role;
  }

  const status = el('td', {}, el('span', { className: 'badge person-row__status', text: user.disabled ? 'Disabled' : 'Active', attrs: { 'data-status': user.disabled ? 'disabled' : 'active' } }));

  if (user.role === 'driver' && !user.disabled) {
    const link = el('button', { className: 'button', text: 'Phone link', attrs: { type: 'button', 'data-action': 'phone-link' } });
    link.addEventListener('click', () => phoneLink(tr, link));
    actions.append(link);
  }
  if (isAdmin && !self) {
    const toggle = el('button', { className: user.disabled ? 'button' : 'button button--danger', text: user.disabled ? 'Enable' : 'Disable', attrs: { type: 'button', 'data-action': 'disable' } });
    toggle.addEventListener('click', async () => {
      if (!user.disabled) {
        const ok = await confirmAction({ title: `Disable ${user.email}?`, message: 'They are signed out everywhere at once and cannot sign in until enabled again.', confirm: 'Disable' });
        if (!ok) return;
      }
      change(tr, { disabled: !user.disabled }, toggle);
    });
    actions.append(toggle);
  }
  if (isAdmin || self) {
    const out = el('button', { className: 'button', text: 'Sign out everywhere', attrs: { type: 'button', 'data-action': 'sign-out' } });
    out.addEventListener('click', async () => {
      const ok = await confirmAction({ title: `Sign ${self ? 'yourself' : user.email} out everywhere?`, message: 'Every session ends at once: browsers, and phones signed in with a link.', confirm: 'Sign out everywhere' });
      if (!ok) return;
      await busy(out, async () => {
        try {
          await api(`/users/${id}/sessions`, { method: 'DELETE' });
          if (self) return goToSignIn();
          error.hidden = true;
          out.textContent = 'Signed out';
        } catch (e) {
          rowError(tr, e, 'They were not signed out.');
        }
      });
    });
    actions.append(out);
  }
  actions.append(error);
  tr.replaceChildren(email, roleCell, status, actions);
}

function rowError(tr, e, fallback) {
  if (goToSignInIfLapsed(e)) return;
  const error = tr.querySelector('.person-row__error');
  error.textContent = errorText(e, fallback);
  error.hidden = false;
}

/** PATCH the person; the row shows what the API answered, or its refusal. */
async function change(tr, body, control) {
  await busy(control, async () => {
    try {
      tr.person = await api(`/users/${tr.person.id}`, { method: 'PATCH', body });
      const focusAction = control.dataset.action;
      render(tr);
      const again = focusAction ? tr.querySelector(`[data-action="${focusAction}"]`) : tr.querySelector('select');
      if (again) again.focus();
    } catch (e) {
      if (control.tagName === 'SELECT') control.value = tr.person.role;
      rowError(tr, e, 'Nothing was changed.');
    }
  });
}

async function phoneLink(tr, button) {
  await busy(button, async () => {
    try {
      await showPhoneLink(tr.person.id, `QR code of the phone link for ${tr.person.email}`);
      $('phone-link-for').textContent = `Signs ${tr.person.email}’s phone in once: scan it with the phone’s camera, or send the link.`;
      const panel = $('phone-link-panel');
      panel.hidden = false;
      panel.focus();
      panel.scrollIntoView({ block: 'start' });
    } catch (e) {
      rowError(tr, e, 'The link was not made.');
    }
  });
}

$('phone-link-done').addEventListener('click', () => {
  $('phone-link-panel').hidden = true;
  $('phone-link-qr').replaceChildren();
  $('phone-link-url').value = '';
});
$('phone-link-copy').addEventListener('click', (event) => copyText($('phone-link-url').value, event.currentTarget));

if (isAdmin) {
  $('add-person-section').hidden = false;
  $('add-person').addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    clearErrors(form);
    const email = $('new-person-email');
    const password = $('new-person-password');
    const role = $('new-person-role');
    if (!email.value.trim()) {
      showFieldError(email, 'Enter their email address.');
      email.focus();
      return;
    }
    if (password.value.length < 8) {
      showFieldError(password, 'At least 8 characters.');
      password.focus();
      return;
    }
    await busy($('add-person-button'), async () => {
      try {
        const user = await api('/users', { method: 'POST', body: { email: email.value.trim(), password: password.value, role: role.value } });
        form.reset();
        role.value = user.role;
        const tr = row(user);
        $('people-body').prepend(tr);
        tr.dataset.added = 'true';
      } catch (e) {
        // A taken address (409) belongs to the email field too.
        if (e instanceof ApiError && e.status === 409 && e.field == null) {
          showFieldError(email, e.message);
          email.focus();
          return;
        }
        showApiError(form, e, { fields: { email, password, role }, fallback: 'The person was not added.' });
      }
    });
  });
}

load();
