/**
 * The dashboard's "Enable notifications" button and the service worker it
 * registers (`GET /push-worker.js`). Kept apart from dashboard.ts, which only
 * appends `PUSH_SCRIPT` to its own script and places `PUSH_HTML`. Browsers
 * offer push only to secure pages: HTTPS, or http://localhost.
 */

/** The button and its status line. */
export const PUSH_HTML = `<p><button type="button" id="push">Enable notifications</button> <span id="push-status"></span></p>`;

/** Appended to the dashboard script: asks permission, subscribes, and saves the subscription (admin token). */
export const PUSH_SCRIPT = `
(() => {
  const button = document.getElementById('push');
  const note = document.getElementById('push-status');
  if (!('serviceWorker' in navigator) || !('PushManager' in window)) {
    button.disabled = true;
    note.textContent = 'Push notifications need a browser that has them and a page on HTTPS or localhost.';
    return;
  }
  const key = (s) => {
    const p = s.replace(/-/g, '+').replace(/_/g, '/');
    return Uint8Array.from(atob(p + '='.repeat((4 - (p.length % 4)) % 4)), (c) => c.charCodeAt(0));
  };
  const call = async (path, body) => {
    const headers = { authorization: 'Bearer ' + (sessionStorage.getItem('tablekeeper.token') || '') };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(path, { method: body === undefined ? 'GET' : 'POST', headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const out = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error((out.error && out.error.message) || String(res.status));
    return out;
  };
  button.addEventListener('click', async () => {
    try {
      if ((await Notification.requestPermission()) !== 'granted') throw new Error('not allowed for this page');
      note.textContent = 'Subscribing...';
      const { publicKey } = await call('/api/push/key');
      await navigator.serviceWorker.register('/push-worker.js');
      const reg = await navigator.serviceWorker.ready;
      const sub = (await reg.pushManager.getSubscription()) || (await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key(publicKey) }));
      await call('/api/push/subscribe', sub.toJSON());
      note.textContent = 'Notifications are on for this browser.';
    } catch (e) {
      note.textContent = 'Notifications: ' + e.message;
    }
  });
})();
`;

/** The service worker: shows each push ({title, body, table, event, at}); a click focuses or opens the dashboard. */
export const PUSH_WORKER_JS = `'use strict';
self.addEventListener('push', (event) => {
  let d = {};
  try { d = event.data ? event.data.json() : {}; } catch (e) { d = { body: event.data ? event.data.text() : '' }; }
  const title = d.title || 'Tablekeeper';
  event.waitUntil(self.registration.showNotification(title, { body: d.body || '', tag: (d.event || 'tablekeeper') + ':' + (d.table || ''), data: d }));
});
self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  event.waitUntil(self.clients.matchAll({ type: 'window' }).then((list) => (list.length > 0 ? list[0].focus() : self.clients.openWindow('/'))));
});
`;

/** Headers of the worker script: plain JavaScript, revalidated so an update reaches browsers. */
export const PUSH_WORKER_HEADERS: Readonly<Record<string, string>> = {
  'content-type': 'text/javascript; charset=utf-8',
  'content-security-policy': "default-src 'none'",
  'x-content-type-options': 'nosniff',
  'cache-control': 'no-cache',
};
