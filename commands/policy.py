"""`tether policy`: ask the access policy a question, validate a policy file, show it."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime
    from pathlib import Path

    from tether.authority.policy import Decision, Policy, Request

ACTIONS = ("shell", "exec", "forward", "watch", "join", "audit", "admin")  # = policy.ACTIONS (tested)

CHECK_EXAMPLES = """\
examples:
  tether policy check alice db1 --action shell --as ubuntu
  tether policy check alice db1 --command 'systemctl restart nginx' --reason 'TICKET-12'
  tether policy check bob web3 --labels env=prod,role=web --at 2024-06-01T23:30+02:00

The user's groups and the agent's labels come from the authority's registry when
they are known; --groups adds groups and --labels replaces the labels. Exit status:
0 when allowed, 1 when denied.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Inspect the access policy ($TETHER_HOME/authority/policy.toml; reference in "
        "docs/policy.md). `check` asks whether a request would be allowed and which statement "
        "decides; `validate` reports errors with line numbers; `show` prints the policy in force. "
        "The authority reads the file again on each request, so edits need no restart."
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="{check,validate,show}")

    check = sub.add_parser(
        "check", help="would USER be allowed to do ACTION on AGENT? prints ALLOW or DENY and why",
        description="Evaluate one request against the policy, exactly as the authority would,\n"
        "and print ALLOW or DENY, the reason, the deciding statement and the limits it sets.",
        epilog=CHECK_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("user", help="the user (principal name) asking")
    check.add_argument("agent", help="the agent (instance) name")
    check.add_argument("--action", choices=ACTIONS, metavar="ACTION",
                       help=f"one of {', '.join(ACTIONS)} (default: shell, or exec with --command)")
    check.add_argument("--as", dest="run_as", metavar="OSUSER",
                       help="the OS user to run as (default: the deciding statement's first run_as)")
    check.add_argument("--command", metavar="CMDLINE",
                       help="for exec: the command line, split like a shell would "
                       "(e.g. 'systemctl status nginx')")
    check.add_argument("--reason", metavar="TEXT", help="the reason given for the session")
    check.add_argument("--labels", metavar="K=V,...",
                       help="the agent's labels (default: from the registry)")
    check.add_argument("--groups", metavar="G,...", help="extra groups the user belongs to")
    check.add_argument("--sessions", type=int, default=0, metavar="N",
                       help="how many sessions the user already has open (default: 0)")
    check.add_argument("--at", metavar="TIME",
                       help="evaluate at this ISO 8601 time, e.g. 2024-06-01T09:30+02:00 "
                       "(default: now; without an offset, local time)")
    check.add_argument("--file", metavar="FILE", help="a policy file to use instead of the "
                       "authority's (e.g. to test an edit before installing it)")

    validate = sub.add_parser(
        "validate", help="check a policy file; print ok or FILE:LINE: error lines",
        description="Parse and check a policy file: TOML syntax, unknown keys, action names, "
        "durations, time windows, effects. Prints `ok` or one `FILE:LINE: message` per problem "
        "and exits 1 when there are problems.")
    validate.add_argument("file", nargs="?", metavar="FILE",
                          help="the file to check (default: the authority's policy.toml)")

    show = sub.add_parser("show", help="print the policy file in force and its path",
                          description="Print the path of the policy file the authority uses, "
                          "then its content.")
    show.add_argument("--file", metavar="FILE", help="show this file instead")


def run(args: argparse.Namespace) -> int:
    if args.verb == "check":
        return _check(args)
    if args.verb == "validate":
        return _validate(args)
    return _show(args)


def _policy_path(file: str | None) -> Path:
    from pathlib import Path

    from tether.edge.home import Home

    return Path(file) if file else Home.default().policy


def _load(path: Path) -> Policy:
    from tether.authority.policy import Policy, PolicyError
    from tether.commands.main import UserError

    try:
        return Policy.load(path)
    except PolicyError as exc:
        raise UserError("the policy is not valid:\n" + "\n".join(exc.format()) +
                        f"\n(run `tether policy validate {path}`)") from exc


def _split_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _parse_labels(text: str) -> dict[str, str]:
    from tether.commands.main import UserError

    labels: dict[str, str] = {}
    for item in _split_list(text):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"label {item!r} is not KEY=VALUE (e.g. --labels env=prod,role=db)")
        labels[key.strip()] = value.strip()
    return labels


def _parse_time(text: str | None) -> datetime:
    from datetime import UTC, datetime

    from tether.commands.main import UserError

    if not text:
        return datetime.now(UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UserError(f"--at {text!r} is not an ISO 8601 time such as 2024-06-01T09:30+02:00") from exc
    return when if when.tzinfo is not None else when.astimezone()


def _registry_facts(user: str, agent: str) -> tuple[list[str], dict[str, str] | None, list[str]]:
    """(the user's groups, the agent's labels or None, notes) from the registry, if any."""
    from tether.authority.registry import Registry
    from tether.edge.home import Home
    from tether.edge.keys import KeyFileError

    home = Home.default()
    notes: list[str] = []
    try:
        registry = Registry.load(home.registry)
    except (OSError, ValueError, TypeError, KeyFileError) as exc:
        return [], None, [f"cannot read the registry ({exc}); groups and labels come only from "
                          "the options"]
    if not registry.principals:
        return [], None, [f"no registry at {home.registry}; groups and labels come only from "
                          "the options"]
    groups: list[str] = []
    labels: dict[str, str] | None = None
    principal = registry.principals.get(user)
    if principal is None:
        notes.append(f"{user!r} is not a registered principal")
    else:
        groups = list(principal.groups)
    agent_p = registry.principals.get(agent)
    if agent_p is None or agent_p.kind != "agent":
        notes.append(f"{agent!r} is not a registered agent (the authority refuses unknown agents)")
    else:
        labels = dict(agent_p.labels)
    return groups, labels, notes


def _check(args: argparse.Namespace) -> int:
    import shlex

    from tether.authority.policy import Request, evaluate
    from tether.commands.main import UserError
    from tether.display import safe

    if args.sessions < 0:
        raise UserError("--sessions must not be negative")
    action = args.action or ("exec" if args.command is not None else "shell")
    command: list[str] | None = None
    if args.command is not None:
        if action != "exec":
            raise UserError(f"--command only applies to --action exec, not {action}")
        try:
            command = shlex.split(args.command)
        except ValueError as exc:
            raise UserError(f"--command: {exc}") from exc
        if not command:
            raise UserError("--command is empty")
    path = _policy_path(args.file)
    if args.file and not path.exists():
        raise UserError(f"no policy file at {path}")
    policy = _load(path)
    groups, labels, notes = _registry_facts(args.user, args.agent)
    groups += _split_list(args.groups)
    if args.labels is not None:
        labels = _parse_labels(args.labels)
    if not path.exists():
        notes.append(f"no policy file at {path}: everything is denied")
    for note in notes:
        print(f"note: {safe(note)}", file=sys.stderr)
    request = Request(user=args.user, agent=args.agent, action=action, run_as=args.run_as,
                      groups=groups, agent_labels=labels or {}, command=command,
                      reason=args.reason, now=_parse_time(args.at),
                      active_sessions=args.sessions)
    decision = evaluate(policy, request)
    _print_decision(request, decision, policy, path)
    return 0 if decision.allowed else 1


def _print_decision(request: Request, decision: Decision, policy: Policy, path: Path) -> None:
    from tether.authority.policy import SESSION_ACTIONS, command_line, format_duration
    from tether.display import safe

    run_as = decision.run_as or request.run_as
    what = f"{request.user} {request.action} on {request.agent}" + (f" as {run_as}" if run_as else "")
    if request.command:
        what += f": {command_line(request.command)}"
    print(f"{'ALLOW' if decision.allowed else 'DENY':<6}{safe(what)}")
    print(f"  reason:    {safe(decision.reason)}")
    if decision.statement is None:
        print("  statement: none applies (default deny)")
    else:
        line = policy.statements[decision.statement].line
        print(f"  statement: {safe(decision.statement_label)} at {path}" + (f":{line}" if line else ""))
    if decision.allowed and request.action in SESSION_ACTIONS:
        limits = [f"max_duration {format_duration(decision.max_duration)}",
                  f"idle_timeout {format_duration(decision.idle_timeout) if decision.idle_timeout else 'none'}",
                  f"recording {decision.recording}",
                  f"max_sessions {decision.max_sessions if decision.max_sessions else 'unlimited'}"]
        if decision.require_reason:
            limits.append("reason required")
        print(f"  limits:    {', '.join(limits)}")


def _validate(args: argparse.Namespace) -> int:
    from tether.authority.policy import PolicyError, find_problems, read_policy_file
    from tether.commands.main import UserError
    from tether.display import safe

    path = _policy_path(args.file)
    try:
        raw = read_policy_file(path)
    except FileNotFoundError as exc:
        raise UserError(f"no policy file at {path}") from exc
    except PolicyError as exc:  # the file itself: writable by others, or too large
        print("\n".join(exc.format()))
        return 1
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        print(f"{path}: not UTF-8 text")
        return 1
    errors = [f"{path}:{p.line}: {p.message}" if p.line else f"{path}: {p.message}"
              for p in find_problems(text)]
    for error in errors:
        print(safe(error))
    if errors:
        return 1
    from tether.authority.policy import Policy

    policy = Policy.parse(text, str(path))
    n, g = len(policy.statements), len(policy.groups)
    print(f"ok: {n} statement{'s' if n != 1 else ''}, {g} group{'s' if g != 1 else ''}"
          + ("" if n else " (an empty policy denies everything)"))
    return 0


def _show(args: argparse.Namespace) -> int:
    from tether.authority.policy import find_problems
    from tether.commands.main import UserError

    path = _policy_path(args.file)
    try:
        text = path.read_text()
    except FileNotFoundError:
        print(f"# {path}")
        print("# (no policy file: no statement allows anything, so everything is denied)")
        return 0
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    print(f"# {path}")
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    problems = find_problems(text)
    if problems:
        print(f"warning: this policy has {len(problems)} problem(s) and cannot be loaded; "
              f"run `tether policy validate {path}`", file=sys.stderr)
    return 0
