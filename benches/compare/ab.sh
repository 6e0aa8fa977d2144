#!/bin/bash
# Alternates builds of the comparison harness and prints the medians of their runs, per scenario.
#
#   benches/compare/ab.sh ROUNDS "HARNESS ARGS" BINARY...
#
# Build each version of the harness (`cargo build --release --manifest-path benches/compare/Cargo.toml`)
# and copy `benches/compare/target/release/coney-compare` somewhere before building the next; then e.g.
#
#   benches/compare/ab.sh 3 "--libs coney --only fake-deliver --sizes 16 --runs 3 --no-real" /tmp/old /tmp/new
#
# runs the harness ROUNDS times with each binary in turn (old, new, old, new, ...) and prints, per scenario,
# size and binary, the median over the rounds of the table's figures (each already a median of --runs),
# with the range.
set -euo pipefail
rounds=$1
args=$2
shift 2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for _ in $(seq 1 "$rounds"); do
  for bin in "$@"; do
    # shellcheck disable=SC2086
    "$bin" $args 2>/dev/null | grep -E '^\| (deliveries|consume|publish|request)' |
      awk -F'|' -v b="$bin" '{print b "|" $2 "|" $3 "|" $4}' >>"$out"
  done
done
python3 - "$out" <<'PY'
import collections, re, statistics, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    b, scen, size, cell = [x.strip() for x in line.split('|')]
    rate = re.search(r'([\d.]+)([kM]?) msg/s', cell)
    cpu = re.search(r'([\d.]+) µs CPU', cell)
    p50 = re.search(r'p50 ([\d.]+) µs', cell)
    r = float(rate.group(1)) * {'': 1, 'k': 1e3, 'M': 1e6}[rate.group(2)] if rate else None
    rows[(scen, size, b)].append((r, float(cpu.group(1)) if cpu else None, float(p50.group(1)) if p50 else None))
for key in sorted(rows):
    v = rows[key]
    rates = [x[0] for x in v if x[0]]
    cpus = [x[1] for x in v if x[1]]
    p50s = [x[2] for x in v if x[2]]
    s = f"{key[0][:44]:44s} {key[1]:6s} {key[2]:24s} n={len(v)}"
    if rates:
        s += f"  rate {statistics.median(rates) / 1e3:.1f}k [{min(rates) / 1e3:.0f}-{max(rates) / 1e3:.0f}]"
    if p50s:
        s += f"  p50 {statistics.median(p50s):.0f} µs [{min(p50s):.0f}-{max(p50s):.0f}]"
    if cpus:
        s += f"  cpu {statistics.median(cpus):.2f} µs [{min(cpus):.2f}-{max(cpus):.2f}]"
    print(s)
PY
