"""Issue 11 items 4 and 5 in the web console: reattach, watch and join, in real headless
Chromium (tests/test_e2e_browser.py's driver) against `tether up` on both brokers, with a
real agent on real PTYs.

1. Reload: lena has a shell open and reloads the page. Closing the page detaches the
   shell (CLOSE `detach`: the live list says "detached", which without it would stay
   "attached" for the agent's 300 s client timeout); signing in again offers it
   ("You have a live shell session." with an Attach button); Attach opens a tab whose
   screen shows what was typed before the reload (the agent's replay), and typing works.
   Attaching it from another tab tells the earlier one "Detached: attached from another
   client."; the tab's Detach button detaches it again ("Detached from session SID on
   local; it keeps running for 10 min."), "Attach again" comes back, `exit 0` ends it.
2. Watch and join: walt (console user, policy `watch`/`join` on `local`) finds lena's
   shell in "Live sessions" with Watch and Join and no Attach; watching shows her output,
   the tab says "Watching, read-only", the moderator's "End session" is not offered, and
   what walt types is never sent (his channel sends no frame) and never runs in her shell;
   lena is told he started and stopped watching. Joining writes: his command runs in her
   shell, she sees "joined" and "left".
3. Moderated: lena's shell waits for a moderator (group leads); walt, in leads, watches it
   from "Live sessions" (listed "waiting for a moderator"), her held line then runs, and
   his tab's "End session" (CLOSE `end`) ends her session ("session ended by moderator").

The waits are on conditions (the page's text, the authority's answers), never sleeps.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stack import OS_USER, Stack, policy
from test_e2e_browser import PASSPHRASE, PROMPT, Browser, login, open_terminal, type_line

from tether.authority.registry import Registry

SHOTS = Path(os.environ["TETHER_LIVE_SHOTS"]) if os.environ.get("TETHER_LIVE_SHOTS") else None

WALT = f"""
[[statement]]
id = "walt-watches"
effect = "allow"
users = ["walt"]
agents = ["local"]
actions = ["watch", "join"]
run_as = ["{OS_USER}"]
"""

LAST_TAB = "[...document.querySelectorAll('[data-testid=terminal-tab]')].at(-1)"


@pytest.fixture(scope="module")
def people(stack: Stack) -> Stack:
    """lena: a shell on `local` (the default detach_timeout, 10 min); walt: no shell of his
    own, but watch and join on `local` by policy."""
    for name, allow in (("lena", ["--allow", "local", "--run-as", OS_USER]), ("walt", [])):
        r = stack.tether("authority", "user", "add", name, "--console", "--passphrase-stdin", *allow,
                         input=PASSPHRASE.encode() + b"\n")
        assert r.returncode == 0, r.stderr
    with stack.home.policy.open("a") as f:
        f.write(WALT)
    stack.broker.reload()
    return stack


def sign_in_again(b: Browser, page: int, user: str) -> None:
    """The login form of a reloaded page."""
    b("wait", page, selector="#login-user", timeout=30000)
    b("fill", page, selector="#login-user", value=user)
    b("fill", page, selector="#login-pass", value=PASSPHRASE)
    b("click", page, selector="#login-submit")
    b("wait", page, selector="#nav-instances", timeout=60000)


def last_tab_sid(b: Browser, page: int) -> str:
    sid = str(b("evaluate", page, expression=f"{LAST_TAB}.dataset.sid"))
    assert len(sid) == 32, sid
    return sid


def live_row(b: Browser, page: int, sid: str, state: str | None = None, timeout: float = 30) -> str:
    """Refreshes "Live sessions" until the authority lists `sid` (with a state starting
    with `state`, if given); each round waits for the authority's answer. Returns the
    row's state text."""
    b("click", page, selector="#nav-live")
    row = f"[data-testid=live-row][data-sid='{sid}']"
    deadline = time.monotonic() + timeout
    seen = None
    while True:
        b("click", page, selector="#live-refresh")
        b("waitFunction", page, expression="!document.querySelector('#live-refresh').disabled", timeout=15000)
        if int(b("count", page, selector=row)):
            seen = str(b("text", page, selector=f"{row} [data-testid=live-state]"))
            if state is None or seen.startswith(state):
                return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"session {sid} not listed{f' as {state}' if state else ''} within {timeout} s "
                                 f"(last: {seen!r}); the page says {b('text', page, selector='#nav-live-panel')!r}")


def shot(b: Browser, page: int, name: str) -> None:
    """A screenshot into $TETHER_LIVE_SHOTS, when set (for looking at the UI)."""
    if SHOTS is not None:
        b("screenshot", page, path=str(SHOTS / f"live-{name}.png"))


def terminal_text(b: Browser, page: int) -> str:
    t = b("terminal", page)
    return str(t["text"]) if t else ""


@pytest.mark.parametrize("stack", ["amqtt", "mosquitto"], indirect=True)
def test_reload_offers_reattach_and_the_screen_comes_back(browser: Browser, people: Stack) -> None:
    stack, b = people, browser
    token = os.urandom(4).hex()
    page = login(b, stack, "lena")
    try:
        reload_and_reattach(b, page, token)
    finally:
        b("closePage", page)  # one console connection per user: the next test's lena


def reload_and_reattach(b: Browser, page: int, token: str) -> None:
    b("wait", page, selector="[data-testid=instance-row][data-agent=local][data-online=true]", timeout=30000)
    open_terminal(b, page)
    sid = last_tab_sid(b, page)
    assert b("attr", page, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=detach]",
             name="disabled") is None  # detach_timeout 600 s: Detach is offered
    type_line(b, page, f"echo before-{token}")
    b("waitTerminal", page, pattern=f"^before-{token}$")
    live_row(b, page, sid, "open in this page")  # known to the authority before the reload

    reloaded = time.monotonic()
    b("reload", page)
    sign_in_again(b, page, "lena")
    item = f"[data-testid=live-offer] [data-testid=offer-item][data-sid='{sid}']"
    b("wait", page, selector=item, timeout=30000)
    offered = time.monotonic() - reloaded
    offer = str(b("text", page, selector="[data-testid=live-offer]"))
    assert "You have a live shell session." in offer and "Attach" in offer, offer
    shot(b, page, "offer")
    # The page's pagehide detached it: otherwise it stays "attached" until the agent's
    # client timeout (300 s).
    state = live_row(b, page, sid, "detached", timeout=20)
    print(f"reload to offer {offered:.2f} s; state {state!r}")

    began = time.monotonic()
    b("click", page, selector=f"[data-testid=offer-attach][data-sid='{sid}']")
    b("waitFunction", page, expression=f"{LAST_TAB}?.dataset.sid === arg && {LAST_TAB}.dataset.mode === 'shell'", arg=sid)
    b("waitTerminal", page, pattern=f"^before-{token}$", timeout=30000)  # the replayed screen
    restored = time.monotonic() - began
    b("waitTerminal", page, pattern=r"attached: lena from ", timeout=30000)
    b("wait", page, selector="[data-testid=live-offer]", state="hidden")
    b("click", page, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=terminal]")
    type_line(b, page, f"echo after-{token}")
    b("waitTerminal", page, pattern=f"^after-{token}$", timeout=30000)
    print(f"attach click to the restored screen {restored:.2f} s")

    # Another client attaches it (here another tab of the page, as the Live page's Attach
    # would from elsewhere): the earlier tab is told so.
    b("evaluate", page, arg=sid, expression=(
        "void document.querySelector('#nav-live-panel').tetherLive.open({agent: 'local', run_as: null, sid: arg}, 'shell')"))
    b("waitFunction", page, expression=f"document.querySelectorAll('[data-testid=terminal-tab][data-sid=\"{sid}\"]').length === 2")
    b("waitTerminal", page, pattern=f"^after-{token}$", timeout=30000)  # the new tab's replay
    b("click", page, selector="[role=tab][id^=term-]")  # the earlier tab
    elsewhere = "[data-testid=terminal-tab]:not([hidden]) [data-testid=detached-elsewhere]"
    b("wait", page, selector=elsewhere, timeout=30000)
    assert b("text", page, selector=elsewhere) == "Detached: attached from another client."
    b("click", page, selector="[role=tab][id^=term-]:last-of-type")

    # Detach from the tab, then attach again from its banner.
    b("click", page, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=detach]")
    b("wait", page, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=detached]")
    banner = str(b("text", page, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=session-banner]"))
    assert f"Detached from session {sid} on local; it keeps running for 10 min." in banner, banner
    live_row(b, page, sid, "detached", timeout=20)
    b("click", page, selector="[role=tab][id^=term-]:last-of-type")
    b("click", page, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=attach-again]")
    b("waitFunction", page, expression=f"{LAST_TAB}?.dataset.sid === arg", arg=sid)
    b("waitTerminal", page, pattern=f"^after-{token}$", timeout=30000)
    b("click", page, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=terminal]")
    type_line(b, page, "export PS1='[t''p]$ '")
    b("waitTerminal", page, pattern=PROMPT, tail=1, timeout=30000)
    type_line(b, page, "exit 0")
    b("waitFunction", page, expression=(
        "document.querySelector('[data-testid=terminal-tab]:not([hidden]) [data-testid=exit-code]')?.textContent === '0'"),
        timeout=30000)
    assert offered < 30 and restored < 30


@pytest.mark.parametrize("stack", ["amqtt", "mosquitto"], indirect=True)
def test_watch_is_read_only_and_join_writes(browser: Browser, people: Stack) -> None:
    stack, b = people, browser
    owner = login(b, stack, "lena")
    walt = login(b, stack, "walt")
    try:
        watch_and_join(b, owner, walt)
    finally:
        b("closePage", owner)
        b("closePage", walt)


def watch_and_join(b: Browser, owner: int, walt: int) -> None:
    b("wait", owner, selector="[data-testid=instance-row][data-agent=local][data-online=true]", timeout=30000)
    open_terminal(b, owner)
    sid = last_tab_sid(b, owner)
    type_line(b, owner, "echo before-$((6*7))")
    b("waitTerminal", owner, pattern="^before-42$")

    live_row(b, walt, sid)
    row = f"[data-testid=live-row][data-sid='{sid}']"
    assert int(b("count", walt, selector=f"{row} [data-testid=live-watch]")) == 1
    assert int(b("count", walt, selector=f"{row} [data-testid=live-join]")) == 1
    assert int(b("count", walt, selector=f"{row} [data-testid=live-attach]")) == 0  # not his
    assert b("text", walt, selector=f"{row} td") == "lena"
    shot(b, walt, "list")

    # Watch: her screen, read-only.
    b("click", walt, selector=f"{row} [data-testid=live-watch]")
    b("waitFunction", walt, expression=f"{LAST_TAB}?.dataset.mode === 'watch' && {LAST_TAB}.dataset.sid === arg", arg=sid)
    b("waitTerminal", walt, pattern="^before-42$", timeout=30000)
    note = "[data-testid=terminal-tab]:not([hidden]) [data-testid=mode-note]"
    b("wait", walt, selector=note)
    assert b("text", walt, selector=note) == "Watching, read-only"
    assert int(b("count", walt, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=end-session]:not([hidden])")) == 0
    assert int(b("count", walt, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=detach]:not([hidden])")) == 0
    b("waitTerminal", owner, pattern=r"walt from \S+ started watching", timeout=30000)
    type_line(b, owner, "echo during-$((6*7))")
    b("waitTerminal", walt, pattern="^during-42$", timeout=30000)
    b("click", walt, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=terminal]")
    type_line(b, walt, "echo evil-$((6*7))")
    b("click", owner, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=terminal]")
    type_line(b, owner, "echo check-$((6*7))")
    b("waitTerminal", owner, pattern="^check-42$", timeout=30000)
    b("waitTerminal", walt, pattern="^check-42$", timeout=30000)
    shot(b, walt, "watching")
    sent = b("evaluate", walt, expression=(
        f"(() => {{ const s = {LAST_TAB}.tetherTerm.session; return {{framesSent: s.channel.stats.framesSent,"
        " queued: s.inputQueued}; })()"))
    assert sent == {"framesSent": 0, "queued": 0}, sent  # nothing typed left the page
    assert "evil-42" not in terminal_text(b, owner)
    assert "evil" not in terminal_text(b, walt)
    # Leaving: the tab's close button; lena is told.
    b("click", walt, selector="[role=tab][id^=term-] .x")
    b("waitTerminal", owner, pattern=r"walt from \S+ stopped watching", timeout=30000)

    # Join: a second writer.
    live_row(b, walt, sid)
    b("click", walt, selector=f"{row} [data-testid=live-join]")
    b("waitFunction", walt, expression=f"{LAST_TAB}?.dataset.mode === 'join' && {LAST_TAB}.dataset.sid === arg", arg=sid)
    b("waitTerminal", owner, pattern=r"walt from \S+ joined", timeout=30000)
    b("waitTerminal", walt, pattern="^check-42$", timeout=30000)
    b("click", walt, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=terminal]")
    type_line(b, walt, "echo joined-$((6*7))")
    b("waitTerminal", owner, pattern="^joined-42$", timeout=30000)
    b("waitTerminal", walt, pattern="^joined-42$", timeout=30000)
    b("click", walt, selector="[role=tab][id^=term-] .x")
    b("waitTerminal", owner, pattern=r"walt from \S+ left", timeout=30000)
    assert "evil-42" not in terminal_text(b, owner)
    type_line(b, owner, "exit 0")
    b("waitFunction", owner, expression=(
        "document.querySelector('[data-testid=terminal-tab]:not([hidden]) [data-testid=exit-code]')?.textContent === '0'"),
        timeout=30000)


MODERATED = f"""
[[statement]]
id = "lena-moderated"
effect = "allow"
users = ["lena"]
agents = ["local"]
actions = ["shell"]
run_as = ["{OS_USER}"]
require_moderator = ["leads"]
{WALT}"""


@pytest.fixture
def walt_leads(people: Stack) -> Iterator[Stack]:
    """lena's shells need a moderator (group leads), and walt is in leads."""
    registry = Registry.load(people.home.registry)
    saved = list(registry.principals["walt"].groups)
    registry.principals["walt"].groups = [*saved, "leads"]
    registry.save()
    try:
        with policy(people, MODERATED):
            yield people
    finally:
        registry = Registry.load(people.home.registry)
        registry.principals["walt"].groups = saved
        registry.save()


@pytest.mark.parametrize("stack", ["amqtt", "mosquitto"], indirect=True)
def test_a_moderator_watching_ends_the_session(browser: Browser, walt_leads: Stack) -> None:
    """A moderated shell waits (its input held) until walt, a moderator, watches it; his
    watch tab offers "End session", which ends it for lena."""
    stack, b = walt_leads, browser
    owner = login(b, stack, "lena")
    walt = login(b, stack, "walt")
    try:
        b("wait", owner, selector="[data-testid=instance-row][data-agent=local][data-online=true]", timeout=30000)
        b("click", owner, selector="[data-testid=instance-row][data-agent=local] [data-testid=connect]")
        b("waitTerminal", owner, pattern=r"it starts when a moderator \(leads\) watches it", timeout=30000)
        sid = last_tab_sid(b, owner)
        b("click", owner, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=terminal]")
        type_line(b, owner, "echo held-$((6*7))")  # held until the shell runs
        assert live_row(b, walt, sid) == "waiting for a moderator"
        row = f"[data-testid=live-row][data-sid='{sid}']"
        b("click", walt, selector=f"{row} [data-testid=live-watch]")
        b("waitTerminal", owner, pattern="^held-42$", timeout=30000)
        b("waitTerminal", walt, pattern="^held-42$", timeout=30000)
        end = "[data-testid=terminal-tab]:not([hidden]) [data-testid=end-session]"
        b("wait", walt, selector=end)
        assert b("text", walt, selector=end) == "End session"
        b("click", walt, selector=end)
        b("wait", walt, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=ended]")
        b("waitTerminal", owner, pattern=r"session ended by moderator walt", timeout=30000)
        b("wait", owner, selector="[data-testid=terminal-tab]:not([hidden]) [data-testid=exit-code]", state="attached",
          timeout=30000)
    finally:
        b("closePage", owner)
        b("closePage", walt)
