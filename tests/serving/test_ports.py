"""Ports for test clusters come from outside the kernel's ephemeral range, where Ray's own
outgoing connections would take them before Serve binds them."""

from __future__ import annotations

import socket

from serve.ports import RAY_WORKER_PORTS, ephemeral_ports, free_ports


def test_a_block_of_free_ports_outside_the_ephemeral_and_ray_worker_ranges():
    ephemeral = ephemeral_ports()
    for _ in range(20):
        first = free_ports(17)
        block = range(first, first + 17)
        assert not any(port in ephemeral or port in RAY_WORKER_PORTS for port in block)
        for port in block:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))


def test_a_taken_port_is_never_handed_out(monkeypatch):
    import serve.ports as ports

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(ports, "FIRST_CANDIDATE", port)
        monkeypatch.setattr(ports, "LAST_CANDIDATE", port + 1)
        monkeypatch.setattr(ports, "ephemeral_ports", lambda: range(0))
        monkeypatch.setattr(ports, "RAY_WORKER_PORTS", range(0))
        assert ports.free_ports(1, attempts=50) == port + 1
