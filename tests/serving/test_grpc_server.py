"""The ingress's own gRPC server against real callers: the real ``LinkNERIngress`` with a tiny
model answering on its ``grpc.aio`` server in another process (``benchmarks/ingress_without_ray.py``),
called over real channels: bearer tokens, TLS and mutual TLS, the receive limit, reflection, health
and the admission limits."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from serve.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cret-token-for-tests"
TEXT = "John Smith visited Paris yesterday ."


def start_ingress(checkpoint: Path, server: dict, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """The ingress on its own server in a child process; returns it and ``127.0.0.1:port`` once it answers."""
    port = free_port()
    args = {"ner": {"checkpoint": str(checkpoint), "placement": "embedded", "threads": 2},  # one worker process
            "llm_pool": {"enabled": False}, "server": server}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "ingress_without_ray.py"), "--port", str(port),
         "--app-args", json.dumps(args)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    line = process.stdout.readline()
    if line.strip() != "READY":
        process.kill()
        raise AssertionError(f"the ingress did not start: {line}{process.stderr.read()[-3000:]}")
    return process, f"127.0.0.1:{port}"


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()


def recognize(channel: grpc.Channel, text: str = TEXT, metadata=(), timeout: float = 30):
    from protos.linkner.v1 import linkner_pb2 as pb
    from protos.linkner.v1 import linkner_pb2_grpc as pb_grpc

    return pb_grpc.LinkNERStub(channel).Recognize(pb.RecognizeRequest(text=text), metadata=metadata, timeout=timeout)


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value.code()


def health(channel: grpc.Channel, service: str = "") -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def reflected_services(channel: grpc.Channel, metadata=()) -> list[str]:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    answers = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                        metadata=metadata, timeout=10)
    return [service.name for answer in answers for service in answer.list_services_response.service]


@pytest.fixture(scope="module")
def token_server(tiny_checkpoint):
    process, target = start_ingress(tiny_checkpoint, {}, env={"LINKNER_AUTH_TOKEN": TOKEN})
    yield target
    stop(process)


def test_a_call_needs_the_bearer_token(token_server):
    with grpc.insecure_channel(token_server) as channel:
        assert code_of(lambda: recognize(channel)) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: recognize(channel, metadata=[("authorization", "Bearer wrong")])) \
            == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: recognize(channel, metadata=[("authorization", TOKEN)])) \
            == grpc.StatusCode.UNAUTHENTICATED  # the scheme is part of the value
        answer = recognize(channel, metadata=[("authorization", f"Bearer {TOKEN}")])
    assert ("John Smith", "PER") in {(e.text, e.label) for e in answer.entities}


def test_health_stays_open_and_reflection_sits_behind_the_token(token_server):
    from grpc_health.v1 import health_pb2

    with grpc.insecure_channel(token_server) as channel:
        assert health(channel) == health_pb2.HealthCheckResponse.SERVING
        assert health(channel, "linkner.v1.LinkNER") == health_pb2.HealthCheckResponse.SERVING
        assert code_of(lambda: reflected_services(channel)) == grpc.StatusCode.UNAUTHENTICATED
        services = reflected_services(channel, metadata=[("authorization", f"Bearer {TOKEN}")])
    assert {"linkner.v1.LinkNER", "grpc.health.v1.Health"} <= set(services)


def test_a_huge_message_is_refused_before_it_is_read(token_server):
    from protos.linkner.v1 import linkner_pb2 as pb
    from protos.linkner.v1 import linkner_pb2_grpc as pb_grpc

    auth = [("authorization", f"Bearer {TOKEN}")]
    huge = pb.RecognizeBatchRequest(items=[pb.RecognizeRequest(text="x" * (1 << 20))] * 64)  # 64 MiB
    options = [("grpc.max_send_message_length", -1)]
    with grpc.insecure_channel(token_server, options=options) as channel:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as error:
            pb_grpc.LinkNERStub(channel).RecognizeBatch(huge, metadata=auth, timeout=60)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.value.details()
        assert "larger than max" in error.value.details()
        assert time.monotonic() - started < 30
        assert recognize(channel, metadata=auth).entities  # the server goes on answering


def test_bad_input_is_invalid_argument_on_the_own_server(token_server):
    auth = [("authorization", f"Bearer {TOKEN}")]
    with grpc.insecure_channel(token_server) as channel:
        assert code_of(lambda: recognize(channel, text="   ", metadata=auth)) == grpc.StatusCode.INVALID_ARGUMENT
        assert code_of(lambda: recognize(channel, text="x" * 100_001, metadata=auth)) \
            == grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from tls_helpers import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


def secure_channel(target: str, pki: dict, client_certificate: bool) -> grpc.Channel:
    read = lambda key: Path(pki[key]).read_bytes()  # noqa: E731
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read("ca"), private_key=read("client_key") if client_certificate else None,
        certificate_chain=read("client") if client_certificate else None)
    return grpc.secure_channel(target, credentials)


@pytest.fixture(scope="module")
def tls_server(tiny_checkpoint, pki):
    """The ingress speaking TLS on its port, with a token required."""
    process, target = start_ingress(tiny_checkpoint, {"tls_cert": str(pki["server"]), "tls_key": str(pki["server_key"])},
                                    env={"LINKNER_AUTH_TOKEN": TOKEN})
    yield target
    stop(process)


def test_tls_answers_a_caller_with_the_ca_and_refuses_plaintext(tls_server, pki):
    bearer = (("authorization", f"Bearer {TOKEN}"),)
    with secure_channel(tls_server, pki, client_certificate=False) as channel:
        assert recognize(channel, metadata=bearer).entities
    with grpc.insecure_channel(tls_server) as channel:
        assert code_of(lambda: recognize(channel, metadata=bearer, timeout=5)) == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_refuses_a_caller_without_a_client_certificate(tiny_checkpoint, pki):
    process, target = start_ingress(tiny_checkpoint, {"tls_cert": str(pki["server"]), "tls_key": str(pki["server_key"]),
                                                      "tls_client_ca": str(pki["ca"])})
    try:
        with secure_channel(target, pki, client_certificate=True) as channel:
            assert recognize(channel).entities
        with secure_channel(target, pki, client_certificate=False) as channel:
            assert code_of(lambda: recognize(channel, timeout=5)) == grpc.StatusCode.UNAVAILABLE
    finally:
        stop(process)


def test_a_missing_certificate_is_a_config_error(tiny_checkpoint, tmp_path):
    from serve.app import ConfigError, validate_config

    args = {"ner": {"checkpoint": str(tiny_checkpoint)}, "llm_pool": {"enabled": False},
            "server": {"tls_cert": str(tmp_path / "none.pem"), "tls_key": str(tmp_path / "none-key.pem")}}
    with pytest.raises(ConfigError, match="server.tls_key=.*none-key.pem"):
        validate_config(args)
    with pytest.raises(ConfigError, match="tls_cert and server.tls_key go together"):
        validate_config({**args, "server": {"tls_cert": "cert.pem"}})
    empty = tmp_path / "token"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="auth_token_file=.* is empty"):
        validate_config({**args, "server": {"auth_token_file": str(empty)}})


def test_admission_refuses_beyond_ongoing_and_queued_calls():
    from deployments.grpc_server import Admission

    async def scenario() -> list[bool]:
        admission = Admission(ongoing=1, queued=1)
        release = asyncio.Event()

        async def hold() -> None:
            async with admission:
                await release.wait()

        first = asyncio.ensure_future(hold())
        await asyncio.sleep(0)
        full_with_one = admission.full()  # one running, no one waiting: a second may wait
        second = asyncio.ensure_future(hold())
        await asyncio.sleep(0)
        full_with_two = admission.full()  # one running, one waiting: a third is refused
        release.set()
        await asyncio.gather(first, second)
        return [full_with_one, full_with_two, admission.full()]

    assert asyncio.run(scenario()) == [False, True, False]


@pytest.fixture(scope="module")
def node() -> str:
    import shutil

    path = shutil.which("node")
    if path is None or not (ROOT / "tests" / "interop" / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.skip("node or tests/interop/node_modules is absent (scripts/setup.sh installs them with npm)")
    return path


def test_the_docs_node_example_gets_entities_over_tls_with_the_token(tls_server, pki, node):
    """docs/examples/recognize.js (grpc-js, a client we did not write the stack of) against the real
    ingress with TLS and a token: entities with the CA and the token; UNAUTHENTICATED without the
    token; no answer in plaintext."""
    example = [node, str(ROOT / "docs" / "examples" / "recognize.js"), tls_server]
    env = {**os.environ, "NODE_PATH": str(ROOT / "tests" / "interop" / "node_modules")}
    env.pop("LINKNER_AUTH_TOKEN", None)

    def run(*args: str, token: str | None = None) -> subprocess.CompletedProcess:
        extra = {"LINKNER_AUTH_TOKEN": token} if token else {}
        return subprocess.run([*example, *args], capture_output=True, text=True, timeout=60, env={**env, **extra})

    answered = run("--ca", str(pki["ca"]), TEXT, token=TOKEN)
    refused = run("--ca", str(pki["ca"]), TEXT)
    plaintext = run(TEXT, token=TOKEN)
    assert answered.returncode == 0, answered.stderr
    entities = [json.loads(line) for line in answered.stdout.splitlines()]
    assert ("John Smith", "PER", 0, 10) in {(e["text"], e["label"], e["char_start"], e["char_end"]) for e in entities}
    assert refused.returncode == 1 and refused.stderr.strip(), (refused.returncode, refused.stdout)
    assert json.loads(refused.stderr.strip().splitlines()[-1])["code"] == "UNAUTHENTICATED"
    assert plaintext.returncode == 1 and json.loads(plaintext.stderr.strip().splitlines()[-1])["code"] == "UNAVAILABLE"
