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

// The text of a terminal tab's whole buffer (scrollback and screen), trailing blanks trimmed.
function terminalText(agent, tail = 0) {
  const tab = [...document.querySelectorAll('[data-testid=terminal-tab]')].filter((el) => !agent || el.dataset.agent === agent).at(-1);
  const term = tab?.tetherTerm?.term;
  if (!term) return null;
  const buf = term.buffer.active;
  const lines = [];
  for (let i = tail ? Math.max(0, buf.baseY + buf.cursorY + 1 - tail) : 0; i < buf.length; i += 1) lines.push(buf.getLine(i)?.translateToString(true) ?? '');
  while (lines.length && !lines.at(-1)) lines.pop();
  return { text: lines.join('\n'), cols: term.cols, rows: term.rows, cursorLine: buf.getLine(buf.baseY + buf.cursorY)?.translateToString(true) ?? '' };
}

const ops = {
  async open({ width = 1280, height = 800 }) {
    const context = await browser.newContext({ viewport: { width, height } });
    await context.grantPermissions(['clipboard-read', 'clipboard-write']); // the terminal's Copy and Paste
    const page = await context.newPage();
    page.on('pageerror', (e) => process.stderr.write(`page error: ${e.message}\n`));
    pages.push(page);
    return pages.length - 1;
  },
  goto: (p, { url }) => p.goto(url).then(() => null),
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
  // Waits until the terminal's text matches `pattern` (a JS regex source, multiline).
  // With `tail`, only the last `tail` lines up to the cursor's.
  async waitTerminal(p, { agent = null, pattern, timeout = 15000, tail = 0 }) {
    const handle = await p.waitForFunction(({ agent: a, pattern: re, fn, tail: n }) => {
      const t = new Function(`return (${fn})`)()(a, n); // eslint-disable-line no-new-func
      return t && new RegExp(re, 'm').test(t.text) ? t : null;
    }, { agent, pattern, fn: terminalText.toString(), tail }, { timeout, polling: 'raf' });
    return handle.jsonValue();
  },
  terminal: (p, { agent = null }) => p.evaluate(({ a, fn }) => new Function(`return (${fn})`)()(a), { a: agent, fn: terminalText.toString() }), // eslint-disable-line no-new-func
  evaluate: (p, { expression, arg = null }) => p.evaluate(({ e, a }) => new Function('arg', `return (${e})`)(a), { e: expression, a: arg }), // eslint-disable-line no-new-func
  async waitFunction(p, { expression, arg = null, timeout = 15000 }) {
    const handle = await p.waitForFunction(({ e, a }) => new Function('arg', `return (${e})`)(a), { e: expression, a: arg }, { timeout, polling: 'raf' }); // eslint-disable-line no-new-func
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
