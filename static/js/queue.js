// The driver page's outbox: every fix is written to IndexedDB before anything tries to send it,
// so fixes survive lost signal, reloads, a killed tab and a browser restart. Fixes are keyed by
// their time in milliseconds, so the store reads back oldest first and a fix delivered twice by
// the browser is kept once. The server is idempotent on (vehicle, time), so a batch re-sent
// after an answer that never arrived is stored once too.

const STORE = 'fixes';

function promised(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onabort = () => reject(tx.error);
    tx.onerror = () => reject(tx.error);
  });
}

export class FixQueue {
  /** The queue of one signed-in user (a shared phone keeps each driver's fixes apart). */
  static async open(userId) {
    const request = indexedDB.open(`waymark-driver-${userId}`, 1);
    request.onupgradeneeded = () => {
      request.result.createObjectStore(STORE, { keyPath: 't' });
    };
    return new FixQueue(await promised(request));
  }

  constructor(db) {
    this.db = db;
  }

  /** Stores a fix `{t, shipment, lat, lon, …}`; resolves once it is durable. */
  async add(fix) {
    const tx = this.db.transaction(STORE, 'readwrite', { durability: 'strict' });
    tx.objectStore(STORE).put(fix);
    await done(tx);
  }

  /** Up to `limit` of the oldest fixes. */
  async oldest(limit) {
    const tx = this.db.transaction(STORE, 'readonly');
    return promised(tx.objectStore(STORE).getAll(null, limit));
  }

  /** Forgets the fixes with these times (they were stored by the server). */
  async remove(times) {
    if (!times.length) return;
    const tx = this.db.transaction(STORE, 'readwrite');
    const store = tx.objectStore(STORE);
    for (const t of times) store.delete(t);
    await done(tx);
  }

  async count() {
    const tx = this.db.transaction(STORE, 'readonly');
    return promised(tx.objectStore(STORE).count());
  }
}
