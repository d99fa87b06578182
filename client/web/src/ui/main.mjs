// The tether console: a single-page app. Everything secret happens here, in the page:
// the login key is derived from the passphrase, grants are requested and sessions are
// encrypted end to end exactly as the CLI does. The server and the broker see ciphertext.
import mqtt from 'mqtt';
import { ready } from '../proto/crypto.mjs';
import { AuthorityAsker } from '../proto/authz.mjs';
import { b64d } from '../proto/encoding.mjs';
import { brokerToken, consoleSlot, deriveLogin } from '../proto/login.mjs';
import { Topics, validName } from '../proto/topics.mjs';
import { Instances } from './instances.mjs';
import { TerminalTab } from './terminal.mjs';
import { SessionsPage } from './sessions.mjs';
import { LivePage } from './live.mjs';
import { h } from './dom.mjs';

const app = document.getElementById('app');
const t0 = performance.now();
export const clock = { wall: () => Date.now() / 1000, mono: () => (performance.now() - t0) / 1000 };
export const timers = { set: (fn, s) => setTimeout(fn, s * 1000), clear: (t) => clearTimeout(t) };

async function loadConfig() {
  const res = await fetch('config.json', { cache: 'no-store' });
  if (!res.ok) throw new Error(`config.json: HTTP ${res.status}`);
  const c = await res.json();
  return { wsUrl: c.ws_url, topics: new Topics(c.prefix || 'tether/v1'),
    authority: { ed25519: b64d(c.authority.ed25519), x25519: b64d(c.authority.x25519) }, recorder: c.recorder ?? null };
}

// One MQTT connection per console; handlers are routed by exact topic or by a predicate.
class Bus {
  constructor(client) {
    this.client = client;
    this.handlers = new Set();
    client.on('message', (topic, payload) => {
      const bytes = new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
      for (const fn of [...this.handlers]) fn(topic, bytes);
    });
  }
  listen(fn) { this.handlers.add(fn); return () => this.handlers.delete(fn); }
  publish(topic, payload, qos) { this.client.publish(topic, payload, { qos }); }
  // Dropped while offline, not queued by mqtt.js: the session channel resends it itself.
  publishFrame(topic, payload, qos) { if (this.client.connected) this.client.publish(topic, payload, { qos }); }
  subscribe(topics) {
    return new Promise((resolve, reject) => {
      this.client.subscribe(topics, { qos: 1 }, (err, granted) => {
        if (err) reject(err);
        else if (granted?.some((g) => g.qos === 128)) reject(new Error(`the broker refused a subscription: ${granted.filter((g) => g.qos === 128).map((g) => g.topic).join(', ')}`));
        else resolve();
      });
    });
  }
  unsubscribe(topics) { this.client.unsubscribe(topics); }
}

// The console slot logs in with a one-time token signed by the user's key, a fresh one for
// every connection attempt (the broker takes each token once; protocol.md §13.1).
function connect(config, slot, key) {
  return new Promise((resolve, reject) => {
    const token = () => brokerToken(key, slot, slot, clock.wall());
    // keepalive 5 s, as the CLI's: a link that goes silent without closing (no reset) is
    // noticed within 7.5 s (mqtt.js pings 5 s after the broker last acked or answered a
    // ping, and gives up 2.5 s later), not 45 s; the cost is a small packet each way per 5 s.
    const client = mqtt.connect(config.wsUrl, {
      username: slot, password: token(), clientId: slot, clean: true, protocolVersion: 4, keepalive: 5,
      reconnectPeriod: 2000, connectTimeout: 10000, resubscribe: true,
    });
    client.on('reconnect', () => { client.options.password = token(); });
    const fail = (err) => {
      client.end(true);
      const msg = String(err?.message ?? err);
      reject(new Error(/not authori[sz]ed|bad user ?name or password|code 4|code 5/i.test(msg)
        ? 'The broker refused the login: check the user name and passphrase, that `tether authority user add NAME --console` registered this user, and that this computer\'s clock is right (within 2 minutes).'
        : `Could not reach the broker at ${config.wsUrl}: ${msg}`));
    };
    let done = false;
    const once = (fn) => (arg) => { if (!done) { done = true; client.off('error', onError); client.off('close', onClose); fn(arg); } };
    const onError = once(fail);
    const onClose = once(() => fail(new Error('the connection closed before the broker accepted it')));
    client.once('connect', once(() => resolve(client)));
    client.on('error', onError);
    client.on('close', onClose);
  });
}

function loginView(config, error = '') {
  app.replaceChildren();
  const err = h('div', { class: 'error', role: 'alert', id: 'login-error' }, error);
  const user = h('input', { id: 'login-user', name: 'username', autocomplete: 'username', required: true, autofocus: true, spellcheck: 'false' });
  const pass = h('input', { id: 'login-pass', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const submit = h('button', { id: 'login-submit', class: 'primary', type: 'submit' }, 'Sign in');
  const form = h('form', { class: 'login', 'aria-labelledby': 'login-title' },
    h('h1', { id: 'login-title' }, 'tether console'),
    h('p', {}, 'Your passphrase never leaves this page: it derives your key here.'),
    h('label', { for: 'login-user' }, 'User name'), user,
    h('label', { for: 'login-pass' }, 'Passphrase'), pass, submit, err);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const name = user.value.trim();
    if (!validName(name)) { err.textContent = 'Not a valid user name.'; return; }
    submit.disabled = true;
    err.textContent = '';
    submit.textContent = 'Deriving key…';
    await new Promise((r) => setTimeout(r, 20)); // let the label paint before Argon2id
    try {
      const login = deriveLogin(config.authority.ed25519, name, pass.value);
      submit.textContent = 'Connecting…';
      const slot = consoleSlot(name);
      const client = await connect(config, slot, login.key);
      pass.value = '';
      shell(config, { name, slot, key: login.key }, client);
    } catch (e) {
      err.textContent = e.message;
      submit.disabled = false;
      submit.textContent = 'Sign in';
    }
  });
  app.append(form);
  user.focus();
}

function shell(config, me, client) {
  app.replaceChildren();
  const bus = new Bus(client);
  const ctx = { config, me, bus, topics: config.topics, clock, timers };
  ctx.asker = new AuthorityAsker({ user: me.name, key: me.key, slot: me.slot, authority: config.authority, topics: config.topics,
    publish: (t, p, q) => bus.publish(t, p, q), clock, timers });
  bus.listen((topic, payload) => ctx.asker.onMessage(topic, payload));
  const tabs = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Console pages' });
  const connBanner = h('div', { class: 'conn-banner', role: 'status', hidden: true });
  const mainEl = h('main');
  app.append(h('header', { class: 'top' }, h('span', { class: 'brand' }, 'tether'), tabs,
    h('span', { class: 'who' }, `${me.name} · ${me.slot}`)), connBanner, mainEl);

  const pages = [];
  let current = null;
  function addPage({ id, label, el, closable = false, onShow = () => {}, onClose = null }) {
    const tab = h('button', { class: 'tab', role: 'tab', id, 'aria-selected': 'false', 'aria-controls': `${id}-panel` },
      h('span', {}, label));
    el.id = `${id}-panel`;
    el.setAttribute('role', 'tabpanel');
    el.hidden = true;
    const page = { id, tab, el, onShow };
    tab.addEventListener('click', () => show(page));
    if (closable) {
      const x = h('span', { class: 'x', role: 'button', tabindex: '0', 'aria-label': `Close ${label}`, title: 'Close' }, '×');
      const close = (ev) => { ev.stopPropagation(); onClose?.(); removePage(page); };
      x.addEventListener('click', close);
      x.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') close(ev); });
      tab.append(x);
    }
    tabs.append(tab);
    mainEl.append(el);
    pages.push(page);
    return page;
  }
  function show(page) {
    for (const p of pages) {
      const on = p === page;
      p.tab.setAttribute('aria-selected', String(on));
      p.el.hidden = !on;
    }
    current = page;
    page.onShow();
  }
  function removePage(page) {
    const i = pages.indexOf(page);
    if (i < 0) return;
    pages.splice(i, 1);
    page.tab.remove();
    page.el.remove();
    if (current === page) show(pages[Math.max(0, i - 1)]);
  }
  tabs.addEventListener('keydown', (ev) => {
    if (ev.key !== 'ArrowRight' && ev.key !== 'ArrowLeft') return;
    const i = pages.indexOf(current);
    const next = pages[(i + (ev.key === 'ArrowRight' ? 1 : pages.length - 1)) % pages.length];
    show(next);
    next.tab.focus();
  });

  // A terminal tab: a new shell, or (opts.attach: a live session's sid) one taken over
  // (mode shell), watched or joined.
  ctx.liveTabs = new Set(); // the tabs whose session is open
  const openTerminal = (agent, runAs, reason = null, { mode = 'shell', attach = null } = {}) => {
    const term = new TerminalTab(ctx, agent, runAs, reason, { mode, attach,
      retry: (r, again = { mode, attach }) => { removePage(page); openTerminal(agent, runAs, r, again); } });
    const verb = { watch: 'watching ', join: 'joined ' }[mode] ?? '';
    const page = addPage({ id: `term-${term.sid}`, label: `${verb}${agent}${runAs ? ` (${runAs})` : ''}`, el: term.el, closable: true,
      onShow: () => term.focus(), onClose: () => term.close() });
    show(page);
    term.start();
    return term;
  };
  const instances = new Instances(ctx, openTerminal);
  const sessions = new SessionsPage(ctx);
  const live = new LivePage(ctx, (s, mode) => openTerminal(s.agent, s.run_as, null, { mode, attach: s.sid }));
  const pi = addPage({ id: 'nav-instances', label: 'Instances', el: instances.el, onShow: () => instances.focus() });
  addPage({ id: 'nav-live', label: 'Live sessions', el: live.el, onShow: () => live.shown() });
  addPage({ id: 'nav-sessions', label: 'Sessions', el: sessions.el, onShow: () => sessions.shown() });
  show(pi);
  mainEl.before(live.offer);
  bus.subscribe(ctx.asker.subscriptions()).catch(() => {}).finally(() => {
    instances.start();
    live.offerOnSignIn(); // after a reload, or in another browser: the user's live shells
  });
  // Closing or reloading the page detaches its shells (CLOSE 'detach'), so they wait for
  // an attach instead of ending, where the grant's detach_timeout allows; others end.
  window.addEventListener('pagehide', () => {
    for (const t of [...ctx.liveTabs]) if (!(t.mode === 'shell' && t.detach())) t.session?.close();
    // mqtt.js corks its stream for each packet and uncorks on a setTimeout(0) (its
    // process.nextTick in the browser), which never runs in a page being unloaded: the
    // CLOSE frames would stay unsent. Uncorked here, they go to the websocket now.
    const stream = client.stream;
    for (let i = 0; i < 1000 && stream?.writableCorked; i += 1) stream.uncork();
  });
  // A page back from the browser's cache has lost its connection and its sessions: start over.
  window.addEventListener('pageshow', (ev) => { if (ev.persisted) location.reload(); });

  // Broker connection state. One console slot per user: another tab logging in as the
  // same user takes the connection over, and the broker drops this one soon after every
  // reconnect. Only a connection the broker accepted counts as a drop: a reconnect attempt
  // refused during a network cut closes too, and is not a takeover.
  let connectedAt = clock.mono();
  let accepted = true;
  let quickDrops = 0;
  let fade = null;
  const connStatus = (content, kind = '', hideAfter = 0) => {
    timers.clear(fade);
    connBanner.className = `conn-banner ${kind}`;
    connBanner.replaceChildren(...[].concat(content));
    connBanner.hidden = false;
    fade = hideAfter ? timers.set(() => { connBanner.hidden = true; }, hideAfter) : null;
  };
  const reconnecting = () => connStatus('Disconnected from the broker; reconnecting…', 'warn');
  client.on('close', () => {
    if (accepted) {
      accepted = false;
      quickDrops = clock.mono() - connectedAt < 5 ? quickDrops + 1 : 0;
    }
    if (quickDrops >= 2) {
      client.end(true);
      connStatus(['This console was opened in another tab or window (one console connection per user). ',
        h('button', { onclick: () => location.reload() }, 'Use it here')], 'warn');
    } else {
      reconnecting();
    }
  });
  client.on('connect', () => {
    connectedAt = clock.mono();
    accepted = true;
    connStatus('Reconnected to the broker.', 'ok', 5);
    for (const p of pages) p.reconnected?.();
    document.dispatchEvent(new CustomEvent('tether-reconnected'));
  });
  // mqtt.js emits 'offline' from inside its own 'close' handling (before ours runs): the
  // same words, so the banner does not flicker between two texts.
  client.on('offline', () => { if (quickDrops < 2) reconnecting(); });
  window.tether = { ctx }; // for debugging from the browser console
}

(async () => {
  try {
    await ready;
    const config = await loadConfig();
    loginView(config);
  } catch (e) {
    app.replaceChildren(h('div', { class: 'login' }, h('h1', {}, 'tether console'), h('div', { class: 'error', role: 'alert' }, `Cannot start: ${e.message}`)));
  }
})();
