"""Search latency on a synthetic index of many lines (default 10 M), built in a temp dir.

Lines look like terminal output: log lines, ls rows, paths, hex ids, prompts, numbers,
spread over sessions of several agents and users across 30 days. Queries: common words
(very many matches: newest 20 only), rare ids (one match), absent strings, and common
words with --agent, --agent and --user, --since 1 day, --until 20 days ago. Reports p50/p99/max per kind and overall.

    python bench/search_bench.py [--lines 10000000] [--queries 600] [--keep DIR]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tether.recorder import db as rdb
from tether.recorder import textindex
from tether.recorder.search import search

_WORDS = ("error warning info debug connection refused timeout request response user admin "
         "server client session database query index table column select insert update delete "
         "nginx postgres redis kafka docker kubectl systemd journal kernel memory disk network "
         "package install upgrade remove build compile test deploy release rollback config "
         "permission denied success failed started stopped listening accepted closed")
WORDS = _WORDS.split()
AGENTS = [f"web-{i}" for i in range(20)] + [f"db-{i}" for i in range(5)]
USERS = ["alice", "bob", "carol", "dave", "erin", "frank"]
NOW = 1_780_000_000.0
SPAN = 30 * 86400


def make_line(rng: random.Random, i: int) -> str:
    k = rng.random()
    if k < 0.3:
        return (f"2026-05-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
                f" {rng.choice(['INFO', 'WARN', 'ERROR'])} {' '.join(rng.choices(WORDS, k=6))}"
                f" req={rng.getrandbits(48):012x}")
    if k < 0.5:
        return (f"-rw-r--r-- 1 {rng.choice(USERS)} staff {rng.randint(0, 10**7):>9} May "
                f"{rng.randint(1, 28):>2} /var/lib/{rng.choice(WORDS)}/{rng.choice(WORDS)}-{i}.log")
    if k < 0.6:
        return f"{rng.choice(USERS)}@{rng.choice(AGENTS)}:~$ {' '.join(rng.choices(WORDS, k=3))}"
    if k < 0.8:
        return " ".join(rng.choices(WORDS, k=rng.randint(3, 12)))
    return f"{i} {rng.getrandbits(64):016x} {rng.random():.6f} {rng.choice(WORDS)}"


def build(store: Path, lines: int, seed: int = 1) -> list[str]:
    """Write the index; return some rare strings that are in it."""
    rng = random.Random(seed)
    db = rdb.connect(store)
    # The text tables are search.db's: attached, unqualified names reach them.
    db.execute(f"ATTACH DATABASE ? AS {rdb.SEARCH}", (str(rdb.search_db_path(store)),))
    db.execute("PRAGMA journal_mode=OFF")  # a throwaway database: build fast
    n_sessions = max(lines // 5000, 1)
    sessions = []
    for s in range(n_sessions):
        sid = f"{rng.getrandbits(128):032x}"
        started = NOW - SPAN + SPAN * s / n_sessions
        sessions.append((sid, started))
        db.execute(
            "INSERT INTO sessions (sid, agent, user, run_as, mode, grant_id, client_key, client,"
            " recording, started, status) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (sid, rng.choice(AGENTS), rng.choice(USERS), "root", "shell", "g", "k", "c",
             "required", started, "closed"))
    rare: list[str] = []
    per = lines // n_sessions
    batch: list[tuple[str, float, float, int, str, str]] = []
    start = time.perf_counter()
    done = 0
    for sid, started in sessions:
        offset = 0
        for j in range(per):
            text = make_line(rng, done)
            if rng.random() < 0.0002:
                marker = f"RARE-{rng.getrandbits(40):010x}"
                text = f"{text} {marker}"
                rare.append(marker)
            t = j * 0.05
            batch.append((sid, t, started + t, offset, "scroll", text))
            offset += len(text) + 2
            done += 1
        if len(batch) >= 200_000:
            db.execute("BEGIN")
            textindex.write_rows(db, batch)
            db.execute("COMMIT")
            batch.clear()
            rate = done / (time.perf_counter() - start)
            print(f"  {done:>11,} lines  {rate:,.0f} lines/s", file=sys.stderr, flush=True)
    if batch:
        db.execute("BEGIN")
        textindex.write_rows(db, batch)
        db.execute("COMMIT")
    print("  optimizing the FTS index...", file=sys.stderr, flush=True)
    db.execute("INSERT INTO text_fts(text_fts) VALUES ('optimize')")
    db.close()
    print(f"built {done:,} lines in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return rare


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(int(len(values) * p), len(values) - 1)]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--keep", help="build (or reuse) the index in DIR and keep it")
    args = parser.parse_args(argv)
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tether-search-bench-"))
    try:
        marker = tmp / "rare.txt"
        if marker.exists():
            rare = marker.read_text().split()
        else:
            rare = build(tmp, args.lines)
            marker.write_text("\n".join(rare))
        db = rdb.connect(tmp, create=False)
        size = sum(p.stat().st_size for p in tmp.glob("search.db*"))
        (count,) = db.execute("SELECT count(*) FROM text_rows").fetchone()
        print(f"index: {count:,} lines, {size / 1e9:.2f} GB")
        rng = random.Random(7)
        kinds = {
            "common": lambda: " ".join(rng.sample(WORDS, 1)),
            "common-2w": lambda: " ".join(rng.sample(WORDS, 2)),
            "rare": lambda: rng.choice(rare),
            "absent": lambda: f"zq{rng.getrandbits(30):x}x",
            "agent-filter": lambda: rng.choice(WORDS),
            "since-1d": lambda: rng.choice(WORDS),
            "until-20d-ago": lambda: rng.choice(WORDS),
            "user+agent": lambda: rng.choice(WORDS),
        }
        times: dict[str, list[float]] = {k: [] for k in kinds}
        found: dict[str, int] = dict.fromkeys(kinds, 0)
        for i in range(args.queries):
            kind = list(kinds)[i % len(kinds)]
            text = kinds[kind]()
            agent = rng.choice(AGENTS) if kind in ("agent-filter", "user+agent") else None
            user = rng.choice(USERS) if kind == "user+agent" else None
            since = NOW - 86400 if kind == "since-1d" else None
            until = NOW - 20 * 86400 if kind == "until-20d-ago" else None
            start = time.perf_counter()
            hits = search(db, text, limit=20, agent=agent, user=user, since=since, until=until)
            times[kind].append(time.perf_counter() - start)
            found[kind] += bool(hits)
        everything = [t for v in times.values() for t in v]
        print(f"{'query kind':14} {'n':>4} {'found':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for kind, values in [*times.items(), ("ALL", everything)]:
            print(f"{kind:14} {len(values):>4} {found.get(kind, sum(found.values())):>6} "
                  f"{statistics.median(values) * 1e3:>8.1f} {percentile(values, 0.99) * 1e3:>8.1f} "
                  f"{max(values) * 1e3:>8.1f}")
        db.close()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
