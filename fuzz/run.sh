#!/usr/bin/env bash
# Runs bnorm_fuzz for a fixed time from the committed seed corpus.
#
#   fuzz/run.sh FUZZER SECONDS [extra libFuzzer flags...]
#
# New inputs go to a work corpus beside the fuzzer (never into fuzz/corpus);
# a failing input is saved there too, as crash-*, and printed by name.
# `make test-fuzz` runs it for 60 s with -seed=1; for a long run, for example
# eight hours with a random seed and two jobs:
#   make test-fuzz FUZZ_TIME=28800 FUZZ_SEED=0 FUZZ_FLAGS="-jobs=2 -workers=2"
# and to keep what it found as seeds: fuzz/run.sh ... then
#   build-fuzz/fuzz/bnorm_fuzz -merge=1 fuzz/corpus build-fuzz/fuzz/work
set -euo pipefail
fuzzer=$1
seconds=$2
shift 2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=$(dirname "$fuzzer")
work=$dir/work
mkdir -p "$work" "$dir/artifacts"
log=$dir/fuzz.log
echo "fuzz: $fuzzer for ${seconds}s from $root/fuzz/corpus ($(ls "$root/fuzz/corpus" | wc -l) seeds); log: $log"
rc=0
# -timeout: one input may run for at most 30 s (a hang in the emulator is a
# failure); -max_len: scenarios need about 200 bytes; ASan's options make a
# leak or any report fatal.
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:detect_stack_use_after_return=0} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
  "$fuzzer" -max_total_time="$seconds" -timeout=30 -max_len=512 -print_final_stats=1 \
  -artifact_prefix="$dir/artifacts/" "$@" "$work" "$root/fuzz/corpus" >"$log" 2>&1 || rc=$?
grep -E '^bnorm_fuzz:|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)|^Done' "$log" || true
if [[ $rc -ne 0 ]]; then
  echo "fuzz: FAILED (exit $rc); the last lines of $log:"
  tail -n 40 "$log"
  ls -1 "$dir/artifacts" 2>/dev/null | sed 's/^/fuzz: saved input: /'
  exit "$rc"
fi
echo "fuzz: no failure in ${seconds}s"
