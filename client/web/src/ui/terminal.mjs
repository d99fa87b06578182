// One terminal tab: an xterm.js terminal on an end-to-end encrypted session.
// Output is written with xterm's write callback, and only that callback returns the
// frame's credit to the agent: a flood (`yes`, `cat` of a huge file) is paced by what
// the page really renders, so the tab never queues more than the 1 MiB window. Input
// (keys, paste, Ctrl-C) is sent at once on its own path and never waits behind output.
import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { SearchAddon } from '@xterm/addon-search';
import { hex } from '../proto/encoding.mjs';
import { randomBytes } from '../proto/crypto.mjs';
import { SessionCore } from '../proto/session.mjs';
import { h } from './dom.mjs';

// Modes (protocol.md §11.1-§11.2): 'shell' (a new shell, or with `attach` one of the
// user's own live shells taken over), 'watch' (read-only: nothing typed here is sent) and
// 'join' (a second writer in another user's shell).
const MODE_NOTE = { watch: 'Watching, read-only', join: 'Joined: what you type goes to the shell' };

export class TerminalTab {
  constructor(ctx, agent, runAs, reason, { retry, mode = 'shell', attach = null }) {
    this.ctx = ctx;
    this.agent = agent;
    this.runAs = runAs;
    this.reason = reason;
    this.retry = retry;
    this.mode = mode;
    this.attach = attach; // the live session's sid (attach, watch, join), else null
    this.sid = hex(randomBytes(16));
    // The session's own id everywhere (the live list, recordings): a new shell's is its
    // handshake's; an attached, watched or joined one keeps its first.
    this.sessionSid = attach ?? this.sid;
    this.detaching = false;
    this.banner = h('div', { class: 'banner', dataset: { testid: 'session-banner' }, role: 'status', 'aria-live': 'polite' }, `Requesting access to ${agent}…`);
    this.recorded = h('span', { class: 'recorded', hidden: true, dataset: { testid: 'recorded' } }, 'This session is recorded');
    this.searchBox = h('input', { type: 'search', placeholder: 'Find (Ctrl+Shift+F)', 'aria-label': 'Find in terminal' });
    this.termEl = h('div', { class: 'termwrap', dataset: { testid: 'terminal', agent, mode } });
    this.modeNote = h('span', { class: `mode-note ${mode}`, dataset: { testid: 'mode-note' }, hidden: !MODE_NOTE[mode] },
      MODE_NOTE[mode] ?? '');
    // Detach: only the owner's shell, and only when its grant lets it wait (detach_timeout).
    this.detachBtn = h('button', { dataset: { testid: 'detach' }, hidden: mode !== 'shell', disabled: true,
      title: 'Leave the shell running; attach it again later (from Live sessions)', onclick: () => this.detach() }, 'Detach');
    // End session: a moderator watching (the grant says so) ends the watched session.
    this.endBtn = h('button', { class: 'danger', dataset: { testid: 'end-session' }, hidden: true,
      title: 'End the watched session (you are its moderator)', onclick: () => this.endSession() }, 'End session');
    this.bar = h('div', { class: 'termbar' }, h('strong', {}, agent), h('span', { class: 'muted' }, runAs ? `as ${runAs}` : ''),
      this.recorded, this.modeNote, h('span', { class: 'grow' }),
      this.detachBtn, this.endBtn, this.searchBox,
      h('button', { onclick: () => this.search(true), 'aria-label': 'Previous match' }, '↑'),
      h('button', { onclick: () => this.search(false), 'aria-label': 'Next match' }, '↓'),
      h('button', { onclick: () => this.copy(), title: 'Copy the selection (Ctrl+Shift+C)' }, 'Copy'),
      h('button', { onclick: () => this.paste(), title: 'Paste (Ctrl+Shift+V)' }, 'Paste'));
    this.el = h('section', { class: 'termpage', dataset: { testid: 'terminal-tab', agent, mode, sid: this.sessionSid } },
      this.banner, this.termEl, this.bar);
    this.el.tetherTerm = this; // for tests and the browser's devtools
    this.searchBox.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter') this.search(ev.shiftKey);
      if (ev.key === 'Escape') this.term.focus();
    });
    this.term = new Terminal({
      cursorBlink: true, fontSize: 14, scrollback: 5000, allowProposedApi: true,
      fontFamily: 'ui-monospace, SFMono-Regular, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      theme: { background: '#0d1117', foreground: '#e6edf3', selectionBackground: '#264f78' },
      disableStdin: mode === 'watch', // read-only: xterm.js then reports no keys or pastes at all
    });
    this.fit = new FitAddon();
    this.finder = new SearchAddon();
    this.term.loadAddon(this.fit);
    this.term.loadAddon(this.finder);
    this.term.attachCustomKeyEventHandler((ev) => this.keys(ev));
    this.session = null;
    this.bannerFade = null;
    this.resizeObserver = new ResizeObserver(() => this.refit());
    this.offReconnect = null;
  }

  keys(ev) {
    if (ev.type !== 'keydown' || !ev.ctrlKey || !ev.shiftKey) return true;
    const k = ev.key.toLowerCase();
    if (k === 'c') { this.copy(); return false; }
    if (k === 'v') { this.paste(); return false; }
    if (k === 'f') { this.searchBox.focus(); this.searchBox.select(); return false; }
    return true;
  }

  copy() {
    const text = this.term.getSelection();
    if (text) navigator.clipboard?.writeText(text).catch(() => {});
    this.term.focus();
  }

  async paste() {
    try {
      const text = await navigator.clipboard.readText();
      if (text) this.term.paste(text);
    } catch {
      this.setBanner('The browser did not allow reading the clipboard: use Ctrl+V or the browser menu to paste.', 'warn');
    }
    this.term.focus();
  }

  search(back) {
    const q = this.searchBox.value;
    if (!q) return;
    if (back) this.finder.findPrevious(q);
    else this.finder.findNext(q);
  }

  // The focus moves at once, not on the next frame: keys typed right after a switch to
  // this tab went to the tab's button until then (and a space there is a click).
  focus() {
    this.term.focus();
    requestAnimationFrame(() => { this.refit(); this.term.focus(); });
  }

  refit() {
    if (this.el.hidden || !this.termEl.isConnected || this.termEl.clientWidth === 0) return;
    try { this.fit.fit(); } catch { /* not laid out yet */ }
  }

  // With `hideAfter` (seconds), a passing note: it goes away by itself unless another
  // banner replaced it meanwhile.
  setBanner(text, kind = '', hideAfter = 0) {
    this.ctx.timers.clear(this.bannerFade);
    this.banner.className = `banner ${kind}`;
    this.banner.replaceChildren(...[].concat(text));
    this.banner.hidden = false;
    this.bannerFade = hideAfter ? this.ctx.timers.set(() => { this.banner.hidden = true; }, hideAfter) : null;
  }

  async start() {
    this.term.open(this.termEl);
    this.resizeObserver.observe(this.termEl);
    await new Promise((r) => requestAnimationFrame(r));
    this.refit();
    const { ctx } = this;
    const s = new SessionCore({
      user: ctx.me.name, key: ctx.me.key, slot: ctx.me.slot, authority: ctx.config.authority, topics: ctx.topics,
      agent: this.agent, mode: this.mode, sid: Uint8Array.from(this.sid.match(/../g), (x) => parseInt(x, 16)),
      // max_frame: output frames of at most 3 KiB, so every packet stays under the 4 KiB
      // that Mosquitto's websocket listener sends quickly (a 64 KiB one takes ~1.5 s);
      // window: 64 KiB of credit, so Ctrl-C during a flood waits behind little output (and the
      // embedded broker, which pays per message, has few 3 KiB frames to carry first).
      request: { run_as: this.runAs, reason: this.reason, ...(this.attach ? { attach: this.attach } : {}), term: 'xterm-256color', cols: this.term.cols, rows: this.term.rows,
        max_frame: 3072, window: 64 * 1024,
        env: { LANG: 'C.UTF-8', COLORTERM: 'truecolor' } },
      publish: (t, p, q) => ctx.bus.publish(t, p, q), publishFrame: (t, p, q) => ctx.bus.publishFrame(t, p, q), clock: ctx.clock, timers: ctx.timers,
      onOutput: (bytes, done) => this.term.write(bytes, done),
      onEvent: (evt) => this.onEvent(evt),
    });
    this.session = s;
    this.off = ctx.bus.listen((topic, payload) => s.onMessage(topic, payload));
    const onReconnect = () => {
      s.reconnected();
      if (s.state === 'open') this.setBanner('Reconnected to the broker; the session continues.', 'done', 5);
    };
    document.addEventListener('tether-reconnected', onReconnect);
    this.offReconnect = () => document.removeEventListener('tether-reconnected', onReconnect);
    if (this.mode !== 'watch') { // a watcher sends nothing: the agent would drop it anyway
      this.term.onData((data) => s.sendInput(data));
      this.term.onBinary((data) => s.sendInput(Uint8Array.from(data, (c) => c.charCodeAt(0) & 255)));
    }
    // The owner's window sizes the terminal; the agent ignores a joiner's or watcher's.
    if (this.mode === 'shell') this.term.onResize(({ cols, rows }) => s.resize(cols, rows));
    try {
      await ctx.bus.subscribe(s.subscriptions());
    } catch (e) {
      this.setBanner(e.message, 'bad');
      return;
    }
    s.start();
  }

  onEvent(evt) {
    switch (evt.type) {
      case 'granted':
        this.setBanner(`Access granted${evt.claims?.run_as ? ` as ${evt.claims.run_as}` : ''}; connecting to ${this.agent}…`);
        this.moderator = this.mode === 'watch' && evt.claims?.moderator === true;
        break;
      case 'accepted':
        this.ctx.timers.clear(this.bannerFade);
        this.banner.hidden = true;
        this.recorded.hidden = !evt.recorded; // the badge in the bar says so for the whole session
        this.detachTimeout = Number(evt.extra?.detach_timeout ?? 0);
        this.detachBtn.disabled = !(this.detachTimeout > 0);
        if (this.detachBtn.disabled) this.detachBtn.title = 'This session cannot be detached: the policy\'s detach_timeout for it is 0';
        this.endBtn.hidden = !this.moderator;
        this.ctx.liveTabs?.add(this);
        if (this.mode === 'watch') this.setBanner('Watching, read-only: what you type here is not sent.', 'watch');
        this.focus();
        break;
      case 'denied':
        this.showDenial(evt.message, evt.reasonRequired);
        break;
      case 'refused': case 'offline': case 'error': case 'authority-timeout':
        this.setBanner(evt.message, 'bad');
        break;
      case 'notice':
        this.setBanner(`tether: ${evt.text}`, 'warn');
        this.term.write(`\r\n\x1b[33mtether: ${evt.text}\x1b[0m\r\n`);
        break;
      case 'agent-offline':
        this.setBanner(`${this.agent} is unreachable; reconnecting… (waiting up to ${evt.grace} s)`, 'warn');
        break;
      case 'agent-online':
        this.setBanner(`${this.agent} reconnected; the session continues.`, 'done', 5);
        break;
      case 'lost':
        this.setBanner(`Disconnected: ${evt.message}.`, 'bad');
        break;
      case 'exit':
        break; // shown with 'closed', after the output before it is written
      case 'closed': {
        this.ctx.liveTabs?.delete(this);
        this.detachBtn.disabled = true;
        this.endBtn.hidden = true;
        if (evt.local) break;
        if (evt.reason === 'detached') {
          this.term.write('', () => {
            this.setBanner([h('span', { dataset: { testid: 'detached-elsewhere' } }, 'Detached: attached from another client.'),
              ' The session goes on there. ', h('button', { onclick: () => this.retry(this.reason, { mode: 'shell', attach: this.sessionSid }) }, 'Attach it here')], 'warn');
            this.term.options.cursorBlink = false;
          });
          break;
        }
        const exit = evt.exit ?? this.session?.exit;
        const code = exit?.signal != null ? 128 + exit.signal : exit?.code ?? null;
        const text = exit?.signal != null ? `killed by signal ${exit.signal}` : code !== null ? 'exited with code ' : 'ended without an exit status';
        this.term.write('', () => {
          this.setBanner([`Session on ${this.agent} ${text}`, code !== null && exit?.signal == null
            ? h('strong', { dataset: { testid: 'exit-code' } }, String(code)) : h('span', { dataset: { testid: 'exit-code' }, hidden: true }, String(code ?? 255)),
          '. ', this.mode === 'shell' ? h('button', { onclick: () => this.retry(this.reason, { mode: 'shell', attach: null }) }, 'Reconnect') : ''],
          code === 0 ? 'done' : 'bad');
          this.term.options.cursorBlink = false;
        });
        break;
      }
      default:
        break;
    }
  }

  showDenial(message, reasonRequired) {
    this.banner.hidden = true;
    const box = h('div', { class: 'denial', dataset: { testid: 'denial' }, role: 'alert' },
      h('h3', {}, `Access to ${this.agent} denied`), h('p', { dataset: { testid: 'denial-reason' } }, message));
    if (reasonRequired) {
      const input = h('input', { dataset: { testid: 'reason-input' }, 'aria-label': 'Reason for access', placeholder: 'e.g. ticket OPS-123: restart nginx', required: true });
      const form = h('form', {}, input, h('button', { class: 'primary', type: 'submit', dataset: { testid: 'reason-submit' } }, 'Connect with this reason'));
      form.addEventListener('submit', (ev) => { ev.preventDefault(); if (input.value.trim()) this.retry(input.value.trim()); });
      box.append(h('p', {}, 'The policy requires a reason for this access. It is recorded with the session.'), form);
      queueMicrotask(() => input.focus());
    }
    this.termEl.replaceChildren(box);
    this.bar.hidden = true;
  }

  // Leave the shell running (CLOSE 'detach'); it waits detach_timeout for an attach.
  detach() {
    if (!this.session || this.session.state !== 'open' || !(this.detachTimeout > 0)) return false;
    this.detaching = true;
    this.session.close({ detach: true });
    const minutes = Math.round(this.detachTimeout / 60);
    this.setBanner([h('span', { dataset: { testid: 'detached' } }, `Detached from session ${this.sessionSid} on ${this.agent}`),
      `; it keeps running for ${minutes} min. `, h('button', { dataset: { testid: 'attach-again' }, onclick: () => this.retry(this.reason, { mode: 'shell', attach: this.sessionSid }) }, 'Attach again')], 'done');
    this.term.options.cursorBlink = false;
    return true;
  }

  // A moderator watching ends the session (CLOSE 'end').
  endSession() {
    if (!this.session || this.session.state !== 'open') return;
    this.session.close({ end: true });
    this.setBanner(h('span', { dataset: { testid: 'ended' } }, `Asked ${this.agent} to end the session.`), 'done');
  }

  close() {
    this.session?.close();
    this.off?.();
    this.offReconnect?.();
    this.resizeObserver.disconnect();
    if (this.session) this.ctx.bus.unsubscribe([this.session.a2cTopic()]);
    this.term.dispose();
  }
}
