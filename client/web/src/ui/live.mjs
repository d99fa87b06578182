// Live sessions (protocol.md §6.4): the authority's `sessions` answer, from the agents'
// reports. The user's own shells can be attached (taken over: the agent replays the
// screen), other users' sessions watched or joined, each exactly as the answer's
// `actions` allow. On sign-in (so after a reload, or in another browser) the user's own
// live shells are offered for reattaching in a banner above the pages.
import { ago, h, when } from './dom.mjs';

const ACTIONS = [['attach', 'Attach'], ['watch', 'Watch'], ['join', 'Join']];

export class LivePage {
  constructor(ctx, open) {
    this.ctx = ctx;
    this.open = open; // (session, mode) -> opens a terminal tab on it
    this.sessions = [];
    this.more = false;
    this.asking = null;
    this.dismissed = false;
    this.taken = new Set(); // sids attached from the offer
    this.refreshBtn = h('button', { id: 'live-refresh', type: 'button', onclick: () => this.refresh() }, 'Refresh');
    this.status = h('div', { id: 'live-status', class: 'muted', role: 'status', 'aria-live': 'polite' });
    this.body = h('div');
    this.el = h('section', { class: 'page' }, h('h2', {}, 'Live sessions'),
      h('p', { class: 'muted' }, 'Running sessions the authority knows of: your own shells, which you can attach to, and other users\' sessions the policy lets you watch (read-only) or join.'),
      h('div', { class: 'toolbar' }, this.refreshBtn), this.status, this.body);
    this.offer = h('div', { class: 'live-offer', role: 'region', 'aria-label': 'Your live sessions', dataset: { testid: 'live-offer' }, hidden: true });
    this.el.tetherLive = this; // for tests and the browser's devtools
  }

  shown() {
    this.refresh();
    this.refreshBtn.focus();
  }

  // Sessions open in this page's own tabs (the session's first sid).
  openHere() {
    return new Set([...(this.ctx.liveTabs ?? [])].map((t) => t.sessionSid));
  }

  refresh() {
    if (this.asking) return this.asking;
    this.status.textContent = 'Asking the authority…';
    this.refreshBtn.disabled = true;
    this.asking = this.ctx.asker.ask({ type: 'sessions', agent: null }, 'live sessions question').then((doc) => {
      if (!doc.ok) throw new Error(String(doc.error ?? 'the authority refused'));
      this.sessions = (Array.isArray(doc.sessions) ? doc.sessions : []).filter((s) => s && typeof s.sid === 'string' && typeof s.agent === 'string');
      this.more = doc.more === true;
      this.render();
      return this.sessions;
    }).catch((e) => {
      this.status.textContent = '';
      this.body.replaceChildren(h('div', { class: 'empty', role: 'alert', dataset: { testid: 'live-error' } }, `Live sessions: ${e.message}`));
      return null;
    }).finally(() => {
      this.asking = null;
      this.refreshBtn.disabled = false;
    });
    return this.asking;
  }

  describe(s) {
    const now = this.ctx.clock.wall();
    if (this.openHere().has(s.sid)) return 'open in this page';
    if (s.awaiting_moderator === true) return 'waiting for a moderator';
    return s.attached ? 'attached' : `detached ${ago(now - (s.detached_at ?? now))}`;
  }

  render() {
    const n = this.sessions.length;
    this.status.textContent = `${n} live session${n === 1 ? '' : 's'}${this.more ? ' (the authority lists at most 100: more are running)' : ''}`;
    this.status.dataset.count = String(n);
    if (!n) {
      this.body.replaceChildren(h('div', { class: 'empty', dataset: { testid: 'live-empty' } },
        'No live sessions you may attach, watch or join.'));
      return;
    }
    const here = this.openHere();
    const me = this.ctx.me.name;
    this.body.replaceChildren(h('table', { 'aria-label': 'Live sessions' },
      h('thead', {}, h('tr', {}, ...['User', 'Instance', 'Run as', 'What', 'State', 'Started', ''].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, ...this.sessions.map((s) => {
        const acts = Array.isArray(s.actions) ? s.actions : [];
        const buttons = ACTIONS.filter(([a]) => acts.includes(a)).map(([a, label]) => h('button', {
          class: a === 'attach' ? 'primary' : '', dataset: { testid: `live-${a}` },
          'aria-label': `${label} ${s.user === me ? 'your' : `${s.user}'s`} session on ${s.agent} (${s.sid.slice(0, 8)})`,
          disabled: a === 'attach' && here.has(s.sid), title: a === 'attach' && here.has(s.sid) ? 'Already open in this page' : '',
          onclick: () => this.choose(s, a === 'attach' ? 'shell' : a),
        }, label));
        return h('tr', { dataset: { testid: 'live-row', sid: s.sid, agent: s.agent, user: s.user ?? '' } },
          h('td', {}, s.user ?? ''), h('td', {}, s.agent), h('td', {}, s.run_as ?? ''),
          h('td', { class: 'muted' }, s.command ?? s.mode ?? ''),
          h('td', { dataset: { testid: 'live-state' } }, this.describe(s)),
          h('td', { title: when(s.started) }, ago(this.ctx.clock.wall() - s.started)),
          h('td', {}, h('div', { class: 'actions' }, ...buttons)));
      }))));
  }

  choose(s, mode) {
    if (mode === 'shell') this.taken.add(s.sid); // offered no more, whether or not the attach succeeds
    this.open(s, mode);
    this.renderOffer();
    if (!this.el.hidden) this.render();
  }

  // The user's own live shells not open in this page: offered for reattaching.
  attachable() {
    const here = this.openHere();
    return this.sessions.filter((s) => (s.actions ?? []).includes('attach') && !here.has(s.sid) && !this.taken.has(s.sid));
  }

  async offerOnSignIn() {
    await this.refresh();
    this.renderOffer();
  }

  renderOffer() {
    const own = this.dismissed ? [] : this.attachable();
    this.offer.hidden = !own.length;
    if (!own.length) { this.offer.replaceChildren(); return; }
    const list = h('ul', {}, ...own.map((s) => h('li', { dataset: { testid: 'offer-item', sid: s.sid } },
      // Its state is left out: just after a reload the agent may not have reported the
      // detach yet, and "attached" would read as if another client had it.
      h('span', {}, `${s.agent}${s.run_as ? ` as ${s.run_as}` : ''} · started ${ago(this.ctx.clock.wall() - s.started)} `),
      h('button', { class: 'primary', dataset: { testid: 'offer-attach', sid: s.sid },
        'aria-label': `Attach your shell on ${s.agent} (${s.sid.slice(0, 8)}) in a new tab`, onclick: () => this.choose(s, 'shell') }, 'Attach'))));
    this.offer.replaceChildren(
      h('strong', {}, own.length === 1 ? 'You have a live shell session.' : `You have ${own.length} live shell sessions.`),
      ' Attach to go on where you left off (the screen is restored).', list,
      h('button', { dataset: { testid: 'offer-dismiss' }, onclick: () => { this.dismissed = true; this.renderOffer(); } }, 'Not now'));
  }
}
