// Instances: live presence of every agent (signed, retained), filter box, label chips,
// and Connect with a run-as choice for each online instance.
import { b64d } from '../proto/encoding.mjs';
import { readPresence, readStatus } from '../proto/presence.mjs';
import { ago, h } from './dom.mjs';

export class Instances {
  constructor(ctx, connect) {
    this.ctx = ctx;
    this.connect = connect;
    this.agents = new Map(); // name -> {doc, key, status}
    this.labelFilter = new Set();
    this.runAs = new Map();
    this.filter = h('input', { type: 'search', id: 'instance-filter', placeholder: 'Filter by name, label or platform', 'aria-label': 'Filter instances' });
    this.filter.addEventListener('input', () => this.render());
    this.chips = h('div', { class: 'chips', role: 'group', 'aria-label': 'Label filters' });
    this.body = h('div');
    this.el = h('section', { class: 'page' }, h('h2', {}, 'Instances'),
      h('div', { class: 'toolbar' }, this.filter, this.chips), this.body);
    this.render();
    setInterval(() => { if (!this.el.hidden) this.render(); }, 10000); // "last seen" ages
  }

  focus() { this.filter.focus(); }

  async start() {
    this.ctx.bus.listen((topic, payload) => this.onMessage(topic, payload));
    try {
      await this.ctx.bus.subscribe([this.ctx.topics.allPresence()]);
    } catch (e) {
      this.body.replaceChildren(h('div', { class: 'empty' }, e.message));
    }
  }

  onMessage(topic, payload) {
    const p = this.ctx.topics.parsePresence(topic);
    if (!p) return;
    const entry = this.agents.get(p.agent) ?? { doc: null, key: null, status: null, statusRaw: null };
    try {
      if (p.kind === 'presence') {
        if (!payload.length) { this.agents.delete(p.agent); this.render(); return; }
        const doc = readPresence(payload);
        if (doc.name !== p.agent) return; // as `tether ls`: a document for another name is ignored
        entry.doc = doc;
        entry.key = b64d(doc.ed25519);
        if (entry.statusRaw) entry.status = readStatusOrNull(entry.statusRaw, entry.key);
      } else {
        entry.statusRaw = payload;
        entry.status = entry.key ? readStatusOrNull(payload, entry.key) : null;
      }
    } catch {
      return; // forged or malformed: ignored
    }
    this.agents.set(p.agent, entry);
    this.render();
  }

  online(entry) {
    if (entry.status) return entry.status.online === true;
    return entry.doc?.online === true;
  }

  render() {
    const q = this.filter.value.trim().toLowerCase();
    const labels = new Map();
    const rows = [];
    for (const [name, e] of [...this.agents].sort((a, b) => a[0].localeCompare(b[0]))) {
      if (!e.doc) continue;
      const lab = e.doc.labels ?? {};
      for (const [k, v] of Object.entries(lab)) labels.set(`${k}=${v}`, true);
      const hay = [name, e.doc.platform ?? '', ...Object.entries(lab).map(([k, v]) => `${k}=${v}`)].join(' ').toLowerCase();
      if (q && !hay.includes(q)) continue;
      if ([...this.labelFilter].some((f) => !Object.entries(lab).some(([k, v]) => `${k}=${v}` === f))) continue;
      rows.push(this.row(name, e));
    }
    this.chips.replaceChildren(...[...labels.keys()].sort().map((l) => h('button', {
      class: 'chip', 'aria-pressed': String(this.labelFilter.has(l)), dataset: { testid: 'label-chip' },
      onclick: () => { this.labelFilter.has(l) ? this.labelFilter.delete(l) : this.labelFilter.add(l); this.render(); },
    }, l)));
    if (!this.agents.size) {
      this.body.replaceChildren(h('div', { class: 'empty' }, 'No instances yet. Agents appear here as soon as they publish their presence.'));
      return;
    }
    const table = h('table', { 'aria-label': 'Instances' },
      h('thead', {}, h('tr', {}, ...['Instance', 'State', 'Labels', 'Platform', 'Last seen', 'Run as', ''].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No instance matches the filter.'))));
    const focused = document.activeElement?.closest?.('[data-agent]')?.dataset.agent;
    const focusedRole = document.activeElement?.dataset?.testid;
    this.body.replaceChildren(table);
    if (focused) this.body.querySelector(`[data-agent="${CSS.escape(focused)}"] [data-testid="${focusedRole}"]`)?.focus();
  }

  row(name, e) {
    const on = this.online(e);
    const seen = e.status?.ts && !on ? e.status.ts : e.doc.seen;
    const runAs = h('input', { class: 'runas', dataset: { testid: 'run-as' }, placeholder: 'policy default',
      'aria-label': `Run as on ${name}`, value: this.runAs.get(name) ?? '', list: 'runas-hints' });
    runAs.addEventListener('input', () => this.runAs.set(name, runAs.value.trim()));
    const connect = h('button', { class: 'primary', dataset: { testid: 'connect' }, disabled: !on,
      'aria-label': `Connect to ${name}`, title: on ? '' : 'The instance is offline' }, 'Connect');
    connect.addEventListener('click', () => this.connect(name, runAs.value.trim() || null));
    runAs.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' && on) connect.click(); });
    return h('tr', { dataset: { testid: 'instance-row', agent: name, online: String(on) } },
      h('td', {}, h('strong', {}, name)),
      h('td', {}, h('span', { class: `state ${on ? 'online' : 'offline'}` }, on ? 'online' : 'offline')),
      h('td', {}, h('div', { class: 'chips' }, ...Object.entries(e.doc.labels ?? {}).map(([k, v]) => h('span', { class: 'chip' }, `${k}=${v}`)))),
      h('td', { class: 'muted' }, e.doc.platform ?? ''),
      h('td', { class: 'muted', title: new Date(seen * 1000).toLocaleString() }, on ? 'now' : ago(this.ctx.clock.wall() - seen)),
      h('td', {}, runAs),
      h('td', {}, connect));
  }
}

function readStatusOrNull(raw, key) {
  try {
    return readStatus(raw, key);
  } catch {
    return null;
  }
}
