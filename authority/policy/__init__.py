"""The access policy: who may open what kind of session on which agents, as whom, when,
and with which limits.

The policy is a TOML file (`$TETHER_HOME/authority/policy.toml`, reference in
docs/policy.md). Evaluation is a pure function, `evaluate(policy, request)`:

- an explicit `deny` statement that matches wins over any allow;
- otherwise the first `allow` statement, in file order, that matches the request and
  whose conditions all hold decides, and supplies the limits (max duration, idle
  timeout, recording, ...);
- nothing matching means deny. When an allow statement applied to the request but one of
  its conditions failed, the decision's reason says which condition.

Parsing and validation report problems with line numbers; `Policy.load` raises
`PolicyError` carrying all of them.

The package: `model` (the types and errors), `parse` (reading the file, TOML with line
numbers), `write` (TOML out), `evaluation` (the decision).
"""

# Relative imports between these modules: mypy sees them both as authority.policy.* (the
# checked paths) and as tether.authority.policy.* (the installed package), and an absolute
# round trip (Policy.parse -> parse -> Policy) would mix the two views of one class.
from .evaluation import (
    Access,
    RunAsChoice,
    access,
    command_line,
    deciding_allow,
    evaluate,
    labels_match,
    run_as_allowed,
    user_groups,
)
from .model import (
    ACTIONS,
    DEFAULT_DETACH_TIMEOUT,
    DEFAULT_MAX_DURATION,
    MAX_POLICY_BYTES,
    SESSION_ACTIONS,
    WATCH_ACTIONS,
    Decision,
    Policy,
    PolicyError,
    Problem,
    Request,
    Statement,
    TimeWindow,
    UnsafePolicyFile,
    format_duration,
    parse_duration,
)
from .parse import find_problems, read_policy_file, validate
from .write import append_statement, statement_toml

__all__ = [
    "ACTIONS",
    "DEFAULT_DETACH_TIMEOUT",
    "DEFAULT_MAX_DURATION",
    "MAX_POLICY_BYTES",
    "SESSION_ACTIONS",
    "WATCH_ACTIONS",
    "Access",
    "Decision",
    "Policy",
    "PolicyError",
    "Problem",
    "Request",
    "RunAsChoice",
    "Statement",
    "TimeWindow",
    "UnsafePolicyFile",
    "access",
    "append_statement",
    "command_line",
    "deciding_allow",
    "evaluate",
    "find_problems",
    "format_duration",
    "labels_match",
    "parse_duration",
    "read_policy_file",
    "run_as_allowed",
    "statement_toml",
    "user_groups",
    "validate",
]
