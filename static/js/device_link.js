// The page a driver's device link opens: one tap signs this phone in as the driver. The link is
// redeemed by that tap (a POST), not by opening the page, so a chat app's link preview cannot
// use it up.
import { api } from './api.js';

const form = document.getElementById('link-form');
const error = document.getElementById('link-error');
const button = document.getElementById('link-open');

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  button.disabled = true;
  error.hidden = true;
  try {
    await api('/auth/device-link', { method: 'POST', body: { code: form.dataset.code } });
    window.location.replace('/driver');
  } catch (e) {
    error.textContent =
      e.status === 401
        ? 'This link was already used or has expired. Ask dispatch for a new one.'
        : 'Could not reach Waymark. Check the connection and try again.';
    error.hidden = false;
    button.disabled = false;
  }
});
