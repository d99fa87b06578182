// Sessions: recorded sessions from the recorder, over MQTT (audit grant, sealed queries):
// a filtered list, full-text search with highlighted snippets, replay in asciinema-player
// at the moment of a hit, and each recording's verification status.
import * as AsciinemaPlayer from 'asciinema-player';
import { AuditClient } from '../proto/audit.mjs';
import { ago, h, highlighted, when } from './dom.mjs';

export class SessionsPage {
  constructor(ctx) {
    this.ctx = ctx;
    this.audit = null;
    this.player = null;
    const field = (id, label, attrs = {}) => h('input', { id, 'aria-label': label, placeholder: label, ...attrs });
    this.user = field('filter-user', 'User');
    this.agent = field('filter-agent', 'Instance');
    this.since = h('select', { id: 'filter-since', 'aria-label': 'Time' },
      ...[['', 'Any time'], ['3600', 'Last hour'], ['86400', 'Last 24 h'], ['604800', 'Last 7 days']].map(([v, t]) => h('option', { value: v }, t)));
    this.searchBox = h('input', { type: 'search', id: 'search-box', placeholder: 'Search recorded screens…', 'aria-label': 'Search recorded screens' });
    const form = h('form', { class: 'toolbar', role: 'search' }, this.searchBox, this.user, this.agent, this.since,
      h('button', { class: 'primary', type: 'submit', id: 'search-submit' }, 'Search'),
      h('button', { type: 'button', id: 'list-refresh', onclick: () => this.list() }, 'List sessions'));
    form.addEventListener('submit', (ev) => { ev.preventDefault(); this.searchBox.value.trim() ? this.search() : this.list(); });
    this.status = h('div', { class: 'muted', role: 'status', 'aria-live': 'polite' });
    this.results = h('div');
    this.replayEl = h('div');
    this.el = h('section', { class: 'page' }, h('h2', {}, 'Sessions'), form, this.status, this.replayEl, this.results);
    this.loaded = false;
    this.el.tetherSessions = this; // for tests and the browser's devtools
  }

  client() {
    if (!this.audit) {
      const { ctx } = this;
      this.audit = new AuditClient({ user: ctx.me.name, key: ctx.me.key, slot: ctx.me.slot, authority: ctx.config.authority,
        topics: ctx.topics, publish: (t, p, q) => ctx.bus.publish(t, p, q), publishFrame: (t, p, q) => ctx.bus.publishFrame(t, p, q), clock: ctx.clock, timers: ctx.timers,
        recorder: ctx.config.recorder });
      ctx.bus.listen((t, p) => this.audit.onMessage(t, p));
      this.subscribed = ctx.bus.subscribe(this.audit.subscriptions());
    }
    return this.subscribed.then(() => this.audit);
  }

  filters() {
    const f = {};
    if (this.user.value.trim()) f.user = this.user.value.trim();
    if (this.agent.value.trim()) f.agent = this.agent.value.trim();
    if (this.since.value) f.since = this.ctx.clock.wall() - Number(this.since.value);
    return f;
  }

  shown() {
    if (!this.loaded) { this.loaded = true; this.list(); }
    this.searchBox.focus();
  }

  async run(label, fn) {
    this.status.textContent = label;
    try {
      await fn(await this.client());
    } catch (e) {
      this.status.textContent = '';
      this.results.replaceChildren(h('div', { class: 'empty', role: 'alert', dataset: { testid: 'audit-error' } }, e.message));
    }
  }

  list() {
    return this.run('Loading sessions…', async (audit) => {
      const sessions = await audit.list(this.filters());
      this.status.textContent = `${sessions.length} session${sessions.length === 1 ? '' : 's'}`;
      if (!sessions.length) { this.results.replaceChildren(h('div', { class: 'empty' }, 'No recorded session matches.')); return; }
      this.results.replaceChildren(h('table', { 'aria-label': 'Recorded sessions' },
        h('thead', {}, h('tr', {}, ...['Started', 'User', 'Instance', 'Run as', 'Command', 'Duration', 'Exit', 'Status', 'Verification', ''].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, ...sessions.map((s) => h('tr', { dataset: { testid: 'session-row', sid: s.sid } },
          h('td', { title: when(s.started) }, ago(this.ctx.clock.wall() - s.started)),
          h('td', {}, s.user), h('td', {}, s.agent), h('td', {}, s.run_as ?? ''),
          h('td', { dataset: { testid: 'session-command' }, title: s.reason ? `${what(s)}\nreason: ${s.reason}` : what(s),
            style: 'max-width:24em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap' }, what(s)),
          h('td', {}, `${Math.round(s.duration ?? 0)} s`),
          h('td', {}, s.exit_signal != null ? `signal ${s.exit_signal}` : s.exit_code ?? '—'),
          h('td', {}, s.status ?? ''),
          h('td', {}, verification(s)),
          h('td', {}, h('button', { dataset: { testid: 'replay-session' }, onclick: () => this.replay(s.sid, 0, s) }, 'Replay')))))));
    });
  }

  search() {
    const q = this.searchBox.value.trim();
    return this.run(`Searching for “${q}”…`, async (audit) => {
      const hits = await audit.search(q, this.filters());
      this.status.textContent = `${hits.length} hit${hits.length === 1 ? '' : 's'} for “${q}”`;
      if (!hits.length) { this.results.replaceChildren(h('div', { class: 'empty' }, 'Nothing found.')); return; }
      this.results.replaceChildren(h('ul', { class: 'hits', 'aria-label': 'Search results' }, ...hits.map((hit) => {
        const li = h('li', { class: 'hit', tabindex: '0', role: 'button', dataset: { testid: 'search-hit', sid: hit.sid, t: String(hit.t) },
          'aria-label': `Replay ${hit.user}@${hit.agent} at ${Math.round(hit.t)} s` },
          h('div', { class: 'meta' }, `${hit.user}@${hit.agent} · ${when(hit.wall)} · ${formatT(hit.t)} into the session · ${hit.kind}`),
          h('pre', {}, ...highlighted(hit.snippet ?? hit.text ?? '', hit.spans)));
        const open = () => this.replay(hit.sid, hit.t);
        li.addEventListener('click', open);
        li.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); open(); } });
        return li;
      })));
    });
  }

  async replay(sid, at, info = null) {
    this.player?.dispose?.();
    this.player = null;
    const mount = h('div', { class: 'player' });
    const speed = h('select', { 'aria-label': 'Replay speed' }, ...['0.5', '1', '2', '4', '8'].map((v) => h('option', { value: v, selected: v === '1' }, `${v}×`)));
    const verify = h('span', { dataset: { testid: 'verification' } }, info ? verification(info) : 'verifying…');
    const box = h('div', { class: 'replay', dataset: { testid: 'replay', sid } },
      h('div', { class: 'toolbar' }, h('strong', {}, `Replay ${sid.slice(0, 12)}…`), h('span', { class: 'muted' }, `from ${formatT(at)}`),
        h('label', {}, 'Speed ', speed), verify, h('span', { style: 'flex:1' }),
        h('button', { onclick: () => { this.player?.dispose?.(); box.remove(); } }, 'Close replay')), mount);
    this.replayEl.replaceChildren(box);
    box.scrollIntoView({ block: 'nearest' });
    await this.run('Fetching the recording…', async (audit) => {
      const fetched = await audit.fetch(sid, (n, total) => { this.status.textContent = `Fetching the recording… ${Math.floor((100 * n) / total)} %`; });
      const cast = fetched.asciicast;
      this.status.textContent = '';
      const start = (rate) => {
        const was = this.player?.getCurrentTime?.();
        this.player?.dispose?.();
        mount.replaceChildren();
        this.player = AsciinemaPlayer.create({ data: cast }, mount, {
          startAt: Math.max(0, (was ?? at) - (was === undefined ? 1 : 0)), speed: rate, autoPlay: true, fit: 'width',
          controls: true, terminalFontFamily: 'ui-monospace, "DejaVu Sans Mono", monospace',
        }); // no idle time limit: the player's clock is the session's, as the hits' `t`
        box.player = this.player; // for tests and the browser's devtools
      };
      start(1);
      speed.addEventListener('change', () => start(Number(speed.value)));
      audit.verify(sid).then((v) => { verify.replaceChildren(verifyText(v)); })
        .catch((e) => { verify.textContent = `verification unavailable: ${e.message}`; });
    });
  }
}

function formatT(t) {
  const s = Math.max(0, Math.floor(t));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

// What ran: `shell`, or the exec command's argv from the grant, quoted as a shell would need.
function what(s) {
  if (s.mode === 'shell') return 'shell';
  if (!Array.isArray(s.command)) return '—';
  return s.command.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${String(a).replaceAll("'", `'"'"'`)}'`)).join(' ');
}

function verification(s) {
  if (s.chain === 'ok') return h('span', { class: 'verify-ok', title: 'hash chain and agent signatures checked on ingest' }, 'chain ok');
  return h('span', { class: 'verify-bad' }, `broken: ${s.chain}`);
}

// The recorder's full offline check (§13.5 verify): {ok, events, checkpoints, ended,
// signed_through, unsigned, problems, notes}. Only `ok` (every event intact and signed by
// the agent) reads "verified"; an unsigned tail (aborted, live) is not verified.
function verifyText(v) {
  const notes = [...(v.problems ?? []), ...(v.notes ?? [])].join('; ');
  const title = `${v.events} events, ${v.checkpoints} signed checkpoints${v.ended ? ', ended' : ', not ended'}${notes ? `: ${notes}` : ''}`;
  const dataset = { testid: 'verify-result' };
  if (v.ok === true) return h('span', { class: 'verify-ok', title, dataset }, `verified (${v.events} events${v.ended ? '' : '; no end manifest: may be cut short'})`);
  const why = (v.problems ?? []).length ? v.problems : (v.notes ?? []);
  return h('span', { class: 'verify-bad', title, dataset }, `not verified: ${why.join('; ') || 'see details'}`);
}
