/**
 * The dashboard at `GET /`: one self-contained page (no external assets).
 * It asks for a token (kept in sessionStorage only), and shows:
 * - a per-table health table from `/api/admin/health` (state, file figures,
 *   last backup and compaction, last scrub and its findings, recoveries,
 *   restarts, degraded mark), refreshed every few seconds;
 * - the recent history from `/api/admin/history` (backups, compactions,
 *   recoveries: time, kind, table, result, duration, bytes), loaded with the
 *   page, so nothing that happened before it opened is missing;
 * - live events from `/api/events` through EventSource (opened with a
 *   one-time ticket, since EventSource cannot send an Authorization
 *   header); each event also refreshes the health and history tables.
 * All data is written with `textContent`, never as HTML; a
 * Content-Security-Policy allows only this page's own inline script (by
 * hash) and same-origin fetches.
 */
import { createHash } from 'node:crypto';
import { BACKUP_EVENTS } from '../bus';
import { PUSH_HTML, PUSH_SCRIPT } from './push-page';

const SCRIPT = `
'use strict';
const EVENTS = ${JSON.stringify(BACKUP_EVENTS)};
const KEY = 'tablekeeper.token';
const HISTORY_ROWS = 50;
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
function ms(n) {
  if (typeof n !== 'number') return '';
  if (n < 1000) return Math.round(n) + ' ms';
  if (n < 120000) return (n / 1000).toFixed(1) + ' s';
  return Math.round(n / 60000) + ' min';
}
function cell(text, cls, title) {
  const td = el('td', text, cls);
  if (title) td.title = title;
  return td;
}
function scrubCell(sc) {
  if (!sc) return cell('never', 'warn');
  if (sc.fileMissing) return cell(ago(sc.at) + ': file missing', 'bad');
  if (sc.damagedRanges > 0) return cell(ago(sc.at) + ': ' + sc.damagedRanges + ' damaged', 'bad', sc.damagedRanges + ' damaged range' + (sc.damagedRanges === 1 ? '' : 's') + ' in ' + sc.records + ' records');
  return cell(ago(sc.at) + ': clean', 'ok', sc.records + ' records, ' + bytes(sc.bytes) + ' in ' + ms(sc.durationMs));
}
function recoveryCell(r) {
  if (!r || typeof r.count !== 'number' || r.count === 0) return cell('none');
  const last = r.last ? 'last ' + ago(r.last.at) + ': ' + r.last.result + (r.last.error ? ', ' + r.last.error : '') : '';
  return cell(r.count + (r.failed ? ' (' + r.failed + ' failed)' : ''), r.last && r.last.result === 'failed' ? 'bad' : 'warn', last);
}
function degradedCell(d) {
  if (!d) return cell('no', 'ok');
  if (typeof d !== 'object') return cell('degraded', 'bad');
  // The reason can be long: it is in the tooltip, and in the history below.
  return cell('since ' + ago(d.since), 'bad', d.reason + (d.quarantined ? '; damaged file kept in ' + d.quarantined : ''));
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
        cell(t.table),
        cell(t.state, t.state === 'serving' ? 'ok' : 'bad'),
        s ? cell(s.records) : cell('-', 'warn', t.stats && t.stats.error ? t.stats.error.code + ': ' + t.stats.error.message : ''),
        cell(s ? bytes(s.fileBytes) : ''),
        cell(s ? (s.fragmentation * 100).toFixed(1) + ' %' : ''),
        cell(t.lastBackup ? ago(t.lastBackup.at) : 'never', t.lastBackup ? '' : 'warn'),
        cell(t.backups),
        cell(t.lastCompaction ? ago(t.lastCompaction.at) + ' (' + t.lastCompaction.result + ')' : 'never'),
        scrubCell(t.scrub),
        recoveryCell(t.recoveries),
        cell(typeof t.restarts === 'number' ? t.restarts : ''),
        degradedCell(t.degraded),
      );
      rows.append(tr);
    }
    const next = h.nextRuns || {};
    say('Status: ' + h.status + ' \u00b7 next backup ' + when(next.backup) + ' \u00b7 next compaction ' + when(next.compaction) +
      ' \u00b7 next scrub ' + when(next.scrub) + ' \u00b7 updated ' + new Date().toLocaleTimeString(), h.status !== 'ok');
  } catch (e) {
    say('Health: ' + e.message, true);
  }
}
function when(at) {
  const t = Date.parse(at);
  return Number.isNaN(t) ? '-' : new Date(t).toLocaleString();
}
function describe(e) {
  const d = e.detail || {};
  if (e.kind === 'recovery') {
    const parts = [d.reason, d.backupUsed ? 'from ' + d.backupUsed : 'no backup used'];
    if (typeof d.recordsLost === 'number') parts.push(d.recordsLost + ' record' + (d.recordsLost === 1 ? '' : 's') + ' lost');
    return parts.filter(Boolean).join(' \u00b7 ');
  }
  if (e.kind === 'compaction') {
    if (e.result === 'skipped') return d.reason || '';
    return typeof d.bytesBefore === 'number' ? bytes(d.bytesBefore) + ' before' : '';
  }
  return d.file || '';
}
async function history() {
  if (!token) return;
  try {
    const h = await api('/api/admin/history?limit=' + HISTORY_ROWS);
    const rows = $('history');
    rows.replaceChildren();
    for (const e of h.entries || []) {
      const tr = el('tr');
      const detail = e.error || describe(e);
      tr.append(
        cell(new Date(e.at).toLocaleString()),
        cell(e.kind),
        cell(e.table),
        cell(e.result, e.result === 'failed' ? 'bad' : e.result === 'ok' ? 'ok' : ''),
        cell(e.trigger),
        cell(ms(e.durationMs)),
        cell(bytes(e.bytes)),
        cell(detail, e.error ? 'bad' : ''),
      );
      rows.append(tr);
    }
    if (!rows.children.length) {
      const none = cell('Nothing recorded yet.');
      none.colSpan = 8;
      const tr = el('tr');
      tr.append(none);
      rows.append(tr);
    }
    $('history-status').textContent = '';
  } catch (e) {
    $('history-status').textContent = 'History: ' + e.message;
  }
}
let pending = null;
// An event changes what health and history show; one refresh covers a burst of events.
function soon() {
  if (pending) return;
  pending = setTimeout(() => { pending = null; refresh(); history(); }, 250);
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
  if (list.firstChild && list.firstChild.classList.contains('empty')) list.replaceChildren();
  list.prepend(li);
  while (list.children.length > 100) list.lastChild.remove();
  soon();
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
  history();
  connect();
});
$('forget').addEventListener('click', () => {
  token = '';
  sessionStorage.removeItem(KEY);
  $('tables').replaceChildren();
  $('history').replaceChildren();
  if (source) source.close();
  say('Token forgotten.', true);
});
refresh();
history();
connect();
setInterval(refresh, 5000);
// Events refresh the history at once; this catches up after a reconnect.
setInterval(history, 30000);
`;

const STYLE = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.3rem; margin: 0 0 1rem; }
h2 { font-size: 1.05rem; margin: 1rem 0 .3rem; } h2 small { font-weight: normal; color: #666; }
form { margin-bottom: 1rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1.5rem; }
th, td { text-align: left; padding: .25rem .45rem; border-bottom: 1px solid #ddd; white-space: nowrap; font-size: 13px; }
th, #history td:last-child { white-space: normal; }
.scroll { overflow-x: auto; }
th { background: #f4f4f4; }
.ok { color: #176b2c; } .bad { color: #b00020; font-weight: 600; } .warn { color: #8a5a00; }
#events { list-style: none; padding: 0; font-family: ui-monospace, monospace; font-size: 12px; }
#events li { padding: .2rem 0; border-bottom: 1px solid #eee; }
#events time { color: #666; margin-right: .8rem; } #events b { margin-right: .8rem; } #events .empty { color: #666; }
td[title] { text-decoration: underline dotted; }
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
<h2>Tables</h2>
<div class="scroll"><table>
  <thead><tr><th>table</th><th>state</th><th>records</th><th>file</th><th>fragmentation</th><th>last backup</th>
  <th>backups</th><th>last compaction</th><th>last scrub</th><th>recoveries</th><th>restarts</th><th>degraded</th></tr></thead>
  <tbody id="tables"></tbody>
</table></div>
<h2>History <small id="history-status"></small></h2>
<div class="scroll"><table>
  <thead><tr><th>finished</th><th>kind</th><th>table</th><th>result</th><th>trigger</th><th>duration</th><th>bytes</th><th>detail</th></tr></thead>
  <tbody id="history"></tbody>
</table></div>
<h2>Live events <small id="live"></small></h2>
<ul id="events"><li class="empty">No event since this page opened; the history above has what happened before.</li></ul>
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
