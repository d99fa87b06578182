"""The repository stands on its own: nothing it ships points outside it.

Facts the code and docs rely on live in docs/sources.md, each under its own heading.
No tracked file may point at design or field-notes files that are not in the repository,
at a sibling checkout, or at a path on the machine that built it; and every relative link
in the docs must land on a file that exists and, for an #anchor into a Markdown file, on
a heading it has. References from any file to an anchor of docs/sources.md, or to a numbered
section of protocol.md, must name one that exists.
"""

from __future__ import annotations

import re
import subprocess
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Spelled in pieces so that this file does not match itself.
FORBIDDEN = (
    "DESIGN" + " §",
    "DESIGN" + ".md",
    "FIELD" + "-NOTES",
    "(F" + "N)",
    "../" + "shared/",
    "/wo" + "rk/",
)

# Files another change is still rewriting. An entry is allowed only while the file still
# has one of the forbidden strings, so it cannot outlive the fix unnoticed.
PENDING: frozenset[str] = frozenset()


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                         capture_output=True).stdout
    return [p for p in out.decode().split("\0")
            if p and not p.startswith("client/web/node_modules/")]


def text_of(rel: str) -> str | None:
    """The file's text, or None for binary files and files not in the work tree."""
    path = ROOT / rel
    if not path.is_file():
        return None
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def forbidden_hits() -> dict[str, list[str]]:
    hits: dict[str, list[str]] = {}
    for rel in tracked_files():
        text = text_of(rel)
        if text is None:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for needle in FORBIDDEN:
                if needle in line:
                    hits.setdefault(rel, []).append(f"{rel}:{lineno}: {needle!r}: {line.strip()}")
    return hits


def test_no_tracked_file_points_outside_the_repository() -> None:
    hits = forbidden_hits()
    unexpected = [line for rel, lines in sorted(hits.items()) if rel not in PENDING
                  for line in lines]
    assert not unexpected, "\n".join(unexpected)


def test_pending_exemptions_are_still_needed() -> None:
    stale = sorted(PENDING - set(forbidden_hits()))
    assert not stale, f"these files are clean now; remove them from PENDING: {stale}"


def test_the_checker_sees_what_it_must_refuse() -> None:
    # Guards the pieces above against a typo that would make them match nothing.
    sample = "see FIELD" + "-NOTES and DESIGN" + " §3 in /wo" + "rk/shared/x"
    assert sum(needle in sample for needle in FORBIDDEN) == 3


# ----- links in the docs -----

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")


def prose_lines(text: str, *, blank_code: bool = True) -> list[tuple[int, str]]:
    """Lines outside fenced code blocks, with inline code spans blanked unless kept."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line.lstrip())
        if m:
            if fence is None:
                fence = m.group(1)
            elif m.group(1) == fence:
                fence = None
            continue
        if fence is None:
            lines.append((lineno, CODE_SPAN.sub("", line) if blank_code else line))
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading (github-slugger): lower case, punctuation
    dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = text.strip().lower()
    kept = []
    for ch in text:
        if ch in " -_" or unicodedata.category(ch)[0] in "LNM":
            kept.append(ch)
    return "".join(kept).replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors: set[str] = set()
    for _lineno, line in prose_lines(path.read_text(encoding="utf-8"), blank_code=False):
        m = re.match(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = github_slug(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def doc_files() -> list[Path]:
    return [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]


def broken_links() -> list[str]:
    problems: list[str] = []
    for doc in doc_files():
        for lineno, line in prose_lines(doc.read_text(encoding="utf-8")):
            for target in [m.group(1) for m in LINK.finditer(line)] + \
                          [m.group(1) for m in IMAGE.finditer(line)]:
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                    continue
                where = f"{doc.relative_to(ROOT)}:{lineno}: {target}"
                path_part, _, anchor = target.partition("#")
                dest = (doc.parent / path_part).resolve() if path_part else doc
                if not dest.exists():
                    problems.append(f"{where}: no such file")
                    continue
                if ROOT not in dest.parents and dest != ROOT:
                    problems.append(f"{where}: outside the repository")
                    continue
                if anchor and dest.suffix == ".md" and anchor not in anchors_of(dest):
                    problems.append(f"{where}: no heading with that anchor")
    return problems


def test_relative_links_in_the_docs_resolve() -> None:
    problems = broken_links()
    assert not problems, "\n".join(problems)


def test_slugs_follow_github() -> None:
    assert github_slug("18. Known gaps") == "18-known-gaps"
    assert github_slug("Mosquitto ACL checks delivery, not SUBSCRIBE") == \
        "mosquitto-acl-checks-delivery-not-subscribe"
    assert github_slug("amqtt speaks MQTT 3.1.1 only") == "amqtt-speaks-mqtt-311-only"
    assert github_slug("`tether run X -- true`: faster") == "tether-run-x----true-faster"
    assert github_slug("Recorder (issue 4)") == "recorder-issue-4"


def test_anchors_come_from_headings_outside_code_blocks(tmp_path: Path) -> None:
    doc = tmp_path / "a.md"
    doc.write_text("# Title\n\n## 2. Second part\n\n```\n# not a heading\n```\n", encoding="utf-8")
    assert anchors_of(doc) == {"title", "2-second-part"}


# ----- references from code and other files -----

SOURCES_REF = re.compile(r"docs/sources\.md#([\w-]+)")
PROTOCOL_REF = re.compile(r"protocol(?:\.md)? (?:§|section )(\d+(?:\.\d+)?)")


def protocol_sections() -> set[str]:
    numbers: set[str] = set()
    for _lineno, line in prose_lines((ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")):
        m = re.match(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", line)
        if m:
            numbers.add(m.group(1))
    return numbers


def test_references_to_sources_and_protocol_sections_resolve() -> None:
    anchors = anchors_of(ROOT / "docs" / "sources.md")
    sections = protocol_sections()
    assert {"1", "6.1", "13.1", "18"} <= sections
    problems = []
    for rel in tracked_files():
        text = text_of(rel)
        if text is None or rel in PENDING:  # their rewrite also renumbers (see PENDING)
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            problems += [f"{rel}:{lineno}: sources.md#{a}" for a in SOURCES_REF.findall(line)
                         if a not in anchors]
            problems += [f"{rel}:{lineno}: protocol §{n}" for n in PROTOCOL_REF.findall(line)
                         if n not in sections]
    assert not problems, "\n".join(problems)
