#!/bin/bash
# Counts the system calls and context switches of one harness run inside its measured window only.
#
#   benches/compare/syscalls.sh BINARY HARNESS ARGS...
#
# e.g., after `cargo build --release --manifest-path benches/compare/Cargo.toml`,
#
#   benches/compare/syscalls.sh benches/compare/target/release/coney-compare \
#       --libs coney --only consume --sizes 16 --runs 1 --no-fake
#
# records `raw_syscalls:sys_enter` and `context-switches` with perf (on CLOCK_MONOTONIC), runs the harness
# with CONEY_COMPARE_MARKS=1 so that it prints the monotonic times at which its meter starts and stops,
# and counts only the events between the first start and stop marks: connection setup, queue filling and
# teardown are left out. Give one library and one scenario per run. Prints the harness's result line, then
# counts per thread name and syscall (x86_64 numbers with their names for the common ones; futex calls
# split by operation).
set -euo pipefail
bin=$(realpath "$1")
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
CONEY_COMPARE_MARKS=1 perf record -q -k CLOCK_MONOTONIC -e raw_syscalls:sys_enter -e context-switches \
  -o "$work/perf.data" -- "$bin" "$@" >"$work/out" 2>&1
grep -E 'msg/s' "$work/out" | grep -v '^|' || true
start=$(grep -m1 'mark start' "$work/out" | awk '{print $NF}')
stop=$(grep -m1 'mark stop' "$work/out" | awk '{print $NF}')
echo "window $start .. $stop"
perf script -i "$work/perf.data" -F comm,time,event,trace 2>/dev/null | awk -v s="$start" -v e="$stop" '
BEGIN {
  name[0] = "read"; name[1] = "write"; name[7] = "poll"; name[20] = "writev"; name[44] = "sendto";
  name[45] = "recvfrom"; name[202] = "futex"; name[232] = "epoll_wait"; name[281] = "epoll_pwait";
  name[228] = "clock_gettime"; name[24] = "sched_yield";
}
{
  t = $2; sub(":", "", t)
  if (t + 0 < s + 0 || t + 0 > e + 0) next
  if ($3 ~ /context-switches/) { n[$1 " context-switches"]++; next }
  nr = $5
  what = (nr in name) ? name[nr] : "syscall " nr
  if (nr == 202) { op = $7; sub(",", "", op); what = what " op 0x" op }
  n[$1 " " what]++
}
END { for (k in n) print n[k], k }' | sort -rn
