"""The serving benchmark's bookkeeping: which part of the stack a process belongs to."""

from __future__ import annotations

import serving


def test_a_replica_counts_for_its_deployment_whatever_method_its_title_shows() -> None:
    assert serving.deployment_of("ray::ServeReplica:bench:ingress") == "ingress"
    # Ray appends the running method to the title: the ingress answering a health check is still the ingress
    assert serving.deployment_of("ray::ServeReplica:bench:ingress.check_health") == "ingress"
    assert serving.deployment_of("ray::ServeReplica:bench:ner.handle_batch extra") == "ner"
