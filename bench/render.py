"""The report of bench/compare_ssh.py: the machine and versions, the rows, as text and as
Markdown."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_common import MB, REPO, SSH, median, pct, run_text
from measure import Result, Sample, echo_samples


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, IndexError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    git = run_text(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = run_text(["git", "-C", str(REPO), "diff", "--name-only", "HEAD"])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "os": run_text(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "niceness of the bench (inherited by sshd, Mosquitto, tether and all clients)": str(os.nice(0)),
        # With this set and no __pycache__ in the checkout, every tether command compiles
        # tether's own modules from source at start (tens of ms).
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", "unset"),
        "git": git + (f" + uncommitted changes in: {', '.join(dirty.split())}"
                      if dirty else ""),
    }


def versions(tether_bin: str, env: dict[str, str], cwd: Path) -> dict[str, str]:
    mosq = run_text(["mosquitto", "-h"]).splitlines()
    return {
        "tether": run_text([tether_bin, "--version"], env=env, cwd=cwd) + f" ({tether_bin})",
        "mosquitto": mosq[0] if mosq else "unknown",
        "openssh client": run_text([SSH, "-V"]),
        "openssh server": "openssh-server " + run_text(["dpkg-query", "-W", "-f=${Version}", "openssh-server"]),
        "paho-mqtt": run_text([sys.executable, "-c", "import paho.mqtt; print(paho.mqtt.__version__)"]),
        "pynacl": run_text([sys.executable, "-c", "import nacl; print(nacl.__version__)"]),
    }


@dataclass
class Row:
    metric: str
    unit: str
    ssh: float
    tether: float
    better: str  # "higher" or "lower"
    goal: str
    met: bool | None
    note: str = ""
    test: str = ""
    others: float = math.nan  # share of the machine other processes used during the test
    rec: float = math.nan  # tether with the session recorded (nan: not measured)

    @property
    def ratio(self) -> float:
        return self.tether / self.ssh if self.ssh else math.nan

    @property
    def rec_ratio(self) -> float:
        return self.rec / self.ssh if self.ssh else math.nan

    @property
    def rec_cost(self) -> float:
        """recorded / unrecorded."""
        return self.rec / self.tether if self.tether else math.nan


# Issue 11's goal for what recording may cost (recorded / unrecorded), by row metric prefix.
REC_GOALS: tuple[tuple[str, str, Callable[[float], bool]], ...] = (
    ("PTY bulk output", "≥ 0.8", lambda x: x >= 0.8),
             ("exec bulk output, no PTY", "≥ 0.8", lambda x: x >= 0.8),
             ("keystroke echo round trip p50", "≤ 1.2", lambda x: x <= 1.2))


def rec_goal(row: Row) -> tuple[str, bool | None]:
    for prefix, text, ok in REC_GOALS:
        if row.metric.startswith(prefix):
            return text, None if math.isnan(row.rec_cost) else ok(row.rec_cost)
    return "", None


def _r(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}"


def fmt(x: float, unit: str) -> str:
    if math.isnan(x):
        return "n/a"
    if unit == "ms":
        return f"{x:.3f}"
    if unit == "s":
        return f"{x:.3f}"
    return f"{x:.1f}"


def build_rows(r: dict[str, Result]) -> list[Row]:
    rows: list[Row] = []

    def vals(key: str, pick: Callable[[list[Sample]], float]) -> tuple[float, float]:
        res = r[key]
        return pick(res.ssh), pick(res.tether)

    def rec(key: str, pick: Callable[[list[Sample]], float]) -> None:
        """The recorded contender's value for the row just added."""
        if r[key].tether_rec:
            rows[-1].rec = pick(r[key].tether_rec)

    def med(samples: list[Sample]) -> float:
        return median([s.value for s in samples])

    s, t = vals("pty", med)
    rows.append(Row("PTY bulk output (cat in a shell)", "MB/s", s, t, "higher", "≥ 1.0 x ssh",
                    None if math.isnan(t / s) else t / s >= 1.0, test="pty"))
    rec("pty", med)
    s, t = vals("exec", med)
    rows.append(Row("exec bulk output, no PTY", "MB/s", s, t, "higher", "≥ 0.5 x ssh",
                    None if math.isnan(t / s) else t / s >= 0.5, "first byte to exit", "exec"))
    rec("exec", med)
    s, t = vals("exec", lambda xs: median([x.extra["mb_s_total"] for x in xs]))
    rows.append(Row("exec bulk output incl. connection setup", "MB/s", s, t, "higher", "", None,
                    "start to exit", "exec"))
    rec("exec", lambda xs: median([x.extra["mb_s_total"] for x in xs]))
    e = r["echo"]
    sv = [x for smp in e.ssh for x in smp.extra.get("all", [])]
    tv = [x for smp in e.tether for x in smp.extra.get("all", [])]
    rv = [x for smp in e.tether_rec for x in smp.extra.get("all", [])]
    s50, t50 = pct(sv, 50), pct(tv, 50)
    rows.append(Row("keystroke echo round trip p50", "ms", s50, t50, "lower", "≤ 2 x ssh",
                    None if math.isnan(t50 / s50) else t50 <= 2 * s50, test="echo", rec=pct(rv, 50)))
    s99, t99 = pct(sv, 99), pct(tv, 99)
    rows.append(Row("keystroke echo round trip p99", "ms", s99, t99, "lower", "≤ 2 ms",
                    None if math.isnan(t99) else t99 <= 2.0, test="echo", rec=pct(rv, 99)))
    s, t = vals("true", med)
    rows.append(Row("`run -- true` wall time", "s", s, t, "lower", "≤ 1.0 x ssh",
                    None if math.isnan(t / s) else t <= s, test="true"))
    rec("true", med)
    return rows


def cpu_rows(r: dict[str, Result], size: int) -> list[tuple[str, str, str, str]]:
    """(what, ssh, tether, tether recorded) median CPU seconds per 100 MB for the bulk tests."""
    out = []
    scale = 100 * MB / size
    for key, label in (("pty", "PTY bulk"), ("exec", "exec bulk")):
        res = r[key]
        if not res.ssh or not res.tether:
            continue
        keys = ["client_cpu_s", "server_cpu_s"]
        keys += sorted({k for x in res.ssh + res.tether + res.tether_rec for k in x.extra
                        if k.startswith("cpu ")},
                       key=lambda k: (not k.startswith("cpu server:"), k))

        def m(xs: list[Sample], k: str) -> str:
            vals = [x.extra[k] for x in xs if k in x.extra]
            return f"{median(vals) * scale:.2f}" if vals else ""

        for k in keys:
            what = {"client_cpu_s": "client", "server_cpu_s": "server side, total"}.get(k)
            if what is None:
                what = k.removeprefix("cpu ").removesuffix(" s").replace("server:", "server: ")
            out.append((f"{label}: {what}", m(res.ssh, k), m(res.tether, k), m(res.tether_rec, k)))
    return out


def others(x: float) -> str:
    return "" if math.isnan(x) else f"{x * 100:.0f}%"


def _yes(met: bool | None, no: str) -> str:
    return "" if met is None else ("yes" if met else no)


def render_text(rows: list[Row], refs: list[str], cpu: list[tuple[str, str, str, str]],
                errors: dict[str, str]) -> str:
    recorded = any(not math.isnan(row.rec) for row in rows)
    head: tuple[str, ...] = ("metric", "unit", "ssh", "tether", "tether/ssh")
    if recorded:
        head += ("recorded", "rec/ssh", "rec/unrec", "rec goal", "met")
    head += ("better", "goal", "met", "others")
    body = []
    for row in rows:
        line: tuple[str, ...] = (row.metric, row.unit, fmt(row.ssh, row.unit),
                                 fmt(row.tether, row.unit), _r(row.ratio))
        if recorded:
            goal, ok = rec_goal(row)
            line += (fmt(row.rec, row.unit), _r(row.rec_ratio), _r(row.rec_cost), goal, _yes(ok, "NO"))
        body.append((*line, row.better, row.goal, _yes(row.met, "NO"), others(row.others)))
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    lines += [f"reference: {r}" for r in refs]
    lines.append("others: share of the machine's CPU that other processes used during that test")
    if recorded:
        lines.append("recorded: tether with the session recorded (policy `optional`, as `tether up` "
                     "ships); rec/unrec: recorded / unrecorded tether; rec goal: issue 11's bound on it")
    if cpu:
        lines.append("CPU seconds per 100 MB (median):")
        for what, s, t, rc in cpu:
            lines.append(f"  {what:<50} ssh {s:>6}   tether {t:>6}"
                         + (f"   recorded {rc:>6}" if recorded else ""))
    for k, v in errors.items():
        lines.append(f"ERROR in {k}: {v}")
    return "\n".join(lines)


def render_markdown(rows: list[Row], refs: list[str], cpu: list[tuple[str, str, str, str]],
                    errors: dict[str, str], meta: dict[str, Any], details: dict[str, Any]) -> str:
    md = ["# tether vs OpenSSH: side-by-side benchmark", ""]
    md.append(f"- command: `{meta['command']}`")
    md.append(f"- date: {meta['date']}")
    md.append(f"- total run time: {meta['runtime_s']:.0f} s")
    for k, v in meta["machine"].items():
        md.append(f"- {k}: {v}")
    for k, v in meta["versions"].items():
        md.append(f"- {k}: {v}")
    if "load" in meta:
        md.append(f"- machine load: {meta['load']}")
    md.append(f"- parameters: {meta['params']}")
    md.append("")
    recorded = any(not math.isnan(row.rec) for row in rows)
    if recorded:
        md.append("| metric | unit | ssh | tether | tether/ssh | tether recorded | recorded/ssh "
                  "| recorded/unrecorded | goal (issue 11) | met | better | goal (budget) | met "
                  "| others' CPU |")
        md.append("|---|---|---:|---:|---:|---:|---:|---:|---|---|---|---|---|---:|")
    else:
        md.append("| metric | unit | ssh | tether | tether/ssh | better | goal (budget) | met "
                  "| others' CPU |")
        md.append("|---|---|---:|---:|---:|---|---|---|---:|")
    for row in rows:
        met = _yes(row.met, "**no**")
        note = f" ({row.note})" if row.note else ""
        rec = ""
        if recorded:
            goal, ok = rec_goal(row)
            rec = (f"{fmt(row.rec, row.unit)} | {_r(row.rec_ratio)} | {_r(row.rec_cost)} | {goal} | "
                   f"{_yes(ok, '**no**')} | ")
        md.append(f"| {row.metric}{note} | {row.unit} | {fmt(row.ssh, row.unit)} | "
                  f"{fmt(row.tether, row.unit)} | {_r(row.ratio)} | {rec}{row.better} | {row.goal} "
                  f"| {met} | {others(row.others)} |")
    md.append("")
    md.append("*others' CPU*: the share of the machine's CPU (all cores) that processes other than "
              "the benchmark's own used during that test. Anything above a few percent disturbs "
              "the numbers.")
    md.append("")
    if refs:
        md.append("References:")
        md.append("")
        md += [f"- {r}" for r in refs]
        md.append("")
    if cpu:
        md.append("CPU seconds per 100 MB (median). *client*: the ssh or tether client process. "
                  "*server side*: for ssh the sshd listener's reaped children (the connection's "
                  "sshd processes, the shell and `cat`); for tether `tether up` (agent and "
                  "authority), its reaped children (the shell and `cat`) and Mosquitto. *bench*: "
                  "this script draining the PTY or pipe. *kernel threads*: all kworkers etc., "
                  "where Linux does part of the PTY work; other work on the machine adds to it.")
        md.append("")
        md.append("| | ssh | tether |" + (" tether recorded |" if recorded else ""))
        md.append("|---|---:|---:|" + ("---:|" if recorded else ""))
        for what, s, t, rc in cpu:
            md.append(f"| {what} | {s} | {t} |" + (f" {rc} |" if recorded else ""))
        md.append("")
    for k, v in errors.items():
        md.append(f"**Error in {k}:** {v}")
        md.append("")
    md.append("<details><summary>Per-run values</summary>")
    md.append("")
    md.append("```json")
    md.append(json.dumps(details, indent=1))
    md.append("```")
    md.append("</details>")
    md.append("")
    return "\n".join(md)


def details_of(results: dict[str, Result], raw: Result) -> dict[str, Any]:
    """Every sample, for the JSON file and the Markdown's details."""
    return {
        "raw_pty_mb_s": [s.value for s in raw.ssh],
        **{f"{k}.{who}": [dict(value=round(s.value, 6),
                               **{ek: (round(ev, 6) if isinstance(ev, float) else ev)
                                  for ek, ev in s.extra.items() if ek != "all"})
                          for s in getattr(v, who)]
           for k, v in results.items() if k != "echo" for who in ("ssh", "tether", "tether_rec")},
        **{f"echo.{who}_ms": {"p50": pct(vals, 50), "p90": pct(vals, 90), "p99": pct(vals, 99),
                              "max": max(vals) if vals else math.nan, "n": len(vals)}
           for who, vals in ((who, echo_samples(results["echo"], who))
                             for who in ("ssh", "tether", "tether_rec", "floor"))},
    }
