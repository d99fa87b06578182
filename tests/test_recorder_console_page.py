"""The console's Sessions page in a real browser: a recording whose stored grant was
removed on the recorder host reads "not verified" (never "verified"), an untouched one
"verified", and each row shows what ran (the exec command from the grant).

One broker is enough here: what is tested is the page and the recorder's verify answer;
tests/test_e2e_browser.py runs the console on both brokers.
"""

from __future__ import annotations

import sqlite3
import time

import pytest
from stack import Stack
from test_e2e_browser import Browser, console, login  # noqa: F401 (fixtures)


def _exec(stack: Stack, *argv: str) -> str:
    start = time.time()
    r = stack.tether("run", "local", "--", *argv)
    assert r.returncode == 0, r.stderr
    return str(stack.wait_recorded("closed", after=start)["sid"])


def _shown(b: Browser, page: int, sid: str) -> str:
    """The replay's verification once the recorder's full check has answered."""
    b("click", page, selector=f"[data-testid=session-row][data-sid='{sid}'] [data-testid=replay-session]")
    result = f"[data-testid=replay][data-sid='{sid}'] [data-testid=verify-result]"
    b("wait", page, selector=result, timeout=30000)
    return str(b("text", page, selector=result))


@pytest.mark.parametrize("stack", ["amqtt"], indirect=True)
def test_sessions_page_verification_and_command(browser: Browser, console: Stack) -> None:  # noqa: F811
    stack, b = console, browser
    kept = _exec(stack, "echo", "kept intact")
    stripped = _exec(stack, "sh", "-c", "echo grant-removed")
    db = sqlite3.connect(stack.home.recordings / "index.db", timeout=30)
    try:  # the recorder-host attacker's edit: no grant, so no agent key to check with
        db.execute("UPDATE sessions SET grant_token=NULL WHERE sid=?", (stripped,))
        db.commit()
    finally:
        db.close()
    page = login(b, stack, "cara")
    b("click", page, selector="#nav-sessions")
    b("wait", page, selector=f"[data-testid=session-row][data-sid='{kept}']", timeout=30000)
    commands = b("evaluate", page, expression=(
        "Object.fromEntries([...document.querySelectorAll('[data-testid=session-row]')]"
        ".map((r) => [r.dataset.sid, r.querySelector('[data-testid=session-command]').textContent]))"))
    assert commands[kept] == "echo 'kept intact'" and commands[stripped] == "sh -c 'echo grant-removed'"

    text = _shown(b, page, stripped)
    assert text.startswith("not verified") and "grant is missing" in text, text
    text = _shown(b, page, kept)
    assert text.startswith("verified"), text
