#!/usr/bin/env bash
# Fuzz the Mosquitto plugin's console-login decision (broker/mosquitto-plugin/console_token.c)
# with libFuzzer and AddressSanitizer + UndefinedBehaviorSanitizer (Debian's clang-14;
# ./install.sh installs it), then measure its line coverage over the corpus.
#
#   tools/fuzz_plugin/run.sh [--runs N] [--out DIR] [--no-coverage]
#
# N inputs (default 1,000,000) into DIR (default build/fuzz_plugin): DIR/corpus keeps the
# inputs that found new paths (a later run starts from them), DIR/crashes any input that
# broke a property or crashed. Ends with one line:
#   fuzz_plugin: RUNS runs in SECS s, cov EDGES ft FEATURES, corpus N, crashes K[, lines P%]
# and exits non-zero if anything crashed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
runs=1000000
out=$repo/build/fuzz_plugin
coverage=1
while [ $# -gt 0 ]; do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --no-coverage) coverage=0; shift ;;
    *) echo "usage: $0 [--runs N] [--out DIR] [--no-coverage]" >&2; exit 2 ;;
  esac
done
for tool in clang-14 llvm-profdata-14 llvm-cov-14; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "fuzz_plugin: $tool is missing; run ./install.sh (Debian: apt-get install clang-14 libclang-rt-14-dev)" >&2
    exit 2
  fi
done

src=$repo/broker/mosquitto-plugin
mkdir -p "$out/corpus" "$out/crashes"
# Four tokens per slot instead of 64: the same code, its limits within a few operations.
flags=(-g -O1 -DTC_PER_SLOT=4 -I"$src" "$here/fuzz_console_token.c" "$src/console_token.c" -lsodium)
clang-14 -fsanitize=address,undefined,fuzzer -fno-sanitize-recover=all -o "$out/fuzz" "${flags[@]}"

# Seeds: a raw password that is a well-formed token (118 base64url characters after
# "tc1.") and a well-formed console-keys line, so mutations start at the decoders' edges.
b64url() { head -c "$1" /dev/urandom | base64 -w0 | tr '+/' '-_' | tr -d '='; }
if [ -z "$(ls -A "$out/corpus")" ]; then
  { printf '\000\172\000tc1.'; b64url 88; } > "$out/corpus/seed-token"
  { printf '\000\061\000ann.c '; b64url 32; } > "$out/corpus/seed-key-line"
fi

started=$(date +%s%N)
set +e
"$out/fuzz" -runs="$runs" -max_len=512 -print_final_stats=1 -artifact_prefix="$out/crashes/" \
  "$out/corpus" > "$out/fuzz.log" 2>&1
status=$?
set -e
took=$(( ($(date +%s%N) - started + 500000000) / 1000000000 ))
crashes=$(find "$out/crashes" -type f | wc -l)
last=$(grep -E '^#[0-9]+' "$out/fuzz.log" | tail -1 || true)
edges=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
features=$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
done_runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$out/fuzz.log")
corpus=$(find "$out/corpus" -type f | wc -l)
summary="fuzz_plugin: ${done_runs:-0} runs in $took s, cov ${edges:-?} ft ${features:-?}, corpus $corpus, crashes $crashes"

if [ "$status" -ne 0 ] || [ "$crashes" -ne 0 ] || [ "${done_runs:-0}" -ne "$runs" ]; then
  tail -40 "$out/fuzz.log" >&2
  echo "$summary (libFuzzer exit $status; inputs in $out/crashes)" >&2
  exit 1
fi

if [ "$coverage" = 1 ]; then
  # The corpus, once, through a build that counts lines: how much of console_token.c it reaches.
  clang-14 -fprofile-instr-generate -fcoverage-mapping -fsanitize=fuzzer -o "$out/fuzz-cov" "${flags[@]}"
  LLVM_PROFILE_FILE="$out/cov.profraw" "$out/fuzz-cov" -runs=0 "$out/corpus" > "$out/cov.log" 2>&1
  llvm-profdata-14 merge -sparse "$out/cov.profraw" -o "$out/cov.profdata"
  llvm-cov-14 report "$out/fuzz-cov" -instr-profile="$out/cov.profdata" "$src/console_token.c" > "$out/coverage.txt"
  lines=$(awk '$1 ~ /console_token.c$/ {print $10}' "$out/coverage.txt")
  summary="$summary, lines ${lines:-?} of console_token.c"
fi
echo "$summary"
