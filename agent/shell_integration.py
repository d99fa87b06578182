"""Shell integration for PTY sessions: the login shell emits OSC 133 marks so that the recorder
can cut the output into commands.

    ESC ] 133 ; A BEL                          prompt starts
    ESC ] 133 ; B BEL                          prompt ends, the user types a command
    ESC ] 133 ; C ; cmdline_url=<%-encoded> BEL the command starts executing (before its output)
    ESC ] 133 ; D ; <exit code> BEL            the command finished (before the next prompt)

The user's own startup files run exactly once, as the shell would run them, and the hooks are
installed after them, chained to what they set up (PROMPT_COMMAND, PS0/PS1, precmd/preexec).
Nothing is written to the user's home: the agent writes the integration scripts into a private
directory of its own (see `IntegrationDir`) and points the shell at them through its
environment.

bash (4.4 or later). Started as `-bash --posix` with ENV=<dir>/bash-env: an interactive bash in
posix mode reads $ENV instead of the profile files, and stays a login shell ($0 is "-bash",
`shopt -q login_shell` is true, ~/.bash_logout runs on exit). The script leaves posix mode
(and unsets POSIXLY_CORRECT, which --posix sets), gives HISTFILE and MAILCHECK their non-posix
defaults (~/.bash_history, 60) unless the environment set them, restores ENV, then runs
/etc/profile and the first existing one of ~/.bash_profile, ~/.bash_login, ~/.profile, as bash's
run_startup_files() does (~/.bashrc only if they source it). The resulting shell state (shopt,
set -o, variables, environment) is the same as a plain `-bash`'s but for PS0, PS1 and
PROMPT_COMMAND. Then the hooks:
  - PS1 is wrapped in A ... B; PS0 gets a command substitution that prints C. PS0 is expanded
    by bash only when a command is about to run, so an empty Enter, a syntax error or Ctrl-C at
    the prompt give no C and no D. No DEBUG trap is used: the user's DEBUG trap is untouched.
  - PROMPT_COMMAND (string or, from bash 5.1, array) becomes: our precmd, the user's
    PROMPT_COMMAND, our postcmd. precmd emits D with $? when the command counter (the prompt
    escape \\#) moved, i.e. only after a command read at the prompt, never for commands run by
    PROMPT_COMMAND, and returns that same status, so the user's PROMPT_COMMAND and PS1 see the
    command's $?. postcmd re-wraps PS1/PS0 when the user's PROMPT_COMMAND (or the user at the
    prompt) replaced them.
  - The command line is the history entry of the command (the whole line, multi-line commands
    included). When the user's history settings keep the line out of the history
    (HISTCONTROL=ignorespace/ignoredups/ignoreboth, HISTIGNORE, `set +o history`), C is sent
    without cmdline_url.
Differences from a plain login bash: the process is `-bash --posix` in ps; the startup files
are sourced from our script, so BASH_SOURCE has one more outer entry while they run; the user's
PROMPT_COMMAND sees PIPESTATUS with a single element (our precmd ran before it, $? is kept);
a PROMPT_COMMAND later replaced wholesale (not appended to) loses the D marks and the re-wrap;
`shopt -u promptvars` turns C off (PS0 could no longer run our command substitution).

zsh. ZDOTDIR=<dir>/zsh with our .zshenv, .zprofile, .zshrc and .zlogin: each runs the user's own
file of that name from the user's ZDOTDIR (or HOME), with the user's ZDOTDIR set while it runs
(and picks up a ZDOTDIR the user's files set). The last startup file (.zlogin for a login shell)
installs a precmd (D, first) and a preexec (C, last, with preexec's $1: the line as typed) hook
and wraps PS1 in A ... B; then the user's ZDOTDIR is restored. The system files (/etc/zsh/*) run
with our ZDOTDIR; a `setopt no_rcs` in them skips the integration. (zsh is not installed where
the tests run: this part has no test.)

sh/dash. Started as before (`-sh`) with ENV=<dir>/sh-env, which an interactive sh reads after
/etc/profile and ~/.profile: it restores ENV (running the user's $ENV file, if any) and wraps PS1
in A ... B. sh has no hook before a command runs or before the prompt is drawn, so there is no
C and no D; a PS1 the user sets at the prompt afterwards has no marks; a ~/.profile that sets
ENV itself replaces ours (no marks at all).

Any other shell is started unchanged, and so is everything when the agent's environment has
TETHER_SHELL_INTEGRATION=0 (an agent/policy option is future work) or when the scripts cannot
be written.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("tether.agent.shell_integration")

OPT_OUT = "TETHER_SHELL_INTEGRATION"

BASH_ENV_FILE = "bash-env"
SH_ENV_FILE = "sh-env"
ZSH_DIR = "zsh"

# Variables through which the agent hands the user's original values to the scripts.
ORIG_ENV = "TETHER_SI_ENV"  # the user's ENV (present only when it was set)
RESET_DEFAULTS = "TETHER_SI_RESET"  # names whose posix-mode default bash must undo
ORIG_ZDOTDIR = "TETHER_SI_ZDOTDIR"  # the user's ZDOTDIR (present only when it was set)


BASH_SCRIPT = r"""# tether shell integration for bash (OSC 133), read as $ENV by `-bash --posix`.
# Written by the tether agent; see tether/agent/shell_integration.py.
builtin set +o posix
builtin unset POSIXLY_CORRECT
builtin shopt -u inherit_errexit 2>/dev/null
if [[ -n ${TETHER_SI_ENV+x} ]]; then builtin export ENV="$TETHER_SI_ENV"; else builtin unset ENV; fi
# --posix also changed these defaults; the agent lists the ones the environment did not set.
if [[ " ${TETHER_SI_RESET-} " == *" HISTFILE "* ]]; then HISTFILE=~/.bash_history; fi
if [[ " ${TETHER_SI_RESET-} " == *" MAILCHECK "* ]]; then MAILCHECK=60; fi
builtin unset TETHER_SI_ENV TETHER_SI_RESET

# Defined before the user's files run, so that their aliases cannot change these bodies.
__tether_urlencode() {
    builtin local LC_ALL=C s="$1" c i out=
    for (( i = 0; i < ${#s}; i++ )); do
        c=${s:i:1}
        case $c in
            [A-Za-z0-9._~/-]) out+=$c ;;
            *) builtin printf -v c '%%%02X' "'$c"; out+=${c: -3} ;;
        esac
    done
    __tether_url=$out
}

# Runs in the command substitution of PS0, i.e. in a subshell, once per command read at the
# prompt; prints C with the command line when the history has it.
__tether_c() {
    builtin local h n
    h=$(HISTTIMEFORMAT= builtin history 1)
    h=${h#"${h%%[![:space:]]*}"}
    n=${h%%[!0-9]*}
    if [[ -n $n && $n == "${__tether_hnext-}" ]]; then
        __tether_urlencode "${h:${#n}+2}"
        builtin printf '\e]133;C;cmdline_url=%s\a' "$__tether_url"
    else
        builtin printf '\e]133;C\a'
    fi
}

__tether_precmd() {
    builtin local ret=$? n='\#'
    n=${n@P}
    if [[ $n != "${__tether_cmdno-}" ]]; then
        __tether_cmdno=$n
        builtin printf '\e]133;D;%s\a' "$ret"
    fi
    builtin return "$ret"
}

__tether_wrap() {
    builtin local a='\[\e]133;A\a\]' b='\[\e]133;B\a\]' c='${__tether_on:+$(__tether_c)}'
    if [[ ${PS1-} != "$a"* || ${PS1-} != *"$b" ]]; then PS1=$a${PS1-}$b; fi
    if builtin shopt -q promptvars; then
        if [[ ${PS0-} != *"$c" ]]; then PS0=${PS0-}$c; fi
    elif [[ ${PS0-} == *"$c" ]]; then
        PS0=${PS0%"$c"}
    fi
}

__tether_postcmd() {
    builtin local ret=$?
    __tether_wrap
    __tether_hnext=${HISTCMD-}
    builtin return "$ret"
}

__tether_install() {
    if (( BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4) )); then
        builtin return 0
    fi
    builtin local n='\#' pre='${__tether_on:+__tether_precmd}' post='${__tether_on:+__tether_postcmd}'
    __tether_on=1
    __tether_cmdno=${n@P}
    if [[ -n ${PROMPT_COMMAND+x} && ${PROMPT_COMMAND@a} == *a* ]]; then
        PROMPT_COMMAND=("$pre" "${PROMPT_COMMAND[@]}" "$post")
    else
        PROMPT_COMMAND=$pre$'\n'${PROMPT_COMMAND-}$'\n'$post
    fi
    __tether_wrap
}

# The startup files of an interactive bash, as run_startup_files() in bash's shell.c runs them.
if builtin shopt -q login_shell; then
    if [[ -e /etc/profile ]]; then . /etc/profile; fi
    if [[ -e ~/.bash_profile ]]; then . ~/.bash_profile
    elif [[ -e ~/.bash_login ]]; then . ~/.bash_login
    elif [[ -e ~/.profile ]]; then . ~/.profile
    fi
else
    if [[ -e /etc/bash.bashrc ]]; then . /etc/bash.bashrc; fi
    if [[ -e ~/.bashrc ]]; then . ~/.bashrc; fi
fi

\__tether_install
"""

SH_SCRIPT = r"""# tether shell integration for sh (OSC 133 prompt marks), read as $ENV.
# Written by the tether agent; see tether/agent/shell_integration.py.
if [ -n "${TETHER_SI_ENV+x}" ]; then
    ENV=$TETHER_SI_ENV
    export ENV
    unset TETHER_SI_ENV
    if [ -n "$ENV" ] && [ -e "$ENV" ]; then . "$ENV"; fi
else
    unset ENV
fi
PS1="$(printf '\033]133;A\007')$PS1$(printf '\033]133;B\007')"
"""

# Shared head of each of our zsh startup files: run the user's file of the same name with the
# user's ZDOTDIR, remember the ZDOTDIR it leaves, and point ZDOTDIR back at us for the next.
_ZSH_RUN_USER_FILE = r"""__tether_ours=$ZDOTDIR
if [[ $__tether_zd_set == 1 ]]; then ZDOTDIR=$__tether_zd; else unset ZDOTDIR; fi
if [[ -e ${ZDOTDIR:-$HOME}/{name} ]]; then source ${ZDOTDIR:-$HOME}/{name}; fi
if (( ${+ZDOTDIR} )); then __tether_zd_set=1 __tether_zd=$ZDOTDIR; else __tether_zd_set=0; fi
ZDOTDIR=$__tether_ours
"""

_ZSH_FINISH = r"""if [[ -o interactive ]]; then __tether_install; fi
if [[ $__tether_zd_set == 1 ]]; then ZDOTDIR=$__tether_zd; else unset ZDOTDIR; fi
unset __tether_zd __tether_zd_set __tether_ours
"""

ZSH_ENV = (
    r"""# tether shell integration for zsh (OSC 133). ZDOTDIR points here; each file runs the
# user's own file of the same name. Written by the tether agent.
if (( ${+TETHER_SI_ZDOTDIR} )); then
    __tether_zd_set=1 __tether_zd=$TETHER_SI_ZDOTDIR
    unset TETHER_SI_ZDOTDIR
else
    __tether_zd_set=0 __tether_zd=
fi

__tether_urlencode() {
    emulate -L zsh
    setopt no_multibyte
    local LC_ALL=C s=$1 c out=
    local -i i
    for (( i = 1; i <= $#s; i++ )); do
        c=$s[i]
        if [[ $c == [A-Za-z0-9._~/-] ]]; then out+=$c; else printf -v c '%%%02X' "'$c"; out+=$c[-3,-1]; fi
    done
    typeset -g __tether_url=$out
}

__tether_preexec() {
    typeset -g __tether_ran=1
    __tether_urlencode "${1:-$3}"
    print -rn -- $'\e]133;C;cmdline_url='$__tether_url$'\a'
}

__tether_precmd() {
    local ret=$?
    if (( ${__tether_ran:-0} )); then
        typeset -g __tether_ran=0
        print -rn -- $'\e]133;D;'$ret$'\a'
    fi
    return ret
}

__tether_postcmd() {
    emulate -L zsh
    local a=$'%{\e]133;A\a%}' b=$'%{\e]133;B\a%}'
    if [[ $PS1 != "$a"* || $PS1 != *"$b" ]]; then PS1=$a$PS1$b; fi
}

__tether_install() {
    emulate -L zsh
    typeset -g __tether_ran=0
    typeset -ga precmd_functions preexec_functions
    precmd_functions=(__tether_precmd ${precmd_functions:#__tether_(pre|post)cmd} __tether_postcmd)
    preexec_functions=(${preexec_functions:#__tether_preexec} __tether_preexec)
    __tether_postcmd
}

"""
    + _ZSH_RUN_USER_FILE.replace("{name}", ".zshenv")
)

ZSH_PROFILE = _ZSH_RUN_USER_FILE.replace("{name}", ".zprofile")
ZSH_RC = (
    _ZSH_RUN_USER_FILE.replace("{name}", ".zshrc")
    + "if [[ ! -o login ]]; then\n"
    + _ZSH_FINISH
    + "fi\n"
)
ZSH_LOGIN = _ZSH_RUN_USER_FILE.replace("{name}", ".zlogin") + _ZSH_FINISH


def enabled(environ: Mapping[str, str]) -> bool:
    """TETHER_SHELL_INTEGRATION=0 in the agent's environment turns the integration off."""
    return environ.get(OPT_OUT, "1").strip().lower() not in ("0", "no", "false", "off")


def shell_kind(shell: str) -> str | None:
    """Which integration a login shell gets, by the name of its executable."""
    name = os.path.basename(shell)
    if name == "bash":
        return "bash"
    if name == "zsh":
        return "zsh"
    if name in ("sh", "dash"):
        return "sh"
    return None


def integration_files(kind: str) -> dict[str, str]:
    """The files (path relative to the integration directory -> content) a shell kind needs."""
    if kind == "bash":
        return {BASH_ENV_FILE: BASH_SCRIPT}
    if kind == "sh":
        return {SH_ENV_FILE: SH_SCRIPT}
    if kind == "zsh":
        return {
            f"{ZSH_DIR}/.zshenv": ZSH_ENV,
            f"{ZSH_DIR}/.zprofile": ZSH_PROFILE,
            f"{ZSH_DIR}/.zshrc": ZSH_RC,
            f"{ZSH_DIR}/.zlogin": ZSH_LOGIN,
        }
    raise ValueError(f"no shell integration for {kind!r}")


@dataclass(frozen=True)
class Launch:
    """How to start the login shell: executable, argv (argv[0] is the shell's $0) and env."""

    executable: str
    argv: list[str]
    env: dict[str, str]


def plain_launch(shell: str, env: Mapping[str, str]) -> Launch:
    """A login shell as sshd starts it: $0 is "-" + the shell's name."""
    return Launch(shell, ["-" + os.path.basename(shell)], dict(env))


def launch(shell: str, env: Mapping[str, str], directory: str | None) -> Launch:
    """The login shell, with the integration whose files are in `directory` (None: without)."""
    plain = plain_launch(shell, env)
    kind = shell_kind(shell)
    if directory is None or kind is None or "POSIXLY_CORRECT" in env:
        return plain
    new = dict(env)
    if kind in ("bash", "sh"):
        if "ENV" in env:
            new[ORIG_ENV] = env["ENV"]
        new["ENV"] = os.path.join(directory, BASH_ENV_FILE if kind == "bash" else SH_ENV_FILE)
        if kind == "sh":
            return Launch(shell, plain.argv, new)
        reset = [name for name in ("HISTFILE", "MAILCHECK") if name not in env]
        if reset:
            new[RESET_DEFAULTS] = " ".join(reset)
        return Launch(shell, [*plain.argv, "--posix"], new)
    if "ZDOTDIR" in env:
        new[ORIG_ZDOTDIR] = env["ZDOTDIR"]
    new["ZDOTDIR"] = os.path.join(directory, ZSH_DIR)
    return Launch(shell, plain.argv, new)


class IntegrationDir:
    """The agent's private directory of integration scripts, one subdirectory per run-as user.

    The base is a fresh mkdtemp directory of the agent. An agent that switches users (root)
    makes it 0711, so that run-as users can reach their own subdirectory but not list the base,
    and makes each subdirectory root:<run-as group> 0750 with files 0640: the run-as user can
    read the scripts, no other user (except members of that group) can, and only the agent can
    change them (the subdirectory is not owned by the run-as user, so root never writes into a
    directory that user controls). Without switching, everything is the agent's own, 0700/0600.
    The files are checked and rewritten if needed before every spawn, so a temp cleaner that
    removed them does no harm; the whole tree is removed when the agent exits."""

    def __init__(self, parent: str | None = None) -> None:
        self._parent = parent
        self._base: Path | None = None
        atexit.register(self.remove)

    def remove(self) -> None:
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None

    def _base_dir(self, switch: bool) -> Path:
        me = os.geteuid()
        if self._base is not None:
            try:
                st = os.lstat(self._base)
            except FileNotFoundError:
                self._base = None
            else:
                if not stat.S_ISDIR(st.st_mode) or st.st_uid != me:
                    raise OSError(f"{self._base} is not the agent's directory any more")
        if self._base is None:
            self._base = Path(tempfile.mkdtemp(prefix="tether-shell-", dir=self._parent))
        os.chmod(self._base, 0o711 if switch else 0o700)
        return self._base

    def ensure(self, files: Mapping[str, str], uid: int, gid: int, switch: bool) -> Path:
        """Make sure `files` exist with that content for run-as `uid`; return their directory."""
        base = self._base_dir(switch)
        sub = base / f"u{uid}"
        group = gid if switch else -1
        dmode, fmode = (0o750, 0o640) if switch else (0o700, 0o600)
        self._mkdir(sub, group, dmode)
        for rel in sorted({str(Path(r).parent) for r in files} - {"."}):
            self._mkdir(sub / rel, group, dmode)
        for rel, content in files.items():
            self._write(sub / rel, content.encode(), group, fmode)
        return sub

    @staticmethod
    def _mkdir(path: Path, group: int, mode: int) -> None:
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
                raise OSError(f"{path} is not the agent's directory") from None
        os.chown(path, -1, group)
        os.chmod(path, mode)

    @staticmethod
    def _write(path: Path, data: bytes, group: int, mode: int) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            pass
        else:
            try:
                st = os.fstat(fd)
                same = (
                    stat.S_ISREG(st.st_mode)
                    and st.st_uid == os.geteuid()
                    and (group == -1 or st.st_gid == group)
                    and stat.S_IMODE(st.st_mode) == mode
                    and st.st_size == len(data)
                    and os.read(fd, len(data) + 1) == data
                )
            finally:
                os.close(fd)
            if same:
                return
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
            os.fchown(fd, -1, group)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        os.replace(tmp, path)


_DIR = IntegrationDir()


def prepare(
    shell: str,
    env: Mapping[str, str],
    uid: int,
    gid: int,
    switch: bool,
    *,
    environ: Mapping[str, str] | None = None,
    directory: IntegrationDir | None = None,
) -> Launch:
    """The launch of a login shell for run-as `uid`/`gid`, with the integration written out
    when it applies; any failure to write it gives the plain login shell."""
    kind = shell_kind(shell)
    if kind is None or not enabled(os.environ if environ is None else environ):
        return plain_launch(shell, env)
    try:
        where = (directory or _DIR).ensure(integration_files(kind), uid, gid, switch)
    except OSError as exc:
        log.warning("shell integration disabled for this session: %s", exc)
        return plain_launch(shell, env)
    return launch(shell, env, str(where))
