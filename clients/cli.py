"""``linkner-client``: call a running LinkNER service.

    linkner-client recognize "Peter Blackburn spoke in Brussels ." [--json]
    linkner-client file IN.txt|IN.jsonl --out OUT.jsonl [--concurrency 8]
    linkner-client describe      (model, labels, LLM, default policy, calibration status)

A ``.txt`` input holds one document per non-empty line; a ``.jsonl`` input one
``{"text": ...}`` or ``{"words": [...]}`` object per line.

Where the service asks for them: ``--token-file PATH`` (else $LINKNER_AUTH_TOKEN) sends a bearer
token, ``--tls-ca PEM`` speaks TLS, and ``--tls-cert PEM --tls-key PEM`` mutual TLS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from clients.client import (DEFAULT_TARGET, TOKEN_ENV, AsyncLinkNERClient, LinkNERClient,
                            LinkNERConfigError, LinkNERError)


class InputError(ValueError):
    pass


def read_token(path: Path) -> str:
    """The bearer token in a file (surrounding whitespace dropped); errors name the file, never the token."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the token file ({type(error).__name__})") from None
    if not token:
        raise InputError(f"{path}: the token file is empty")
    return token


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
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    parser.add_argument("--estimator")
    parser.add_argument("--policy")
    parser.add_argument("--threshold", type=float)
    security = parser.add_argument_group("authentication and TLS (where the service asks for them)")
    security.add_argument("--token-file", type=Path, help=f"file holding the bearer token (default: ${TOKEN_ENV})")
    security.add_argument("--tls-ca", type=Path, help="PEM of the CA that signed the server's certificate: TLS")
    security.add_argument("--tls-cert", type=Path, help="PEM of the client's certificate: mutual TLS (with --tls-key)")
    security.add_argument("--tls-key", type=Path, help="PEM of the client certificate's private key")
    security.add_argument("--tls-server-name", help="the name in the server's certificate, when not the target's host")
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


def _connection(args: argparse.Namespace) -> dict[str, Any]:
    """The clients' arguments: target, timeout, token (file, else the environment) and TLS."""
    return {"target": args.target, "timeout_s": args.timeout,
            "token": read_token(args.token_file) if args.token_file else None, "tls_ca": args.tls_ca,
            "tls_cert": args.tls_cert, "tls_key": args.tls_key, "tls_server_name": args.tls_server_name}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        connection = _connection(args)
        if args.command == "recognize":
            with LinkNERClient(**connection) as client:
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
            with LinkNERClient(**connection) as client:
                print(client.describe().model_dump_json(indent=2))
            return 0
        documents = read_documents(args.input)
        failures = asyncio.run(_run_file(args, documents, connection))
        print(f"wrote {len(documents)} results to {args.out} ({failures} failed)", file=sys.stderr)
        return 1 if failures else 0
    except (InputError, LinkNERConfigError) as error:
        print(f"linkner-client: error: {error}", file=sys.stderr)
        return 2
    except LinkNERError as error:
        print(f"linkner-client: the service answered {error}", file=sys.stderr)
        return 1


async def _run_file(args: argparse.Namespace, documents: list[dict[str, Any]], connection: dict[str, Any]) -> int:
    """Bounded-concurrency calls with a progress bar; results written in input order."""
    limit = asyncio.Semaphore(args.concurrency)
    results: list[dict[str, Any]] = [{} for _ in documents]
    failures = 0
    async with AsyncLinkNERClient(**connection) as client:
        with _progress_bar(len(documents)) as bar:
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


class _NoBar:
    """Stands in for tqdm's bar where tqdm is not installed (the client installed alone)."""

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def update(self, count: int) -> None:
        pass


def _progress_bar(total: int) -> Any:
    """tqdm's progress bar on stderr, or a silent stand-in without tqdm."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc="recognizing", unit="doc", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
