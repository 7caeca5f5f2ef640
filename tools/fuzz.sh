#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each (default 60), one after
# the other, and prints how many inputs each executed. Fails if any target crashed (panic,
# AddressSanitizer report, timeout of a single input, out-of-memory).
#
#   tools/fuzz.sh [SECONDS] [TARGET...]
#
# Needs the nightly toolchain (`cargo +nightly`); installs cargo-fuzz if it is missing.
# Seeds come from fuzz/corpus/<target> (committed, read only); what the fuzzer adds goes to
# fuzz/target/corpus/<target>, so later runs continue from it. Crashing inputs are written
# to fuzz/artifacts/<target>/; reproduce one with
#   cd fuzz && cargo +nightly fuzz run <target> artifacts/<target>/<file>
# Logs: fuzz/target/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
shift || true
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds == 0)); then
  echo "usage: tools/fuzz.sh [SECONDS] [TARGET...]" >&2
  exit 2
fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if (($#)); then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "==> building ${targets[*]}"
cargo +nightly fuzz build 2>&1 | grep -vE '^\s+(Compiling|Finished)' || true
test "${PIPESTATUS[0]}" -eq 0

mkdir -p target/logs
failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "target/corpus/$t" "corpus/$t"
  log="target/logs/$t.log"
  echo "==> $t: ${seconds}s"
  status=0
  # -timeout: a single input running 30 s is reported as a hang; -rss_limit_mb bounds memory.
  cargo +nightly fuzz run "$t" "target/corpus/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 -timeout=30 -rss_limit_mb=2048 >"$log" 2>&1 || status=$?
  execs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log" | tail -n 1)
  rate=$(awk '/stat::average_exec_per_sec:/ {print $2}' "$log" | tail -n 1)
  units=$(find "target/corpus/$t" "corpus/$t" -type f | wc -l)
  if ((status != 0)); then
    failed+=("$t")
    echo "!! $t crashed (exit $status); see $log"
    grep -E "panicked at|^ERROR: |SUMMARY: |Test unit written to|^Failing input" -A1 "$log" | grep -v '^--$' | head -n 20 || true
    summary+=("$(printf '%-16s %12s executions %8s/s  CRASHED' "$t" "${execs:-?}" "${rate:-?}")")
  else
    summary+=("$(printf '%-16s %12s executions %8s/s  %6s corpus files  ok' "$t" "${execs:-?}" "${rate:-?}" "$units")")
  fi
done

echo
echo "==> fuzzing summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
