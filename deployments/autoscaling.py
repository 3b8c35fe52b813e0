"""Autoscaling the ingress on the calls its own gRPC server holds.

Ray Serve's default policy counts the requests Ray routed; the ingress answers callers on a gRPC
server of its own (:mod:`deployments.grpc_server`), so each replica reports its calls in flight
(``LinkNERIngress.record_autoscaling_stats``) and this policy scales on them the way the default
policy scales on Ray's count. Ray applies ``min_replicas`` / ``max_replicas``, the up- and
down-scaling delays and factors around it.
"""

from __future__ import annotations

from typing import Any

POLICY = "deployments.autoscaling:ongoing_calls_policy"
METRIC = "ongoing_calls"


def ongoing_calls_policy(ctx: Any) -> tuple[float, dict[str, Any]]:
    """Replicas wanted: the calls in flight over all replicas (averaged over Ray's look-back
    window) divided by ``target_ongoing_requests``."""
    if ctx.current_num_replicas == 0:
        return ctx.target_num_replicas, {}
    calls = sum((ctx.aggregated_metrics or {}).get(METRIC, {}).values())
    return calls / ctx.config.get_target_ongoing_requests(), {}
