"""The LinkNER ingress without Ray: the same ``LinkNERIngress`` class, its embedded model in the
same worker processes, answering on its own ``grpc.aio`` server (uvloop) in an ordinary process.

``python -m benchmarks.serving --compare-without-ray`` runs it beside the served rows, under the same
closed-loop load: what is left between served and in-process throughput once Ray Serve is out of
the path is the per-request work of gRPC and the ingress itself. Not a way to serve: no replicas,
queues, autoscaling, draining, health or Prometheus metrics.

    python -m benchmarks.ingress_without_ray --port PORT --app-args JSON [--count-passes]

With ``--count-passes`` it also counts the forward passes its model runs and their sentences, and
prints ``PASSES <passes> <sentences>`` (totals so far) on stdout at each SIGUSR1
(``benchmarks.pass_sizes`` reads how many sentences a pass carried at each load).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from benchmarks.common import argument_parser

READY = "READY"  # printed on stdout once the server answers
PASSES = "PASSES"  # with --count-passes: "PASSES <passes> <sentences>" at each SIGUSR1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__)
    parser.add_argument("--port", type=int, required=True, help="loopback port to answer gRPC on")
    parser.add_argument("--app-args", required=True, help="the application's args as JSON (serve_config's `args`)")
    parser.add_argument("--count-passes", action="store_true", help="count passes and sentences (SIGUSR1 prints them)")
    return parser.parse_args(argv)


class PassCounter:
    """The embedded model's NER metrics, also counted here: forward passes and their sentences."""

    def __init__(self, metrics: Any) -> None:
        self.metrics, self.passes, self.sentences = metrics, 0, 0

    def batch(self, requests: int, sentences: int, waits_s: list[float]) -> None:
        self.passes += 1
        self.sentences += sentences
        self.metrics.batch(requests, sentences, waits_s)

    def report(self) -> None:
        print(f"{PASSES} {self.passes} {self.sentences}", flush=True)


async def serve_forever(port: int, app_args: dict[str, Any], count_passes: bool = False) -> None:
    """Build the ingress from ``app_args`` (the embedded model only: no NER or LLM pool) and let it
    answer ``linkner.v1.LinkNER`` on its own gRPC server (``server`` settings, on ``port``) until
    the process is stopped."""
    from deployments.ingress import LinkNERIngress
    from serve.app import validate_config

    config = validate_config({**app_args, "server": {**app_args.get("server", {}), "port": port}})
    if config.ner.placement != "embedded" or config.llm_pool.enabled:
        raise SystemExit("without Ray only the embedded model is measured: ner.placement embedded, llm_pool off")
    ingress = await LinkNERIngress.func_or_class.create(None, None, config)  # the class behind the deployment
    if count_passes:
        import asyncio
        import signal

        forward = ingress.ner.forward  # the EmbeddedNER's passes, each reported to its metrics
        counter = forward.metrics = PassCounter(forward.metrics)
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, counter.report)
    print(READY, flush=True)
    await ingress.grpc_server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import uvloop  # what Ray runs a replica's event loop on

    uvloop.run(serve_forever(args.port, json.loads(args.app_args), args.count_passes))
    return 0


if __name__ == "__main__":  # the embedded model's worker processes are spawned: they import this module
    sys.exit(main())
