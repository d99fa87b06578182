// Instances: live presence of every agent (signed, retained), filter box, label chips,
// and Connect with a run-as choice for each online instance: the run-as users the policy
// gives this user there (asked of the authority, protocol.md §6.2), and a reason asked
// for before connecting when the policy wants one.
import { b64d } from '../proto/encoding.mjs';
import { readPresence, readStatus } from '../proto/presence.mjs';
import { ago, h } from './dom.mjs';

const OTHER = '\u0001other';
const ACCESS_FRESH = 60; // seconds an access answer is used for
const ACCESS_BATCH = 20; // agents per question (the authority's limit)

export class Instances {
  constructor(ctx, connect) {
    this.ctx = ctx;
    this.connect = connect;
    this.agents = new Map(); // name -> {doc, key, status}
    this.labelFilter = new Set();
    this.runAs = new Map(); // name -> the chosen run-as user ('' = the policy's default)
    this.other = new Map(); // name -> text typed after choosing "Other…"
    this.access = new Map(); // name -> {at, entry: the authority's access entry or null}
    this.asking = new Set();
    this.accessTimer = null;
    this.filter = h('input', { type: 'search', id: 'instance-filter', placeholder: 'Filter by name, label or platform', 'aria-label': 'Filter instances' });
    this.filter.addEventListener('input', () => this.render());
    this.chips = h('div', { class: 'chips', role: 'group', 'aria-label': 'Label filters' });
    this.body = h('div');
    this.el = h('section', { class: 'page' }, h('h2', {}, 'Instances'),
      h('div', { class: 'toolbar' }, this.filter, this.chips), this.body);
    this.render();
    setInterval(() => { if (!this.el.hidden) this.render(); }, 10000); // "last seen" ages
  }

  focus() {
    this.filter.focus();
    this.askAccess();
  }

  // Ask the authority which run-as users the policy allows on the online instances it
  // has not been asked about in the last minute (20 per question).
  askAccess() {
    if (this.accessTimer !== null) return;
    this.accessTimer = this.ctx.timers.set(() => {
      this.accessTimer = null;
      const now = this.ctx.clock.mono();
      const names = [...this.agents].filter(([n, e]) => e.doc && this.online(e) && !this.asking.has(n)
        && !(now - (this.access.get(n)?.at ?? -Infinity) < ACCESS_FRESH)).map(([n]) => n);
      for (let i = 0; i < names.length; i += ACCESS_BATCH) {
        const batch = names.slice(i, i + ACCESS_BATCH);
        for (const n of batch) this.asking.add(n);
        this.ctx.asker.ask({ type: 'access', agents: batch, mode: 'shell' }, 'access question').then((doc) => {
          if (!doc.ok) return;
          const at = this.ctx.clock.mono();
          for (const n of batch) this.access.set(n, { at, entry: doc.access?.[n] ?? null });
          this.render();
        }, () => {}).finally(() => { for (const n of batch) this.asking.delete(n); });
      }
    }, 0.2);
  }

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
    if (this.online(entry)) this.askAccess();
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
    const acc = this.access.get(name)?.entry ?? null;
    const connect = h('button', { class: 'primary', dataset: { testid: 'connect' }, disabled: !on,
      'aria-label': `Connect to ${name}`, title: on ? '' : 'The instance is offline' }, 'Connect');
    const chooser = this.runAsChooser(name, acc, () => connect.click());
    connect.addEventListener('click', async () => {
      const runAs = chooser.value();
      const choice = acc?.run_as?.find((c) => c.name === (runAs ?? acc.default));
      let reason = null;
      if (choice?.reason) {
        reason = await askReason(name, runAs ?? acc.default);
        if (reason === null) return; // cancelled
      }
      this.connect(name, runAs, reason);
    });
    return h('tr', { dataset: { testid: 'instance-row', agent: name, online: String(on) } },
      h('td', {}, h('strong', {}, name)),
      h('td', {}, h('span', { class: `state ${on ? 'online' : 'offline'}` }, on ? 'online' : 'offline')),
      h('td', {}, h('div', { class: 'chips' }, ...Object.entries(e.doc.labels ?? {}).map(([k, v]) => h('span', { class: 'chip' }, `${k}=${v}`)))),
      h('td', { class: 'muted' }, e.doc.platform ?? ''),
      h('td', { class: 'muted', title: new Date(seen * 1000).toLocaleString() }, on ? 'now' : ago(this.ctx.clock.wall() - seen)),
      h('td', {}, chooser.el),
      h('td', {}, connect));
  }

  // The run-as menu of one row: what the policy allows (the default first), "Other…" when
  // a glob allows more; before the authority has answered, the policy's default.
  runAsChooser(name, acc, submit) {
    const el = h('div', { class: 'runas' });
    if (acc && !acc.allowed) {
      el.append(h('span', { class: 'muted', dataset: { testid: 'run-as-denied' }, title: acc.why ?? '' }, 'no access'));
      return { el, value: () => null };
    }
    const options = acc
      ? acc.run_as.map((c) => h('option', { value: c.name },
        `${c.name}${c.name === acc.default ? ' (default)' : ''}${c.reason ? ' · reason' : ''}`))
      : [h('option', { value: '' }, 'policy default')];
    if (!acc || acc.other) options.push(h('option', { value: OTHER }, 'Other…'));
    const select = h('select', { dataset: { testid: 'run-as' }, 'aria-label': `Run as on ${name}` }, ...options);
    const chosen = this.runAs.get(name);
    if (chosen !== undefined && [...select.options].some((o) => o.value === chosen)) select.value = chosen;
    const other = h('input', { class: 'runas-other', dataset: { testid: 'run-as-other' }, 'aria-label': `Other run-as user on ${name}`,
      placeholder: 'user name', value: this.other.get(name) ?? '', hidden: select.value !== OTHER, spellcheck: 'false' });
    select.addEventListener('change', () => {
      this.runAs.set(name, select.value);
      other.hidden = select.value !== OTHER;
      if (!other.hidden) other.focus();
    });
    other.addEventListener('input', () => this.other.set(name, other.value.trim()));
    for (const c of [select, other]) c.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') submit(); });
    el.append(select, other);
    return { el, value: () => (select.value === OTHER ? other.value.trim() || null : select.value || null) };
  }
}

// A modal asking for the reason the policy requires; resolves with it, or null if cancelled.
export function askReason(agent, runAs) {
  return new Promise((resolve) => {
    const input = h('input', { id: 'reason-input', dataset: { testid: 'reason-input' }, required: true, autocomplete: 'off',
      placeholder: 'e.g. ticket OPS-123: restart nginx' });
    const dlg = h('dialog', { dataset: { testid: 'reason-dialog' }, 'aria-labelledby': 'reason-title' },
      h('form', { method: 'dialog' },
        h('h3', { id: 'reason-title' }, `Reason for access to ${agent}${runAs ? ` as ${runAs}` : ''}`),
        h('p', { class: 'muted' }, 'The policy requires a reason. It goes into the grant and the audit log, and is recorded with the session.'),
        h('label', { for: 'reason-input' }, 'Reason'), input,
        h('div', { class: 'actions' },
          h('button', { type: 'button', dataset: { testid: 'reason-cancel' }, onclick: () => dlg.close('') }, 'Cancel'),
          h('button', { class: 'primary', value: 'ok', dataset: { testid: 'reason-submit' } }, 'Connect'))));
    dlg.addEventListener('close', () => {
      const reason = dlg.returnValue === 'ok' ? input.value.trim() : '';
      dlg.remove();
      resolve(reason || null);
    });
    document.body.append(dlg);
    dlg.showModal();
    input.focus();
  });
}

function readStatusOrNull(raw, key) {
  try {
    return readStatus(raw, key);
  } catch {
    return null;
  }
}
