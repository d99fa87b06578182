"""The web console in a real browser (issue 5's acceptance): Debian's Chromium driven by
playwright-core (client/web/test/browser/driver.mjs, on a pipe) against `tether up` on
loopback, with real brokers (the embedded one, and Mosquitto's websocket listener from the
repo's mosquitto.conf), a real agent on real PTYs and the recorder.

1. Log in, `local` online, Connect, `echo hello-TOKEN` shows, `exit 5` shows exit code 5.
2. Resizing the viewport changes what `stty size` reports in the session.
3. `yes` then Ctrl-C: the prompt is back within 2 s; a UI click works during the flood.
4. The canary typed in the browser never appears in plaintext in any payload on `#`.
5. A user without the `shell` action sees the denial reason and gets no terminal.
6. Sessions page: searching the canary from (1) finds it; the hit starts replay there.
7. Screenshots of the instances page, a terminal and a replay: in the run's tmp dir, and
   copied to docs/img/ when TETHER_SCREENSHOTS_TO_DOCS=1.
8. Every page load carries the console's security headers (Content-Security-Policy naming
   the broker's websocket, nosniff, no-referrer), everything above runs under that policy
   without one violation, and the policy is enforced (an image from elsewhere is refused).

Node, playwright-core (`npm ci` in client/web) and /usr/bin/chromium are required: this
fails, never skips, without them (./install.sh installs them).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from stack import OS_USER, Spy, Stack, wait_for

from tether.client.console_server import content_security_policy

REPO = Path(__file__).resolve().parent.parent
WEB = REPO / "client" / "web"
CHROMIUM = os.environ.get("TETHER_CHROMIUM", "/usr/bin/chromium")
PASSPHRASE = "cara's console passphrase, long enough"
PROMPT = r"\[tp\]\$ $"
CANARIES: dict[str, str] = {}  # broker kind -> the canary typed in test 1


class Browser:
    """The Node driver: one JSON request per line, one answer per line, in order."""

    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None or not (WEB / "node_modules" / "playwright-core").is_dir() \
                or not os.access(CHROMIUM, os.X_OK):
            pytest.fail("the browser tests need node, client/web/node_modules (npm ci) and "
                        f"{CHROMIUM}: run ./install.sh")
        self.proc = subprocess.Popen([node, "test/browser/driver.mjs"], cwd=WEB, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.proc.stdout, selectors.EVENT_READ)
        self.buf = b""
        self.next_id = 0
        ready = self._read(60)
        assert ready.get("id") == "ready", ready

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sel.select(left):
                raise AssertionError(f"the browser driver did not answer within {timeout} s")
            chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
            if not chunk:
                raise AssertionError(f"the browser driver exited: {self.proc.stderr.read()[-3000:]!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg

    def __call__(self, op: str, page: int = 0, **args: Any) -> Any:
        assert self.proc.stdin is not None
        self.next_id += 1
        self.proc.stdin.write(json.dumps({"id": self.next_id, "op": op, "page": page, **args}).encode() + b"\n")
        self.proc.stdin.flush()
        reply = self._read(60 + args.get("timeout", 0) / 1000)
        assert reply["id"] == self.next_id, reply
        if not reply["ok"]:
            raise AssertionError(f"browser {op} {args}: {reply['error']}")
        return reply.get("value")

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait()


AUDIT = """
[[statement]]
id = "cara-audits"
effect = "allow"
users = ["cara"]
agents = ["*"]
actions = ["audit"]

[[statement]]
id = "erin-with-reason"
effect = "allow"
users = ["erin"]
agents = ["local"]
actions = ["shell"]
run_as = ["OSUSER", "tether-*"]
require_reason = true

[[statement]]
id = "dan-exec-only"
effect = "allow"
users = ["dan"]
agents = ["local"]
actions = ["exec"]
run_as = ["OSUSER"]
"""


@pytest.fixture(scope="module")
def console(stack: Stack) -> Stack:
    """Console users on the stack: cara (shell on local, audit), dan (exec only), erin
    (shell on local with a reason)."""
    for name, allow in (("cara", ["--allow", "local", "--run-as", OS_USER]), ("dan", []), ("erin", [])):
        r = stack.tether("authority", "user", "add", name, "--console", "--passphrase-stdin", *allow,
                         input=PASSPHRASE.encode() + b"\n")
        assert r.returncode == 0, r.stderr
    with stack.home.policy.open("a") as f:
        f.write(AUDIT.replace("OSUSER", OS_USER))
    stack.broker.reload()
    assert stack.console_url, "tether up printed no console URL"
    return stack


def shots(tmp_path_factory: pytest.TempPathFactory, stack: Stack, name: str) -> Path:
    """Where a screenshot goes: the run's tmp dir; docs/img/ too when asked for."""
    return tmp_path_factory.getbasetemp() / f"console-{stack.kind}-{name}.png"


def publish_screenshot(path: Path, name: str) -> None:
    if os.environ.get("TETHER_SCREENSHOTS_TO_DOCS") == "1":
        shutil.copyfile(path, REPO / "docs" / "img" / f"console-{name}.png")


def security_headers(stack: Stack) -> dict[str, str]:
    """What every console response must carry: the policy names the broker's websocket
    URL from /config.json."""
    with urllib.request.urlopen(stack.console_url + "config.json", timeout=10) as r:
        ws_url = json.loads(r.read())["ws_url"]
    return {"content-security-policy": content_security_policy(ws_url),
            "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


def login(b: Browser, stack: Stack, user: str) -> int:
    page = int(b("open"))
    headers = b("goto", page, url=stack.console_url)
    expected = security_headers(stack)
    assert {k: headers.get(k) for k in expected} == expected
    assert "connect-src 'self' ws://" in expected["content-security-policy"]
    b("fill", page, selector="#login-user", value=user)
    b("fill", page, selector="#login-pass", value=PASSPHRASE)
    b("click", page, selector="#login-submit")
    b("wait", page, selector="#nav-instances", timeout=60000)  # Argon2id runs in the page
    return page


def assert_no_policy_violations(b: Browser, page: int) -> None:
    """The page worked under its Content-Security-Policy without tripping it once (the
    driver logs each securitypolicyviolation event; Chromium logs each refusal)."""
    log = b("consoleLog", page)
    tripped = [e["text"] for e in log if "securitypolicyviolation" in e["text"]
               or "Content Security Policy" in e["text"]]
    assert not tripped, tripped


def type_line(b: Browser, page: int, text: str) -> None:
    b("type", page, text=text)
    b("press", page, key="Enter")


def open_terminal(b: Browser, page: int) -> None:
    before = int(b("count", page, selector="[data-testid=terminal-tab]"))
    b("click", page, selector="#nav-instances")
    b("click", page, selector="[data-testid=instance-row][data-agent=local][data-online=true] [data-testid=connect]")
    b("waitFunction", page, expression="document.querySelectorAll('[data-testid=terminal-tab]').length > arg", arg=before)
    b("waitTerminal", page, pattern=r"\S", timeout=30000)  # the shell's first prompt
    b("click", page, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=terminal]")
    type_line(b, page, "export PS1='[t''p]$ '")
    b("waitTerminal", page, pattern=PROMPT, tail=1, timeout=30000)


def active_term(b: Browser, page: int) -> dict[str, Any]:
    value: dict[str, Any] = b("evaluate", page, expression=(
        "(() => { const t = [...document.querySelectorAll('[data-testid=terminal-tab]')].at(-1).tetherTerm.term;"
        " return {cols: t.cols, rows: t.rows}; })()"))
    return value


@pytest.mark.parametrize("stack", ["amqtt", "mosquitto"], indirect=True)
def test_browser_shell(browser: Browser, console: Stack, tmp_path_factory: pytest.TempPathFactory) -> None:
    stack, b = console, browser
    spy = Spy(stack)
    try:
        token = os.urandom(6).hex()
        canary = f"hello-{token}"
        page = login(b, stack, "cara")
        b("wait", page, selector="[data-testid=instance-row][data-agent=local][data-online=true]", timeout=30000)
        # The run-as menu offers what the policy allows cara there (the authority answers).
        b("waitFunction", page, timeout=30000, expression=(
            "[...(document.querySelector('[data-agent=local] [data-testid=run-as]')?.options ?? [])]"
            ".some((o) => o.textContent.endsWith(' (default)'))"))
        assert run_as_options(b, page) == [f"{OS_USER} (default)"]
        shot = shots(tmp_path_factory, stack, "instances")
        b("screenshot", page, path=str(shot))
        if stack.kind == "amqtt":
            publish_screenshot(shot, "instances")

        # 1. Connect, echo, and (below) exit 5.
        open_terminal(b, page)
        assert int(b("count", page, selector="[data-testid=recorded]:not([hidden])")) == 1
        type_line(b, page, f"echo {canary}")
        b("waitTerminal", page, pattern=f"^{canary}$")
        CANARIES[stack.kind] = canary

        # 2. The viewport's size reaches the session's PTY.
        size = active_term(b, page)
        type_line(b, page, "echo sz-$(stty size)-zs")
        b("waitTerminal", page, pattern=f"^sz-{size['rows']} {size['cols']}-zs$")
        shot = shots(tmp_path_factory, stack, "terminal")
        b("screenshot", page, path=str(shot))
        if stack.kind == "amqtt":
            publish_screenshot(shot, "terminal")
        b("viewport", page, width=960, height=600)
        b("waitFunction", page, expression=(
            "(() => { const t = [...document.querySelectorAll('[data-testid=terminal-tab]')].at(-1).tetherTerm.term;"
            " return t.cols !== arg.cols && t.rows !== arg.rows; })()"), arg=size)
        smaller = active_term(b, page)
        assert smaller["cols"] < size["cols"] and smaller["rows"] < size["rows"]
        type_line(b, page, "echo sz-$(stty size)-zs")
        b("waitTerminal", page, pattern=f"^sz-{smaller['rows']} {smaller['cols']}-zs$")
        b("viewport", page, width=1280, height=800)

        type_line(b, page, "exit 5")
        b("waitFunction", page, expression=(
            "document.querySelector('[data-testid=exit-code]')?.textContent === '5'"), timeout=30000)
        assert "exited with code" in str(b("text", page, selector="[data-testid=session-banner]"))

        # 3. A second terminal: `yes` floods it, the UI stays responsive, Ctrl-C is quick.
        open_terminal(b, page)

        def round_trip() -> float:
            """To the instances tab and back to the terminal, each switch waited for."""
            began = time.monotonic()
            b("click", page, selector="#nav-instances")
            b("wait", page, selector="#nav-instances-panel", timeout=10000)
            assert b("attr", page, selector="#nav-instances", name="aria-selected") == "true"
            b("click", page, selector="[role=tab][id^=term-]:last-of-type")
            b("wait", page, selector="[data-testid=terminal-tab]:not([hidden])", timeout=10000)
            return time.monotonic() - began

        quiet_took = round_trip()
        type_line(b, page, "yes tether-flood")
        b("waitTerminal", page, pattern=r"(^tether-flood\n){20}", tail=25, timeout=30000)
        click_took = round_trip()
        b("click", page, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=terminal]")
        still = b("terminal", page, tail=3)
        assert "tether-flood" in still["text"], still  # the flood was still running
        pressed = time.monotonic()
        b("press", page, key="Control+c")
        b("waitTerminal", page, pattern=PROMPT, tail=1, timeout=60000)
        prompt_took = time.monotonic() - pressed
        print(f"flood: UI round trip {click_took:.2f} s (without the flood {quiet_took:.2f} s), "
              f"prompt back {prompt_took:.2f} s after Ctrl-C")
        # No figure is claimed for the click ("the UI stays responsive"): the flood may add
        # at most 2 s to the same two tab switches without it (measured: about 1 s more, on
        # both brokers under load; the quiet round trip is mostly the driver's own calls).
        assert click_took < quiet_took + 2.0, (click_took, quiet_took)
        assert prompt_took < 2.0, prompt_took
        type_line(b, page, "exit 0")
        b("waitFunction", page, expression=(
            "[...document.querySelectorAll('[data-testid=exit-code]')].at(-1)?.textContent === '0'"), timeout=30000)

        # 4. Nothing on the broker carries the canary (or the passphrase) in plaintext.
        seen = spy.snapshot()
        sessions = [t for t, _ in seen if "/s/cara.c/" in t]
        assert sessions, "the spy saw no session traffic"
        leaks = [t for t, p in seen if canary.encode() in p or PASSPHRASE.encode() in p]
        assert not leaks, leaks
        # The console asks for 3 KiB output frames: every packet under 4 KiB (Mosquitto's
        # websocket listener is slow above that).
        largest = max(len(p) for t, p in seen if "/s/cara.c/" in t and t.endswith("/a2c"))
        assert largest < 4096, largest

        # 5. All of that ran under the console's Content-Security-Policy without tripping
        # it, and the policy is enforced: an image from elsewhere is refused (and reported).
        assert_no_policy_violations(b, page)
        b("evaluate", page, expression=(
            "(() => { const i = document.createElement('img'); i.src = 'http://127.0.0.1:9/x.png';"
            " document.body.append(i); return true; })()"))
        wait_for(lambda: any("securitypolicyviolation: img-src" in e["text"] for e in b("consoleLog", page)),
                 timeout=10, what="the refused image in the console log")
    finally:
        spy.close()


@pytest.mark.parametrize("stack", ["amqtt"], indirect=True)
def test_denial_shows_the_reason_and_no_terminal(browser: Browser, console: Stack) -> None:
    b = browser
    page = login(b, console, "dan")
    b("click", page, selector="[data-testid=instance-row][data-agent=local][data-online=true] [data-testid=connect]",
      timeout=30000)
    b("wait", page, selector="[data-testid=denial] [data-testid=denial-reason]", timeout=30000)
    reason = str(b("text", page, selector="[data-testid=denial-reason]"))
    assert reason.startswith("denied") and "shell" in reason, reason
    assert int(b("count", page, selector="[data-testid=terminal] .xterm")) == 0
    # The instances page says so before any click: the authority's access answer.
    b("click", page, selector="#nav-instances")
    b("wait", page, selector="[data-agent=local] [data-testid=run-as-denied]", timeout=30000)
    why = str(b("attr", page, selector="[data-agent=local] [data-testid=run-as-denied]", name="title"))
    assert "shell" in why, why
    assert_no_policy_violations(b, page)


def run_as_options(b: Browser, page: int) -> list[str]:
    value: list[str] = b("evaluate", page, expression=(
        "[...(document.querySelector('[data-agent=local] [data-testid=run-as]')?.options ?? [])]"
        ".map((o) => o.textContent)"))
    return value


@pytest.mark.parametrize("stack", ["amqtt"], indirect=True)
def test_run_as_reason_keyboard_clipboard_and_reconnect(browser: Browser, console: Stack,
                                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    stack, b = console, browser
    page = login(b, stack, "erin")
    # The run-as menu offers what the policy allows erin on `local`: OS_USER, by default,
    # with a reason; "Other…" because a glob (tether-*) allows more.
    b("waitFunction", page, arg=OS_USER, timeout=30000, expression=(
        "[...(document.querySelector('[data-agent=local] [data-testid=run-as]')?.options ?? [])]"
        ".some((o) => o.textContent.startsWith(arg + ' (default)'))"))
    assert run_as_options(b, page) == [f"{OS_USER} (default) · reason", "Other…"]
    b("select", page, selector="[data-agent=local] [data-testid=run-as]", value="\u0001other")
    b("wait", page, selector="[data-agent=local] [data-testid=run-as-other]")
    b("screenshot", page, path=str(shots(tmp_path_factory, stack, "run-as-other")))
    b("select", page, selector="[data-agent=local] [data-testid=run-as]", value=OS_USER)
    b("wait", page, selector="[data-agent=local] [data-testid=run-as-other]", state="hidden")

    # Keyboard only: from the run-as menu, Tab to Connect, Enter; the reason dialog has the
    # focus; type the reason, Enter: the terminal opens.
    b("focus", page, selector="[data-agent=local] [data-testid=run-as]")
    b("press", page, key="Tab")
    assert b("evaluate", page, expression="document.activeElement.dataset.testid") == "connect"
    b("press", page, key="Enter")
    b("wait", page, selector="[data-testid=reason-dialog]")
    b("screenshot", page, path=str(shots(tmp_path_factory, stack, "reason")))
    assert b("evaluate", page, expression="document.activeElement.id") == "reason-input"
    reason = f"ticket OPS-{os.urandom(3).hex()}"
    b("type", page, text=reason)
    b("press", page, key="Enter")
    b("wait", page, selector="[data-testid=reason-dialog]", state="detached")
    b("waitTerminal", page, pattern=r"\S", timeout=30000)
    b("click", page, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=terminal]")
    type_line(b, page, "export PS1='[t''p]$ '")
    b("waitTerminal", page, pattern=PROMPT, tail=1, timeout=30000)
    audit = stack.tether("audit", "--user", "erin", "--since", "10m")
    assert audit.returncode == 0, audit.stderr
    assert "grant-issued" in audit.stdout.decode() and reason in audit.stdout.decode()

    # Copy: select a line of output and press Copy; the clipboard holds it.
    token = os.urandom(5).hex()
    type_line(b, page, f"echo copy-{token}")
    b("waitTerminal", page, pattern=f"^copy-{token}$")
    b("evaluate", page, arg=f"copy-{token}", expression=(
        "(() => { const t = [...document.querySelectorAll('[data-testid=terminal-tab]')].at(-1).tetherTerm.term;"
        " const buf = t.buffer.active; for (let i = buf.length - 1; i >= 0; i -= 1) {"
        " if (buf.getLine(i).translateToString(true) === arg) { t.select(0, i, arg.length); return i; } } return -1; })()"))
    b("click", page, selector="[data-testid=terminal-tab]:not([hidden]) button:text('Copy')")
    b("waitFunction", page, arg=f"copy-{token}", expression="navigator.clipboard.readText().then((t) => t === arg)")
    # Paste: what the clipboard holds is typed into the session.
    b("evaluate", page, arg=f"echo pas''ted-{token}", expression="navigator.clipboard.writeText(arg).then(() => true)")
    b("click", page, selector="[data-testid=terminal-tab]:not([hidden]) button:text('Paste')")
    b("waitTerminal", page, pattern=f"echo pas''ted-{token}$", tail=1)  # on the command line
    b("press", page, key="Enter")
    b("waitTerminal", page, pattern=f"^pasted-{token}$")

    # The broker connection drops: a banner says so, the console reconnects by itself, the
    # terminal says the session continues, and it does.
    b("evaluate", page, expression="(window.tether.ctx.bus.client.stream.destroy(), true)")
    b("waitFunction", page, timeout=10000, expression=(
        "(() => { const el = document.querySelector('.conn-banner');"
        " return !el.hidden && /reconnecting/i.test(el.textContent); })()"))
    b("wait", page, selector=".conn-banner", state="hidden", timeout=30000)
    b("waitFunction", page, timeout=10000, expression=(
        "document.querySelector('[data-testid=terminal-tab]:not([hidden]) [data-testid=session-banner]')"
        "?.textContent.includes('the session continues')"))
    b("click", page, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=terminal]")
    type_line(b, page, f"echo after-{token}")
    b("waitTerminal", page, pattern=f"^after-{token}$", timeout=30000)

    # The page tabs follow the arrow keys.
    b("focus", page, selector="[role=tab][id^=term-]")
    b("press", page, key="ArrowLeft")
    assert b("attr", page, selector="#nav-sessions", name="aria-selected") == "true"
    b("press", page, key="ArrowRight")
    assert b("attr", page, selector="[role=tab][id^=term-]", name="aria-selected") == "true"
    b("click", page, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=terminal]")
    type_line(b, page, "exit 0")
    b("waitFunction", page, timeout=30000, expression=(
        "document.querySelector('[data-testid=exit-code]')?.textContent === '0'"))
    assert_no_policy_violations(b, page)


@pytest.mark.parametrize("stack", ["amqtt", "mosquitto"], indirect=True)
def test_search_and_replay(browser: Browser, console: Stack, tmp_path_factory: pytest.TempPathFactory) -> None:
    stack, b = console, browser
    canary = CANARIES.get(stack.kind)
    if canary is None:
        pytest.fail("test_browser_shell did not record its canary")
    page = login(b, stack, "cara")
    b("click", page, selector="#nav-sessions")
    b("wait", page, selector="[data-testid=session-row]", timeout=30000)
    # The list's filters: a user with no sessions, then cara's on local in the last hour.
    b("fill", page, selector="#filter-user", value="nobody")
    b("click", page, selector="#list-refresh")
    b("waitFunction", page, expression=(
        "document.querySelector('#nav-sessions-panel [role=status]')?.textContent === '0 sessions'"))
    b("fill", page, selector="#filter-user", value="cara")
    b("fill", page, selector="#filter-agent", value="local")
    b("select", page, selector="#filter-since", value="3600")
    b("click", page, selector="#list-refresh")
    b("wait", page, selector="[data-testid=session-row]", timeout=30000)
    rows = b("evaluate", page, expression=(
        "[...document.querySelectorAll('[data-testid=session-row]')].map((r) => [r.cells[1].textContent, r.cells[2].textContent])"))
    assert rows and all(r == ["cara", "local"] for r in rows), rows
    b("fill", page, selector="#search-box", value=canary)

    def hit() -> bool:  # the recorder indexes screens within seconds
        b("click", page, selector="#search-submit")
        b("waitFunction", page, expression=(
            "document.querySelector('#nav-sessions-panel [role=status]')?.textContent.includes(' for ')"
            " || !!document.querySelector('[data-testid=audit-error]')"), timeout=15000)
        return int(b("count", page, selector="[data-testid=search-hit]")) > 0
    wait_for(hit, timeout=60, what="the canary in the search results")
    snippet = str(b("text", page, selector="[data-testid=search-hit] mark"))
    assert snippet == canary
    t = float(b("attr", page, selector="[data-testid=search-hit]", name="data-t"))
    b("click", page, selector="[data-testid=search-hit]")
    started = b("waitFunction", page, timeout=60000, expression=(
        "(() => { const p = document.querySelector('[data-testid=replay]')?.player;"
        " const t = p?.getCurrentTime(); return typeof t === 'number' && t > 0 ? t : null; })()"))
    assert t - 1.5 <= started <= t + 3, (t, started)
    b("waitFunction", page, timeout=15000, arg=canary, expression=(
        "document.querySelector('[data-testid=replay]').textContent.includes(arg)"))
    b("waitFunction", page, timeout=30000, expression=(
        "document.querySelector('[data-testid=verification]')?.textContent.startsWith('verified')"))
    shot = shots(tmp_path_factory, stack, "replay")
    b("screenshot", page, path=str(shot))
    if stack.kind == "amqtt":
        publish_screenshot(shot, "replay")
    assert_no_policy_violations(b, page)
