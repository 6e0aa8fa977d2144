#!/usr/bin/env python3
"""Splits request/reply round trips into the broker's legs and the client's legs.

Reads `perf script -F comm,tid,time,event,trace` output of a harness run recorded with
`raw_syscalls:sys_enter` and `raw_syscalls:sys_exit` (see `legs.sh`, which records it), keeps the
events between START and STOP (the meter's marks), and finds every socket write and every read that
returned data. A round trip of the harness is four socket events on two connections: the requester's
connection writes the request (W req), the responder's connection reads it (R req), writes the reply
(W rep), and the requester's connection reads the reply (R rep). The legs between them are:

- broker, request:  W req exit -> R req exit   (RabbitMQ routing the request, plus the client noticing)
- client, responder: R req exit -> W rep exit
- broker, reply:    W rep exit -> R rep exit
- client, requester: R rep exit -> next W req exit

For a client that waits in `epoll_wait` before it reads, the time from the `epoll_wait` that returned
to the read that followed it on the same thread is printed separately ("noticed -> read"), so that the
broker legs can also be taken to the moment the client was told, not the moment it read.

Prints the median and the 10th and 90th percentiles of each leg in microseconds, and how many round
trips were found.
"""
import re
import statistics
import sys

READS = {0: "read", 45: "recvfrom", 17: "pread64", 19: "readv", 47: "recvmsg"}
WRITES = {1: "write", 20: "writev", 44: "sendto", 46: "sendmsg"}
EPOLL = {232, 281, 441}

ENTER = re.compile(r"^\s*(\S.*?)\s+(\d+)\s+([\d.]+):\s+raw_syscalls:sys_enter:\s+NR (\d+) \(([0-9a-f]+)")
EXIT = re.compile(r"^\s*(\S.*?)\s+(\d+)\s+([\d.]+):\s+raw_syscalls:sys_exit:\s+NR (\d+) = (-?\d+)")


def main():
    start, stop = float(sys.argv[1]), float(sys.argv[2])
    pending = {}  # tid -> (nr, fd)
    last_epoll = {}  # tid -> exit time of the last epoll_wait that returned events
    events = []  # (time, kind, fd, noticed)
    for line in sys.stdin:
        m = ENTER.match(line)
        if m:
            pending[m.group(2)] = (int(m.group(4)), int(m.group(5), 16))
            continue
        m = EXIT.match(line)
        if not m:
            continue
        tid, t, nr, ret = m.group(2), float(m.group(3)), int(m.group(4)), int(m.group(5))
        entered = pending.pop(tid, None)
        if entered is None or entered[0] != nr or t < start or t > stop:
            continue
        fd = entered[1]
        if nr in EPOLL and ret > 0:
            last_epoll[tid] = t
        elif ret == 8:
            # An eventfd's counter (tokio's and others' wakers) or a heartbeat frame: neither is a leg.
            continue
        elif nr in READS and ret > 0 and fd > 2:
            events.append((t, "R", fd, last_epoll.pop(tid, None)))
        elif nr in WRITES and ret > 0 and fd > 2:
            events.append((t, "W", fd, None))
    events.sort()
    # The meter starts just before the requester's first publish, so the first socket write in the
    # window is on the requester's connection. A round trip is W R W R on two sockets, the first and
    # last on the requester's; the next starts with that last write. The same pattern also appears
    # shifted by half a round trip (starting with the responder's write); only the requester's phase
    # counts, and the other phase's matches are reported so that a mix-up would show.
    writes = [e for e in events if e[1] == "W"]
    if not writes:
        print("no socket writes in the window")
        return
    requester = writes[0][2]
    legs = {k: [] for k in ("broker, request", "client, responder", "broker, reply", "client, requester",
                            "noticed -> read")}
    i, found, other_phase = 0, 0, 0
    while i + 4 < len(events):
        a, b, c, d, e = events[i:i + 5]
        if (a[1], b[1], c[1], d[1], e[1]) == ("W", "R", "W", "R", "W") and a[2] == d[2] == e[2] \
                and b[2] == c[2] and a[2] != b[2] and a[2] != requester:
            other_phase += 1
            i += 1
            continue
        if (a[1], b[1], c[1], d[1], e[1]) == ("W", "R", "W", "R", "W") and a[2] == d[2] == e[2] \
                and b[2] == c[2] and a[2] == requester:
            legs["broker, request"].append(b[0] - a[0])
            legs["client, responder"].append(c[0] - b[0])
            legs["broker, reply"].append(d[0] - c[0])
            legs["client, requester"].append(e[0] - d[0])
            for r in (b, d):
                if r[3] is not None:
                    legs["noticed -> read"].append(r[0] - r[3])
            found += 1
            i += 4
        else:
            i += 1
    print(f"round trips split: {found} (requester's socket: fd {requester}; "
          f"{other_phase} matches of the pattern shifted by half a round trip, not counted)")
    for name, xs in legs.items():
        if not xs:
            print(f"{name:>20}: -")
            continue
        xs = sorted(x * 1e6 for x in xs)
        p = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]
        print(f"{name:>20}: p50 {statistics.median(xs):7.1f} µs  p10 {p(0.1):7.1f}  p90 {p(0.9):7.1f}  (n {len(xs)})")


if __name__ == "__main__":
    main()
