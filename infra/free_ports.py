"""Free TCP ports on 127.0.0.1 for services started later: `python infra/free_ports.py N` prints N.

Not the kernel's pick (binding port 0), which comes from the ephemeral range: a port picked that way
and released is handed to the next process that binds port 0 or opens a connection, and a Ray node
does both all the time (its workers, agents and connections), so a port chosen a few seconds before a
service starts is often taken by then when a Ray cluster runs next to it ("address already in use").
These come from below the ephemeral range (/proc/sys/net/ipv4/ip_local_port_range) and above Ray's
default worker ports (10002-19999), where only a process asking for that very port can take one.
Used by infra/local_stack.sh and the tests' servers.
"""

from __future__ import annotations

import random
import socket
import sys
from pathlib import Path

LOW = 20000  # above Ray's default worker ports (--min-worker-port 10002, --max-worker-port 19999)
RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_start() -> int:
    try:
        return int(RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _kernel_pick() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(
    n: int, exclude: set[int] | frozenset[int] = frozenset(), low: int = LOW, high: int | None = None
) -> list[int]:
    """`n` distinct ports in [low, high] (default: up to the ephemeral range), free now, none in
    `exclude`. Falls back to the kernel's pick when that range holds fewer than 1,000 ports (an
    unusual ip_local_port_range). Raises RuntimeError when it finds too few."""
    high = _ephemeral_start() - 1 if high is None else high
    candidates = [p for p in range(low, high + 1) if p not in exclude]
    if high - low + 1 < 1000:
        candidates = []
    random.SystemRandom().shuffle(candidates)  # two processes picking at once should not draw alike
    picked: list[int] = []
    for port in candidates if candidates else (_kernel_pick() for _ in range(50 * n)):
        if len(picked) == n:
            break
        if port not in picked and port not in exclude and _bindable(port):
            picked.append(port)
    if len(picked) < n:
        raise RuntimeError(f"found {len(picked)} of {n} free ports on 127.0.0.1 between {low} and {high}")
    return picked


if __name__ == "__main__":
    print(*free_ports(int(sys.argv[1]) if len(sys.argv) > 1 else 1))
