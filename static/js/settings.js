// The Settings page: the organisation's position filter, alert rules, trips and stops, and how
// reports speak (`GET`/`PATCH /settings`), as a form generated from the API's schema. Admins change them; a save sends only
// the keys changed, and a refusal is shown at its key with the API's own message. Dispatchers
// read them.

import { api } from './api.js';
import { busy, clearErrors, showApiError, showFieldError } from './forms.js';
import { SettingsForm, settingsSchemas } from './settings-form.js';

const $ = (id) => document.getElementById(id);
const isAdmin = document.body.dataset.role === 'admin';
const formEl = $('settings-form');
const statusEl = $('settings-status');

async function start() {
  let schemas;
  let settings;
  try {
    [schemas, settings] = await Promise.all([settingsSchemas(), api('/settings')]);
  } catch (e) {
    $('settings-loading').remove();
    showApiError(formEl, e, { fallback: 'The settings could not be loaded.' });
    return;
  }
  const form = new SettingsForm($('settings-fields'), schemas, {
    sections: ['filter', 'alerts', 'trips', 'reports'],
    readOnly: !isAdmin,
  });
  form.set(settings);
  $('settings-read-only').hidden = isAdmin;
  $('settings-actions').hidden = !isAdmin;
  formEl.dataset.ready = 'true';

  formEl.addEventListener('submit', async (event) => {
    event.preventDefault();
    if (!isAdmin) return;
    clearErrors(formEl);
    statusEl.textContent = '';
    const { patch, errors } = form.changes();
    if (errors.length) {
      for (const [path, message] of errors) showFieldError(form.inputFor(path), message);
      form.inputFor(errors[0][0]).focus();
      return;
    }
    if (Object.keys(patch).length === 0) {
      statusEl.textContent = 'Nothing changed.';
      return;
    }
    await busy($('settings-save'), async () => {
      try {
        const now = await api('/settings', { method: 'PATCH', body: patch });
        form.set(now);
        statusEl.textContent = 'Saved.';
      } catch (e) {
        showApiError(formEl, e, { fields: (field) => form.inputFor(field), fallback: 'The settings were not saved.' });
      }
    });
  });
}

start();
