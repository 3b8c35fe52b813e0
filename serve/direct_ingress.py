"""Ray Serve's direct ingress: the ingress replica runs the gRPC server itself, so a request makes
one process hop less than through Ray's proxy (measured in ``benchmarks/serving.py``: the proxy's
2.5-2.9 ms of CPU per request disappear and the ingress spends about 1 ms less).

Direct ingress is switched on for the whole Ray instance by environment variables read when Ray's
processes start (``RAY_SERVE_ENABLE_DIRECT_INGRESS``), and each ingress replica takes a port from
``[RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT, ..._MAX_GRPC_PORT]``: with the range starting at the
configured gRPC port, the first ingress replica on a node answers on exactly that port. Ray's own
gRPC proxy keeps running, on the port after the range, for callers that name an application in
their metadata. The registered servicer functions (deadline forwarding, health) apply to both.
"""

from __future__ import annotations

import time

PORT_SPAN = 16
"""Ports reserved for ingress replicas (one per application replica on a node), from the
configured gRPC port on."""

DRAIN_S = 2.0
"""How long a stopping ingress replica keeps its gRPC server open before it drains and closes.
Ray's default (30 s) gives an external load balancer time to deregister the replica; callers that
dial the replicas themselves reconnect when the server closes, and 30 s made every shutdown,
redeploy and scale-down wait half a minute. Behind a load balancer, set its deregistration time."""


def direct_ingress_env(grpc_port: int, span: int = PORT_SPAN, drain_s: float = DRAIN_S) -> dict[str, str]:
    """Environment for Ray's processes (set before Ray starts) that makes ingress replicas serve
    gRPC themselves on ``grpc_port`` onwards, keeping it open ``drain_s`` seconds when they stop."""
    return {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(grpc_port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(grpc_port + span - 1),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(drain_s),
    }


def proxy_port(grpc_port: int, span: int = PORT_SPAN) -> int:
    """Where Ray's gRPC proxy listens when the ingress replicas own ``grpc_port`` onwards."""
    return grpc_port + span


def grpc_targets(app_name: str, timeout_s: float = 60.0) -> list[str]:
    """``host:port`` of every running ingress replica of ``app_name`` that serves gRPC directly
    (an empty list when direct ingress is off). Waits up to ``timeout_s`` for the ports to be
    allocated after a deployment."""
    import ray
    from ray.serve._private.common import RequestProtocol
    from ray.serve.context import _get_global_client

    controller = _get_global_client()._controller
    stop_at = time.monotonic() + timeout_s
    while True:
        groups = ray.get(controller.get_target_groups.remote(app_name))
        direct = [f"{target.ip}:{target.port}" for group in groups if group.protocol == RequestProtocol.GRPC
                  and group.app_name == app_name for target in group.targets]
        if direct or time.monotonic() > stop_at:
            return direct
        time.sleep(0.2)
