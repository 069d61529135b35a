/**
 * The dashboard at `GET /`: one self-contained page (no external assets).
 * It asks for a token (kept in sessionStorage only), refreshes a per-table
 * health table from `/api/admin/health` every few seconds, and lists live
 * events from `/api/events` through EventSource (opened with a one-time
 * ticket, since EventSource cannot send an Authorization header). All data
 * is written with `textContent`, never as HTML; a Content-Security-Policy
 * allows only this page's own inline script (by hash) and same-origin fetches.
 */
import { createHash } from 'node:crypto';
import { BACKUP_EVENTS } from '../bus/subjects';
import { PUSH_HTML, PUSH_SCRIPT } from './push-page';

const SCRIPT = `
'use strict';
const EVENTS = ${JSON.stringify(BACKUP_EVENTS)};
const KEY = 'tablekeeper.token';
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem(KEY) || '';
let source = null;
let retry = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function bytes(n) {
  if (typeof n !== 'number') return '';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i === 0 ? 0 : 1) + ' ' + u[i];
}
function ago(at) {
  const t = Date.parse(at);
  if (Number.isNaN(t)) return '';
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 120) return s + ' s ago';
  if (s < 7200) return Math.round(s / 60) + ' min ago';
  if (s < 172800) return Math.round(s / 3600) + ' h ago';
  return Math.round(s / 86400) + ' d ago';
}
function say(text, bad) {
  const s = $('status');
  s.textContent = text;
  s.className = bad ? 'bad' : '';
}
async function api(path, init) {
  const res = await fetch(path, Object.assign({}, init, { headers: { authorization: 'Bearer ' + token } }));
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((body.error && body.error.message) || res.status + ' ' + res.statusText);
  return body;
}
async function refresh() {
  if (!token) { say('Enter a token to see the tables.', true); return; }
  try {
    const h = await api('/api/admin/health');
    const rows = $('tables');
    rows.replaceChildren();
    for (const t of h.tables || []) {
      const s = t.stats && typeof t.stats.records === 'number' ? t.stats : null;
      const tr = el('tr');
      tr.append(
        el('td', t.table),
        el('td', t.state, t.state === 'serving' ? 'ok' : 'bad'),
        el('td', s ? s.records : (t.stats && t.stats.error ? t.stats.error.code : '')),
        el('td', s ? bytes(s.fileBytes) : ''),
        el('td', s ? (s.fragmentation * 100).toFixed(1) + ' %' : ''),
        el('td', t.lastBackup ? ago(t.lastBackup.at) : 'never', t.lastBackup ? '' : 'warn'),
        el('td', t.backups),
        el('td', t.lastCompaction ? ago(t.lastCompaction.at) + ' (' + t.lastCompaction.result + ')' : ''),
        el('td', typeof t.restarts === 'number' ? t.restarts : ''),
        el('td', t.degraded ? 'degraded' : '', t.degraded ? 'bad' : ''),
      );
      rows.append(tr);
    }
    const next = h.nextRuns || {};
    say('Status: ' + h.status + ' \\u00b7 next backup ' + (next.backup || '-') + ' \\u00b7 next compaction ' + (next.compaction || '-') +
      ' \\u00b7 updated ' + new Date().toLocaleTimeString(), h.status !== 'ok');
  } catch (e) {
    say('Health: ' + e.message, true);
  }
}
function summary(name, d) {
  if (d.table) return d.table + (d.error ? ': ' + d.error.message : '');
  if (Array.isArray(d.tables)) return d.tables.map((t) => t.table).join(', ');
  if (Array.isArray(d.results)) return d.results.map((r) => r.table + ' ' + r.status).join(', ');
  return '';
}
function addEvent(name, text) {
  let d = {};
  try { d = JSON.parse(text); } catch (e) { d = {}; }
  const li = el('li', null, /failed|corruption/.test(name) ? 'bad' : '');
  li.append(el('time', new Date(d.at || Date.now()).toLocaleTimeString()), el('b', name), el('span', summary(name, d)));
  const list = $('events');
  list.prepend(li);
  while (list.children.length > 100) list.lastChild.remove();
}
async function connect() {
  if (source) { source.close(); source = null; }
  clearTimeout(retry);
  if (!token) return;
  try {
    const t = await api('/api/events/ticket', { method: 'POST' });
    source = new EventSource('/api/events?ticket=' + encodeURIComponent(t.ticket));
    source.onopen = () => { $('live').textContent = 'live'; };
    for (const name of EVENTS) source.addEventListener(name, (ev) => addEvent(name, ev.data));
    // A ticket works once, so reconnect with a new one rather than let EventSource retry.
    source.onerror = () => { $('live').textContent = 'reconnecting'; source.close(); source = null; retry = setTimeout(connect, 3000); };
  } catch (e) {
    $('live').textContent = 'events: ' + e.message;
    retry = setTimeout(connect, 10000);
  }
}
$('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  token = $('token').value.trim();
  $('token').value = '';
  if (token) sessionStorage.setItem(KEY, token); else sessionStorage.removeItem(KEY);
  refresh();
  connect();
});
$('forget').addEventListener('click', () => {
  token = '';
  sessionStorage.removeItem(KEY);
  $('tables').replaceChildren();
  if (source) source.close();
  say('Token forgotten.', true);
});
refresh();
connect();
setInterval(refresh, 5000);
`;

const STYLE = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.3rem; margin: 0 0 1rem; }
form { margin-bottom: 1rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1.5rem; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #ddd; }
th { background: #f4f4f4; }
.ok { color: #176b2c; } .bad { color: #b00020; font-weight: 600; } .warn { color: #8a5a00; }
#events { list-style: none; padding: 0; font-family: ui-monospace, monospace; font-size: 12px; }
#events li { padding: .2rem 0; border-bottom: 1px solid #eee; }
#events time { color: #666; margin-right: .8rem; } #events b { margin-right: .8rem; }
`;

const PAGE_SCRIPT = SCRIPT + PUSH_SCRIPT;

const sha256 = (text: string): string => createHash('sha256').update(text, 'utf8').digest('base64');

/** The dashboard's HTML. */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tablekeeper</title>
<style>${STYLE}</style>
</head>
<body>
<h1>Tablekeeper</h1>
<form id="token-form" autocomplete="off">
  <label>Token <input id="token" type="password" size="48" placeholder="admin or read-only token"></label>
  <button type="submit">Use token</button>
  <button type="button" id="forget">Forget token</button>
</form>
<p id="status"></p>
${PUSH_HTML}
<table>
  <thead><tr><th>table</th><th>state</th><th>records</th><th>file</th><th>fragmentation</th><th>last backup</th>
  <th>backups</th><th>last compaction</th><th>restarts</th><th>degraded</th></tr></thead>
  <tbody id="tables"></tbody>
</table>
<h2>Events <small id="live"></small></h2>
<ul id="events"></ul>
<script>${PAGE_SCRIPT}</script>
</body>
</html>
`;

/** Headers sent with the dashboard: only its own script and style run, and only same-origin requests go out. */
export const DASHBOARD_HEADERS: Readonly<Record<string, string>> = {
  'content-type': 'text/html; charset=utf-8',
  'content-security-policy': [
    "default-src 'none'",
    `script-src 'sha256-${sha256(PAGE_SCRIPT)}'`,
    "worker-src 'self'",
    `style-src 'sha256-${sha256(STYLE)}'`,
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; '),
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};
