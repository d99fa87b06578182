"""The Mosquitto plugin's presence throttle (broker/mosquitto-plugin/presence_throttle.c)
against its reference, tether.throttle.Throttle: a harness built with AddressSanitizer,
UndefinedBehaviorSanitizer and LeakSanitizer (tests/support/presence_throttle_harness.c)
runs scripts of offers and releases, and every answer (send or hold, what is released and
in which order, the counters and the number of buckets kept) must be the Python one. The
harness reuses its input buffer for each line, so a held update that was not copied would
come out with a later payload. The plugin's figures are the embedded broker's."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tether.broker import embedded
from tether.throttle import Throttle

REPO = Path(__file__).resolve().parent.parent
PLUGIN = REPO / "broker" / "mosquitto-plugin"
HARNESS = Path(__file__).resolve().parent / "support" / "presence_throttle_harness.c"

Update = tuple[str, str, int, int]  # topic, payload ("-" empty), qos, retain


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc")
    assert cc, "no C compiler: run ./install.sh"
    out = tmp_path_factory.mktemp("pt") / "harness"
    subprocess.run(
        [cc, "-g", "-O1", "-Wall", "-Wextra", "-Werror", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=all", f"-I{PLUGIN}", "-o", str(out), str(HARNESS),
         str(PLUGIN / "presence_throttle.c")],
        check=True, capture_output=True, timeout=120,
    )
    return out


def run(harness: Path, script: list[str]) -> list[str]:
    r = subprocess.run([str(harness)], input="\n".join(script) + "\n", capture_output=True, text=True,
                       timeout=120, env={"ASAN_OPTIONS": "detect_leaks=1"})
    assert r.returncode == 0, r.stderr[-4000:]
    assert not r.stderr, r.stderr[-4000:]
    lines = r.stdout.splitlines()
    assert len(lines) == len(script), (len(lines), len(script))
    return lines


class Reference:
    """The same script through tether.throttle.Throttle, answered as the harness does."""

    def __init__(self) -> None:
        self.t: Throttle[Update] | None = None

    def answer(self, command: str) -> str:
        word, *args = command.split()
        if word == "init":
            try:
                self.t = Throttle(float(args[0]), int(args[1]), int(args[2]), int(args[3]))
            except ValueError:
                self.t = None
                return "invalid"
            return "ok"
        assert self.t is not None
        if word == "offer":
            key, topic, payload, qos, retain, now = args
            sent = self.t.offer(key, topic, (topic, payload, int(qos), int(retain)), float(now))
            return "send" if sent else "held"
        if word == "release":
            return "released" + "".join(f" {t} {p} {q} {r}" for t, p, q, r in self.t.release(float(args[0])))
        assert word == "stats"
        limiter = self.t._limiter
        return f"{self.t.pending} {self.t.held_total} {self.t.discarded} {limiter.dropped} {len(limiter)}"


def expected(script: list[str]) -> list[str]:
    ref = Reference()
    return [ref.answer(line) for line in script]


def test_the_plugin_has_the_embedded_brokers_figures() -> None:
    header = (PLUGIN / "presence_throttle.h").read_text()
    figures = dict(re.findall(r"#define (PT_\w+) ([\d.]+)", header))
    assert float(figures["PT_RATE"]) == embedded.PRESENCE_RATE
    assert int(figures["PT_BURST"]) == embedded.PRESENCE_BURST
    assert int(figures["PT_PUBLISHERS"]) == embedded.PRESENCE_PUBLISHERS
    assert int(figures["PT_HELD_TOPICS"]) == embedded.PRESENCE_HELD_TOPICS


def test_holds_the_newest_update_per_topic_and_releases_it_in_order(harness: Path) -> None:
    script = [
        "init 1 2 8 2",
        "offer web1 p 1 1 1 0", "offer web1 p 2 1 1 0",  # the burst
        "offer web1 p 3 1 1 0",  # held
        "offer web1 s s1 0 0 0",  # held behind it
        "offer web1 p 4 1 1 0.1",  # replaces 3, goes behind s1
        "offer web2 p other 1 1 0.1",  # another publisher is not held up
        "release 0.5",
        "release 1.1",
        "offer web1 p 5 1 1 1.2",  # still held: no jumping the queue
        "release 2.2",
        "stats",
    ]
    got = run(harness, script)
    assert got == [
        "ok", "send", "send", "held", "held", "held", "send",
        "released", "released s s1 0 0", "held", "released p 5 1 1", "0 4 2 3 2",
    ]
    assert got == expected(script)


def test_bad_figures_are_refused(harness: Path) -> None:
    script = ["init 0 1 1 1", "init 1 0 1 1", "init 1 1 0 1", "init 1 1 1 0", "init 0.5 10 4096 4"]
    assert run(harness, script) == ["invalid"] * 4 + ["ok"]
    assert expected(script) == ["invalid"] * 4 + ["ok"]


@pytest.mark.parametrize("seed", range(8))
def test_random_scripts_answer_as_the_python_throttle(harness: Path, seed: int) -> None:
    """Few keys, topics and slots, so every limit (bucket eviction, publisher eviction,
    topic eviction, replacement, a clock stepping back) is reached many times."""
    rng = random.Random(seed)
    rate, burst, max_keys, max_topics = rng.choice([0.5, 1.0, 2.0]), rng.randint(1, 3), rng.randint(1, 4), rng.randint(1, 3)
    script = [f"init {rate} {burst} {max_keys} {max_topics}"]
    now = 0.0
    for i in range(3000):
        now = max(0.0, now + rng.choice([0.0] * 60 + [0.01, 0.05, 0.3, 1.0, 2.5, -0.5]))
        r = rng.random()
        if r < 0.7:
            key, topic = f"k{rng.randint(0, max_keys)}", f"t/{rng.randint(0, 4)}"
            payload = rng.choice(["-", f"u{i}", "x" * rng.randint(1, 1500)])
            script.append(f"offer {key} {topic} {payload} {rng.randint(0, 2)} {rng.randint(0, 1)} {now}")
        elif r < 0.95:
            script.append(f"release {now}")
        else:
            script.append("stats")
    script.append("stats")
    got, want = run(harness, script), expected(script)
    for n, (line, g, w) in enumerate(zip(script, got, want, strict=True)):
        assert g == w, f"line {n}: {line!r}: C {g!r}, Python {w!r}"
    assert sum(g == "held" for g in got) > 200 and sum(g == "send" for g in got) > 200
    pending, _, discarded, _, buckets = map(int, got[-1].split())
    assert pending <= max_keys * max_topics and buckets <= max_keys
    assert discarded > 0


def test_memory_stays_bounded_under_many_publishers_and_topics(harness: Path) -> None:
    script = ["init 0.5 1 16 4"]
    script += [f"offer k{i % 1000} t/{i % 37} {'p' * 100} 1 1 {i * 0.001}" for i in range(20000)]
    script += ["stats", "release 100000", "stats"]
    got = run(harness, script)
    pending, held_total, discarded, _, buckets = map(int, got[-3].split())
    assert pending <= 16 * 4 and buckets <= 16
    assert held_total - discarded == pending
    assert got[-1].split()[0] == "0"  # all released once the buckets refill
    assert got == expected(script)
