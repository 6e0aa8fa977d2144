#!/bin/bash
# Splits the request/reply round trips of one harness run into the broker's legs and the client's legs.
#
#   benches/compare/legs.sh BINARY HARNESS ARGS...
#
# e.g., after `cargo build --release --manifest-path benches/compare/Cargo.toml`,
#
#   benches/compare/legs.sh benches/compare/target/release/coney-compare \
#       --libs coney --only round-trip --sizes 16 --runs 1 --no-fake --secs 2 [--in-task]
#
# records `raw_syscalls:sys_enter` and `raw_syscalls:sys_exit` with perf (on CLOCK_MONOTONIC), runs the
# harness with CONEY_COMPARE_MARKS=1, and hands the events inside the meter's window to `legs.py`, which
# pairs each socket write with the read on the other connection that it caused (see its docstring).
# Give one library, `--only round-trip`, one size and `--runs 1`: only the first run's window is split.
# With LEGS_KEEP=DIR the trace and the harness's output are kept in DIR. Tracing every system call slows every client
# by a few microseconds per call, so compare clients with each other in the same conditions, not with
# the harness's untraced figures. Needs perf and python3.
set -euo pipefail
here=$(dirname "$(realpath "$0")")
bin=$(realpath "$1")
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
CONEY_COMPARE_MARKS=1 perf record -k CLOCK_MONOTONIC -e raw_syscalls:sys_enter -e raw_syscalls:sys_exit \
  -o "$work/perf.data" -- "$bin" "$@" >"$work/out" 2>&1
grep -E 'msg/s' "$work/out" | grep -v '^|' || true
# Lost events break round trips apart; say so rather than split fewer of them silently.
grep -i 'lost' "$work/out" || true
start=$(grep -m1 'mark start' "$work/out" | awk '{print $NF}')
stop=$(grep -m1 'mark stop' "$work/out" | awk '{print $NF}')
perf script --ns -i "$work/perf.data" -F comm,tid,time,event,trace 2>/dev/null | python3 "$here/legs.py" "$start" "$stop"
if [ -n "${LEGS_KEEP:-}" ]; then
  mkdir -p "$LEGS_KEEP" && cp "$work/perf.data" "$work/out" "$LEGS_KEEP/"
fi
