// A small Playwright driver on stdin/stdout for tests/test_e2e_browser.py: Debian's
// Chromium (headless, flags for root in a closed network), driven by JSON lines.
// In: {id, op, page?, ...args}. Out: {id, ok: true, value} or {id, ok: false, error}.
// Pages are numbered from 0; `open` makes a new one in a fresh context (its own storage).
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const browser = await chromium.launch({
  executablePath: process.env.TETHER_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'], // Playwright gives it a new empty profile
});
const pages = [];
const out = (obj) => process.stdout.write(`${JSON.stringify(obj)}\n`);

// Runs in the page (Playwright sends its source): the text of a terminal tab's whole
// buffer (scrollback and screen), trailing blanks trimmed; with `tail`, only the last
// `tail` lines up to the cursor's; with `pattern` (a JS regex source, multiline), null
// unless the text matches.
function terminalText({ agent = null, tail = 0, pattern = null }) {
  const tab = [...document.querySelectorAll('[data-testid=terminal-tab]')].filter((el) => !agent || el.dataset.agent === agent).at(-1);
  const term = tab?.tetherTerm?.term;
  if (!term) return null;
  const buf = term.buffer.active;
  const lines = [];
  for (let i = tail ? Math.max(0, buf.baseY + buf.cursorY + 1 - tail) : 0; i < buf.length; i += 1) lines.push(buf.getLine(i)?.translateToString(true) ?? '');
  while (lines.length && !lines.at(-1)) lines.pop();
  const text = lines.join('\n');
  if (pattern !== null && !new RegExp(pattern, 'm').test(text)) return null;
  return { text, cols: term.cols, rows: term.rows, cursorLine: buf.getLine(buf.baseY + buf.cursorY)?.translateToString(true) ?? '' };
}

// A test's expression (with `arg` in scope) as a function, compiled here in Node: the
// page's Content-Security-Policy forbids compiling strings there, and Playwright sends a
// function's source once instead of evaluating a string on every poll.
const compile = (expression) => new Function('arg', `return (${expression})`); // eslint-disable-line no-new-func

const ops = {
  async open({ width = 1280, height = 800 }) {
    const context = await browser.newContext({ viewport: { width, height } });
    await context.grantPermissions(['clipboard-read', 'clipboard-write']); // the terminal's Copy and Paste
    // Every Content-Security-Policy violation, as the page sees it, into the console log.
    await context.addInitScript(() => document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`securitypolicyviolation: ${e.effectiveDirective} blocked ${e.blockedURI || '(inline)'}`);
    }));
    const page = await context.newPage();
    page.on('pageerror', (e) => process.stderr.write(`page error: ${e.message}\n`));
    page.tetherLog = [];
    page.on('console', (m) => page.tetherLog.push({ type: m.type(), text: m.text() }));
    pages.push(page);
    return pages.length - 1;
  },
  // The main document's response headers.
  goto: (p, { url }) => p.goto(url).then((r) => (r ? r.headers() : null)),
  // Reloads the page as a user would (pagehide runs in the old document first).
  reload: (p) => p.reload().then(() => null),
  // Closes a page and its context (pagehide runs first); its number is not reused.
  closePage: (p) => p.context().close().then(() => null),
  // What the page has written to its console so far: [{type, text}].
  consoleLog: (p) => p.tetherLog,
  click: (p, { selector, timeout = 15000 }) => p.click(selector, { timeout }),
  fill: (p, { selector, value, timeout = 15000 }) => p.fill(selector, value, { timeout }),
  focus: (p, { selector }) => p.focus(selector),
  select: (p, { selector, value }) => p.selectOption(selector, value),
  press: (p, { key }) => p.keyboard.press(key),
  type: (p, { text }) => p.keyboard.type(text),
  viewport: (p, { width, height }) => p.setViewportSize({ width, height }),
  async wait(p, { selector, state = 'visible', timeout = 15000 }) {
    await p.waitForSelector(selector, { state, timeout });
    return null;
  },
  text: (p, { selector }) => p.textContent(selector),
  count: (p, { selector }) => p.locator(selector).count(),
  attr: (p, { selector, name }) => p.getAttribute(selector, name),
  // Waits until the terminal's text matches `pattern`.
  async waitTerminal(p, { agent = null, pattern, timeout = 15000, tail = 0 }) {
    const handle = await p.waitForFunction(terminalText, { agent, pattern, tail }, { timeout, polling: 'raf' });
    return handle.jsonValue();
  },
  terminal: (p, { agent = null }) => p.evaluate(terminalText, { agent }),
  evaluate: (p, { expression, arg = null }) => p.evaluate(compile(expression), arg),
  async waitFunction(p, { expression, arg = null, timeout = 15000 }) {
    const handle = await p.waitForFunction(compile(expression), arg, { timeout, polling: 'raf' });
    return handle.jsonValue();
  },
  screenshot: (p, { path, selector = null }) => (selector ? p.locator(selector).screenshot({ path }) : p.screenshot({ path })).then(() => path),
  async close() {
    await browser.close();
    out({ id: 'closed', ok: true });
    process.exit(0);
  },
};

out({ id: 'ready', ok: true, value: browser.version() });
for await (const line of createInterface({ input: process.stdin })) {
  const msg = JSON.parse(line);
  try {
    const fn = ops[msg.op];
    if (!fn) throw new Error(`unknown op ${msg.op}`);
    const value = msg.op === 'open' || msg.op === 'close' ? await fn(msg) : await fn(pages[msg.page ?? 0], msg);
    out({ id: msg.id, ok: true, value: value ?? null });
  } catch (e) {
    out({ id: msg.id, ok: false, error: String(e?.stack ?? e) });
  }
}
await ops.close();
