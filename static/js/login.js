// The sign-in page: posts the form as JSON and goes to the page for the user's role.

import { api } from './api.js';

const form = document.getElementById('login-form');
const email = document.getElementById('email');
const password = document.getElementById('password');
const button = document.getElementById('sign-in');
const errorEl = document.getElementById('login-error');

/** Where a user of `role` lands; a same-site `?next=` path wins for staff. */
function landingFor(role) {
  if (role === 'driver') return '/driver';
  const next = new URLSearchParams(window.location.search).get('next') || '';
  if (next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/\\')) return next;
  return '/dispatch';
}

function showError(message) {
  errorEl.textContent = message;
  errorEl.hidden = !message;
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  showError('');
  button.disabled = true;
  button.textContent = 'Signing in…';
  try {
    const reply = await api('/auth/login', {
      method: 'POST',
      body: { email: email.value.trim(), password: password.value },
    });
    window.location.assign(landingFor(reply && reply.user ? reply.user.role : ''));
    return;
  } catch (e) {
    if (e.status === 401) {
      showError('Wrong email or password');
      password.select();
    } else if (e.status === 400) {
      showError(e.message || 'Please check the email and password.');
    } else if (e.status) {
      showError('Sign-in is unavailable right now. Please try again in a moment.');
    } else {
      showError('Cannot reach the server. Check your connection and try again.');
    }
  }
  button.disabled = false;
  button.textContent = 'Sign in';
});

// Already signed in (a valid session cookie)? Offer the way in, but leave the form usable.
api('/auth/me')
  .then((me) => {
    const user = (me && me.user) || me;
    if (!user || !user.email) return;
    document.getElementById('login-session-email').textContent = user.email;
    document.getElementById('login-session-link').href = landingFor(user.role);
    document.getElementById('login-session').hidden = false;
  })
  .catch(() => {});
