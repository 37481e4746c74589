"""infra/free_ports.py: ports for servers started later, outside the kernel's ephemeral range."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.conftest import _load_free_ports, free_port

free_ports = _load_free_ports()


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range():
    ports = free_ports(20)
    assert len(set(ports)) == 20
    ephemeral_start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(20000 <= p < ephemeral_start for p in ports)
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_a_port_in_use_or_excluded_is_never_returned(monkeypatch):
    low, high = 21000, 21999  # 1,000 ports: all but the excluded and the one in use are asked for
    in_use = {low + 500}  # as if another process held it (a real bind is the test above)
    monkeypatch.setitem(free_ports.__globals__, "_bindable", lambda port: port not in in_use)
    excluded = set(range(low, low + 10))
    ports = free_ports(989, exclude=excluded, low=low, high=high)
    assert sorted(ports) == sorted(set(range(low, high + 1)) - excluded - in_use)
    with pytest.raises(RuntimeError, match="found 989 of 990 free ports"):
        free_ports(990, exclude=excluded, low=low, high=high)


def test_the_tests_never_get_the_same_port_twice():
    assert len({free_port() for _ in range(30)}) == 30
