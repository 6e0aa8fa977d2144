#!/usr/bin/env python3
"""Adds to a fuzz corpus the found inputs that cover the most new edges, without passing a file limit.

A plain `-merge=1` of a 10-minute run adds hundreds of files; this keeps the committed corpus small. Run
libFuzzer's merge with a control file first (the corpus, or a copy of it, must be the first directory):

    cp -r corpus/<target> /tmp/m && \
    target/x86_64-unknown-linux-gnu/release/<target> -merge=1 -use_counters=0 \
        -merge_control_file=/tmp/cf /tmp/m /tmp/fuzzwork/<target>
    python3 merge_capped.py /tmp/cf corpus/<target> 195

The files already in the first directory are kept; then, greedily, the candidate covering the most features
not yet covered (smaller first on ties), until the directory would hold LIMIT files or nothing adds any.
"""
import os
import shutil
import sys


def main():
    control_file, out_dir, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    lines = open(control_file).read().splitlines()
    n, n_first = int(lines[0]), int(lines[1])
    paths = lines[2:2 + n]
    features = {}
    for line in lines[2 + n:]:
        parts = line.split()
        if parts and parts[0] == "FT":
            features[int(parts[1])] = set(parts[2:])
    covered = set()
    for i in range(n_first):
        covered |= features.get(i, set())
    candidates = {i: features.get(i, set()) - covered for i in range(n_first, n)}
    chosen = []
    while n_first + len(chosen) < limit and candidates:
        best = max(candidates, key=lambda i: (len(candidates[i] - covered), -os.path.getsize(paths[i])))
        if not candidates[best] - covered:
            break
        covered |= candidates.pop(best)
        chosen.append(best)
    every = set().union(*features.values()) if features else set()
    for i in chosen:
        shutil.copy(paths[i], os.path.join(out_dir, os.path.basename(paths[i])))
    print(f"kept {n_first}, added {len(chosen)}; features covered {len(covered)} of {len(every)}")


if __name__ == "__main__":
    main()
