"""Serving benchmark: requests/s and latency of the real service over gRPC (local model only, so
the numbers are the NER path), with and without dynamic batching. Starts its own Ray on
loopback. Prints a table; writes JSON.

    python benchmarks/serving.py [--requests 400] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray is imported
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "artifacts" / "models" / "default")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "conll2003")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the NER replica")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serving.json")
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def load(target: str, application: str, texts: list[str], concurrency: int) -> dict:
    from clients.client import AsyncLinkNERClient

    latencies: list[float] = []
    limit = asyncio.Semaphore(concurrency)
    async with AsyncLinkNERClient(target, application, timeout_s=120) as client:
        await client.recognize(texts[0])  # warm-up
        started = time.perf_counter()

        async def one(text: str) -> None:
            async with limit:
                begin = time.perf_counter()
                await client.recognize(text, policy="none")
                latencies.append(time.perf_counter() - begin)

        await asyncio.gather(*[one(text) for text in texts])
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {"requests": len(texts), "seconds": elapsed, "requests_per_s": len(texts) / elapsed,
            "p50_ms": 1000 * statistics.median(latencies), "p95_ms": 1000 * latencies[int(0.95 * len(latencies)) - 1]}


def main() -> int:
    args = parse_args()
    import ray
    from ray import serve
    from ray.serve.config import gRPCOptions

    from linkner.data.readers import read_dataset
    from serve.app import GRPC_SERVICER, build_app

    texts = [" ".join(s.tokens) for s in read_dataset(args.data_dir / "test.txt") if len(s) > 3][: args.requests]
    port = free_port()
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
             object_store_memory=256 * 1024 * 1024)
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()},
                grpc_options=gRPCOptions(port=port, grpc_servicer_functions=[GRPC_SERVICER]))
    results = []
    try:
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            app_args = {"ner": {"checkpoint": str(args.model), "threads": args.threads, "max_batch_size": batch,
                                "max_ongoing_requests": max(2 * batch, 2), "batch_wait_timeout_s": 0.01},
                        "llm_pool": {"enabled": False}}
            serve.run(build_app(app_args), name="bench", route_prefix="/bench")
            result = {"max_batch_size": batch, "concurrency": args.concurrency,
                      **asyncio.run(load(f"127.0.0.1:{port}", "bench", texts, args.concurrency))}
            results.append(result)
            print(result, flush=True)
            serve.delete("bench")
    finally:
        serve.shutdown()
        ray.shutdown()
    lines = [f"{len(texts)} CoNLL test sentences over gRPC, {args.concurrency} concurrent, local model only "
             f"(NER replica: {args.threads} torch threads)", "",
             "| max_batch_size | requests/s | p50 ms | p95 ms |", "|---|---|---|---|"]
    lines += [f"| {r['max_batch_size']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} |"
              for r in results]
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
