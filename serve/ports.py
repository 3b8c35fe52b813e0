"""Free listening ports for test and benchmark clusters.

A port the kernel hands out for ``bind(0)`` lies in the ephemeral range, which every outgoing
connection also draws from: Ray opens hundreds of them while it starts, so such a port is often
taken again before Serve's proxy binds it ("Failed to bind to address"). Ports are therefore drawn
from below the ephemeral range and above Ray's worker ports, and a whole block is checked at once
for the direct-ingress range.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANDOM = random.SystemRandom()

RAY_WORKER_PORTS = range(10002, 20000)
"""Ray's default ``min_worker_port``..``max_worker_port``: its workers listen there."""

FIRST_CANDIDATE, LAST_CANDIDATE = 20000, 65535


def ephemeral_ports() -> range:
    """The kernel's range for outgoing connections (Linux's default when it cannot be read)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)


def _bindable(port: int, host: str) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(count: int = 1, host: str = "127.0.0.1", attempts: int = 500) -> int:
    """First port of ``count`` consecutive free ports outside the ephemeral and Ray worker ranges."""
    ephemeral = ephemeral_ports()
    candidates = [port for port in range(FIRST_CANDIDATE, LAST_CANDIDATE - count + 2)
                  if port not in ephemeral and port + count - 1 not in ephemeral
                  and port not in RAY_WORKER_PORTS]
    if not candidates:
        raise RuntimeError(f"no ports outside the ephemeral range {ephemeral.start}-{ephemeral.stop - 1}")
    for _ in range(attempts):
        first = _RANDOM.choice(candidates)  # not the global generator: training seeds it
        if all(_bindable(port, host) for port in range(first, first + count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports found on {host}")


def free_port(host: str = "127.0.0.1") -> int:
    """One free port outside the ephemeral and Ray worker ranges."""
    return free_ports(1, host)
