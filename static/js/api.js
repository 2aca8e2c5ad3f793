// A thin wrapper over fetch for the JSON API under /api/v1.

/**
 * An answer that was not 2xx: `status`, and the API's error `code`, `message`, and for a
 * validation error the `field` and batch `index`, when given.
 */
export class ApiError extends Error {
  constructor(status, code, message, field, index) {
    super(message || `HTTP ${status}`);
    this.status = status;
    this.code = code || null;
    this.field = field ?? null;
    this.index = index ?? null;
  }
}

/**
 * Call `/api/v1{path}`. Options: `method`, `body` (sent as JSON), and `share` (a share token,
 * appended as `?share=`). Resolves to the parsed JSON (or null for an empty body); rejects with
 * an ApiError, or a TypeError when the network failed.
 */
export async function api(path, { method = 'GET', body, share } = {}) {
  let url = `/api/v1${path}`;
  if (share) url += `${url.includes('?') ? '&' : '?'}share=${encodeURIComponent(share)}`;
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url, init);
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(res.status, err.code, err.message, err.field, err.index);
  }
  return data;
}

/** Sign out and go to the sign-in page, whatever the server answered. */
export async function signOut() {
  try {
    await api('/auth/logout', { method: 'POST' });
  } catch (e) {
    console.warn('sign-out failed', e);
  }
  window.location.assign('/');
}

/**
 * Whether the session still holds (a live socket's `checkAuth`): false only when the API says
 * it does not; a network failure is not a lapsed session.
 */
export async function stillSignedIn() {
  try {
    await api('/auth/me');
    return true;
  } catch (e) {
    return !(e instanceof ApiError && e.status === 401);
  }
}

/**
 * When `e` is the API saying the session lapsed (a `401`), go to the sign-in page and return
 * true; false for any other failure, which the caller shows.
 */
export function goToSignInIfLapsed(e) {
  if (!(e instanceof ApiError && e.status === 401)) return false;
  goToSignIn();
  return true;
}

/** The sign-in page, asking it to come back here afterwards. */
export function goToSignIn() {
  const next = window.location.pathname + window.location.search;
  window.location.assign(`/?next=${encodeURIComponent(next)}`);
}
