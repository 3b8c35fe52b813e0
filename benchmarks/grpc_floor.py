"""The floor of a Python gRPC service: a bare ``grpc.aio`` server of the same ``linkner.v1.LinkNER``
contract that does no work (an empty answer), under the serving benchmark's closed loop.

Its CPU per request is what any Python gRPC front end pays before Ray Serve's request handling,
routing and the model; set against ``benchmarks.serving``'s ingress CPU per request, it tells
how much of the stack is the server framework and how much is the rest.

    python -m benchmarks.grpc_floor [--seconds 8] [--concurrency 1,32]

Writes ``benchmarks/results/grpc_floor.json`` and ``.md``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sys
from typing import Any

from benchmarks.common import argument_parser, markdown_table, write_results
from benchmarks.load import closed_loop

TEXT = "EU rejects German call to boycott British lamb ."


def bare_server(port: int, ready: Any, use_uvloop: bool) -> None:
    """Serve ``LinkNER.Recognize`` on ``port`` with an empty answer until killed."""
    import grpc

    from protos.linkner.v1 import linkner_pb2 as pb
    from protos.linkner.v1 import linkner_pb2_grpc as pb_grpc

    class Bare(pb_grpc.LinkNERServicer):
        async def Recognize(self, request: Any, context: Any) -> Any:  # noqa: N802 (the RPC's name)
            return pb.RecognizeResponse(model="bare")

    async def main() -> None:
        server = grpc.aio.server()
        pb_grpc.add_LinkNERServicer_to_server(Bare(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        ready.set()
        await server.wait_for_termination()

    if use_uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(main())


def measure(use_uvloop: bool, levels: list[int], seconds: float) -> list[dict[str, Any]]:
    """One bare server (in a process of its own); a row per concurrency level."""
    from benchmarks.serving import cpu_seconds
    from serve.ports import free_port

    context = multiprocessing.get_context("spawn")
    port, ready = free_port(), context.Event()
    server = context.Process(target=bare_server, args=(port, ready, use_uvloop), daemon=True)
    server.start()
    ready.wait(60)
    parts = {"server": [server.pid], "client": [os.getpid()]}
    target, texts = f"127.0.0.1:{port}", [TEXT] * 50
    rows = []
    try:
        asyncio.run(closed_loop(target, texts, [9] * 50, 8, 2.0))  # warm up
        for concurrency in levels:
            before = cpu_seconds(parts)
            result = asyncio.run(closed_loop(target, texts, [9] * 50, concurrency, seconds))
            after = cpu_seconds(parts)
            answered = max(1, result["answered"])
            rows.append({"event_loop": "uvloop" if use_uvloop else "asyncio", "concurrency": concurrency,
                         "requests_per_s": result["requests_per_s"], "statuses": result["statuses"],
                         "server_cpu_ms_per_request": 1000 * (after["server"] - before["server"]) / answered,
                         "client_cpu_ms_per_request": 1000 * (after["client"] - before["client"]) / answered})
            print(rows[-1], flush=True)
    finally:
        server.kill()
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    return "\n".join([
        "Bare grpc.aio server of linkner.v1.LinkNER (empty answers), closed loop from a grpc.aio stub", "",
        markdown_table(["server event loop", "callers", "requests/s", "server CPU ms / request",
                        "load generator CPU ms / request"],
                       [(row["event_loop"], row["concurrency"], f"{row['requests_per_s']:.0f}",
                         f"{row['server_cpu_ms_per_request']:.2f}", f"{row['client_cpu_ms_per_request']:.2f}")
                        for row in rows])])


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(__doc__, out="grpc_floor.json")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", default="1,32")
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.concurrency.split(",")]
    rows = measure(False, levels, args.seconds) + measure(True, levels, args.seconds)
    write_results(args.out, {"rows": rows}, markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
