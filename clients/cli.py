"""``linkner-client``: call a running LinkNER service.

    linkner-client recognize "Peter Blackburn spoke in Brussels ." [--json]
    linkner-client file IN.txt|IN.jsonl --out OUT.jsonl [--concurrency 8]
    linkner-client describe      (model, labels, LLM, default policy, calibration status)

A ``.txt`` input holds one document per non-empty line; a ``.jsonl`` input one
``{"text": ...}`` or ``{"words": [...]}`` object per line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from clients.client import DEFAULT_APPLICATION, DEFAULT_TARGET, AsyncLinkNERClient, LinkNERClient, LinkNERError


class InputError(ValueError):
    pass


def read_documents(path: Path) -> list[dict[str, Any]]:
    """Documents of an input file; a bad line raises InputError naming the file and line."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    documents = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as error:
                raise InputError(f"{path}:{number}: not valid UTF-8 ({error.reason})") from None
            if not line:
                continue
            if path.suffix.lower() != ".jsonl":
                documents.append({"text": line, "line": number})
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{path}:{number}: invalid JSON ({error.msg})") from None
            if not isinstance(record, dict) or not (isinstance(record.get("text"), str)
                                                   or isinstance(record.get("words"), list)):
                raise InputError(f"{path}:{number}: expected an object with \"text\" (string) or \"words\" (list)")
            documents.append({"text": record.get("text"), "words": record.get("words"), "line": number})
    return documents


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linkner-client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=DEFAULT_TARGET, help="host:port of the gRPC service, or several "
                        "ingress replicas to spread calls over: ipv4:HOST:PORT,HOST:PORT")
    parser.add_argument("--application", default=DEFAULT_APPLICATION, help="Ray Serve application name")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    parser.add_argument("--estimator")
    parser.add_argument("--policy")
    parser.add_argument("--threshold", type=float)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("recognize", help="entities of one text")
    one.add_argument("text")
    one.add_argument("--json", action="store_true", help="print the full result as JSON")
    many = commands.add_parser("file", help="entities of every document in a file, as JSON lines")
    many.add_argument("input", type=Path)
    many.add_argument("--out", type=Path, required=True)
    many.add_argument("--concurrency", type=int, default=8)
    commands.add_parser("describe", help="the model, labels, LLM, default policy and calibration status, as JSON")
    return parser


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {"estimator": args.estimator, "policy": args.policy, "threshold": args.threshold}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "recognize":
            with LinkNERClient(args.target, args.application, args.timeout) as client:
                result = client.recognize(args.text, **_options(args))
            if args.json:
                print(result.model_dump_json(indent=2))
            else:
                for entity in result.entities:
                    print(f"{entity.text}\t{entity.label}\t{entity.source}\tuncertainty={entity.uncertainty:.3f}")
                if result.degraded:
                    print(f"(degraded: {result.degraded_reason})", file=sys.stderr)
            return 0
        if args.command == "describe":
            with LinkNERClient(args.target, args.application, args.timeout) as client:
                print(client.describe().model_dump_json(indent=2))
            return 0
        documents = read_documents(args.input)
        failures = asyncio.run(_run_file(args, documents))
        print(f"wrote {len(documents)} results to {args.out} ({failures} failed)", file=sys.stderr)
        return 1 if failures else 0
    except InputError as error:
        print(f"linkner-client: error: {error}", file=sys.stderr)
        return 2
    except LinkNERError as error:
        print(f"linkner-client: the service answered {error}", file=sys.stderr)
        return 1


async def _run_file(args: argparse.Namespace, documents: list[dict[str, Any]]) -> int:
    """Bounded-concurrency calls with a progress bar; results written in input order."""
    from tqdm.auto import tqdm

    limit = asyncio.Semaphore(args.concurrency)
    results: list[dict[str, Any]] = [{} for _ in documents]
    failures = 0
    async with AsyncLinkNERClient(args.target, args.application, args.timeout) as client:
        with tqdm(total=len(documents), desc="recognizing", unit="doc", file=sys.stderr) as bar:
            async def one(index: int, document: dict[str, Any]) -> None:
                nonlocal failures
                async with limit:
                    try:
                        result = await client.recognize(document.get("text"), words=document.get("words"),
                                                        request_id=str(document["line"]), **_options(args))
                        results[index] = {"line": document["line"], **result.model_dump()}
                    except LinkNERError as error:
                        failures += 1
                        results[index] = {"line": document["line"], "error": str(error)}
                bar.update(1)

            await asyncio.gather(*[one(i, d) for i, d in enumerate(documents)])
    with args.out.open("w", encoding="utf-8") as handle:
        for record in results:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return failures


if __name__ == "__main__":
    sys.exit(main())
