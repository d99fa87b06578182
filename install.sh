#!/usr/bin/env bash
# Installs tether and everything its tests need, on Debian 12 with Python 3.11:
#   - Debian packages: mosquitto (the production broker, used by the tests), python3-venv,
#     for the web console's build and browser tests nodejs, npm and chromium, and for the
#     Mosquitto plugin's fuzz harness clang-14 with libFuzzer (libclang-rt-14-dev);
#   - tether's Mosquitto plugin (web console logins, presence rate), built from broker/mosquitto-plugin/
#     into build/mosquitto/ (and, as root, installed in /usr/local/lib/tether/);
#   - the web console's npm packages, exactly as client/web/package-lock.json pins them;
#   - a virtualenv in ./.venv with tether (editable) and the test tools;
#   - a `tether` command on PATH (/usr/local/bin as root, else ~/.local/bin).
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v vim >/dev/null 2>&1 || need_apt+=(vim)  # the recorder's tests drive a real vim
# The web console (client/web): Node builds and tests it, the browser tests drive Chromium.
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
# tether's Mosquitto plugin (console logins) is C: headers, libsodium and a compiler.
[ -f /usr/include/mosquitto.h ] || need_apt+=(libmosquitto-dev)
[ -f /usr/include/mosquitto_plugin.h ] || need_apt+=(mosquitto-dev)
[ -f /usr/include/sodium.h ] || need_apt+=(libsodium-dev)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
# The plugin's token parser is fuzzed (tools/fuzz_plugin/) with clang's libFuzzer and ASan.
command -v clang-14 >/dev/null 2>&1 || need_apt+=(clang-14)
{ command -v clang-14 >/dev/null 2>&1 \
    && [ -f "$(clang-14 -print-runtime-dir)/libclang_rt.fuzzer-$(uname -m).a" ]; } \
  || need_apt+=(libclang-rt-14-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install: apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # tether starts its own brokers; Debian's default mosquitto service would hold port 1883.
  if [[ " ${need_apt[*]} " == *" mosquitto "* ]] && command -v systemctl >/dev/null 2>&1 \
      && systemctl is-active --quiet mosquitto 2>/dev/null; then
    $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
    echo "install: stopped Debian's default mosquitto service (see docs/operations.md to run it with tether's config)"
  fi
fi

mkdir -p build/mosquitto
# Built beside and renamed: a Mosquitto that has the old one loaded keeps its copy.
cc -shared -fPIC -O2 -Wall -Wextra -Werror -o build/mosquitto/tether_console_auth.so.new \
  broker/mosquitto-plugin/tether_console_auth.c broker/mosquitto-plugin/console_token.c \
  broker/mosquitto-plugin/presence_throttle.c -lsodium
mv build/mosquitto/tether_console_auth.so.new build/mosquitto/tether_console_auth.so
if [ "$(id -u)" = 0 ]; then
  install -D -m 0644 build/mosquitto/tether_console_auth.so /usr/local/lib/tether/tether_console_auth.so
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# strict: the installed tree mirrors the package layout (tether.agent is agent/), which
# mypy needs; re-run ./install.sh after adding a module.
.venv/bin/python -m pip install -q -e '.[test]' --config-settings editable_mode=strict

# The lockfile's packages (esbuild for the bundle check, playwright-core for the browser
# tests; playwright drives Debian's /usr/bin/chromium and downloads no browser).
if [ ! -f client/web/node_modules/.package-lock.json ] \
    || ! cmp -s client/web/package-lock.json client/web/.installed-lock 2>/dev/null; then
  (cd client/web && npm ci --no-audit --no-fund --loglevel=error >/dev/null && cp package-lock.json .installed-lock)
fi

if [ "$(id -u)" = 0 ]; then bindir=/usr/local/bin; else bindir="$HOME/.local/bin"; fi
mkdir -p "$bindir"
ln -sf "$PWD/.venv/bin/tether" "$bindir/tether"
echo "install: done. \`tether\` is $bindir/tether$(case ":$PATH:" in *":$bindir:"*) ;; *) echo " (add $bindir to PATH)";; esac)"
