"""The clients' bearer token and TLS / mutual TLS, against a real gRPC server on loopback that
records what arrives (the ``authorization`` metadata, the client certificate's name)."""

from __future__ import annotations

import asyncio
from concurrent import futures
from pathlib import Path
from typing import Callable

import grpc
import pytest

from clients.cli import main
from clients.client import TOKEN_ENV, AsyncLinkNERClient, LinkNERClient, LinkNERConfigError, LinkNERError
from protos.linkner.v1 import linkner_pb2 as pb
from protos.linkner.v1 import linkner_pb2_grpc as pb_grpc
from tls_helpers import CLIENT_NAME, make_pki

TOKEN = "s3cret-Token_42"
Serve = Callable[..., int]


class Recorder(pb_grpc.LinkNERServicer):
    """Answers empty responses; records each call's ``authorization`` and client certificate name."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse, self.authorization, self.client_names = refuse, [], []

    def _record(self, context: grpc.ServicerContext) -> None:
        self.authorization.append(dict(context.invocation_metadata()).get("authorization"))
        self.client_names.append(context.auth_context().get("x509_common_name", [b""])[0].decode())
        if self.refuse:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    def Recognize(self, request, context):  # noqa: N802
        self._record(context)
        return pb.RecognizeResponse(request_id=request.request_id)

    def RecognizeBatch(self, request, context):  # noqa: N802
        self._record(context)
        return pb.RecognizeBatchResponse(results=[pb.RecognizeResponse() for _ in request.items])

    def Describe(self, request, context):  # noqa: N802
        self._record(context)
        return pb.DescribeResponse(model="recorder")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _server_credentials(pki: dict[str, Path], mutual: bool) -> grpc.ServerCredentials:
    pair = (pki["server_key"].read_bytes(), pki["server"].read_bytes())
    return grpc.ssl_server_credentials([pair], root_certificates=pki["ca"].read_bytes() if mutual else None,
                                       require_client_auth=mutual)


@pytest.fixture()
def serve(pki: dict[str, Path]) -> Serve:
    """``serve(servicer, tls=None | "tls" | "mtls")`` starts a server on loopback; returns its port."""
    servers = []

    def start(servicer: Recorder, tls: str | None = None) -> int:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        pb_grpc.add_LinkNERServicer_to_server(servicer, server)
        if tls is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            port = server.add_secure_port("127.0.0.1:0", _server_credentials(pki, mutual=tls == "mtls"))
        server.start()
        servers.append(server)
        return port

    yield start
    for server in servers:
        server.stop(0)


@pytest.fixture(autouse=True)
def no_token_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def _recognize(client_class: type, target: str, **kwargs) -> None:
    """One Recognize call with either client (quick: no retries)."""
    kwargs = {"retries": 0, "timeout_s": 10, **kwargs}
    if client_class is LinkNERClient:
        with LinkNERClient(target, **kwargs) as client:
            client.recognize("Paris")
        return

    async def go() -> None:
        async with AsyncLinkNERClient(target, **kwargs) as client:
            await client.recognize("Paris")

    asyncio.run(go())


CLIENTS = pytest.mark.parametrize("client_class", [LinkNERClient, AsyncLinkNERClient], ids=["sync", "async"])


# ---------------------------------------------------------------- the bearer token

@CLIENTS
def test_the_token_arrives_as_a_bearer_authorization(serve, client_class):
    servicer = Recorder()
    _recognize(client_class, f"127.0.0.1:{serve(servicer)}", token=TOKEN)
    assert servicer.authorization == [f"Bearer {TOKEN}"]


def test_every_call_carries_it(serve):
    servicer = Recorder()
    with LinkNERClient(f"127.0.0.1:{serve(servicer)}", token=TOKEN) as client:
        client.recognize("Paris")
        client.recognize_batch(["Paris", "Lima"])
        client.describe()
    assert servicer.authorization == [f"Bearer {TOKEN}"] * 3


@CLIENTS
def test_the_token_defaults_to_the_environment(serve, client_class, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, f"{TOKEN}\n")
    servicer = Recorder()
    target = f"127.0.0.1:{serve(servicer)}"
    _recognize(client_class, target)
    _recognize(client_class, target, token="")  # "" sends none, whatever the environment holds
    assert servicer.authorization == [f"Bearer {TOKEN}", None]


def test_no_token_no_authorization(serve):
    servicer = Recorder()
    _recognize(LinkNERClient, f"127.0.0.1:{serve(servicer)}")
    assert servicer.authorization == [None]


def test_the_token_is_never_shown(serve):
    target = f"127.0.0.1:{serve(Recorder(refuse=True))}"
    with LinkNERClient(target, token=TOKEN, retries=0) as client, pytest.raises(LinkNERError) as error:
        client.recognize("Paris")
    assert error.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert TOKEN not in str(error.value) and TOKEN not in repr(client) and "token=set" in repr(client)
    with pytest.raises(LinkNERConfigError) as bad:
        LinkNERClient(target, token=f"{TOKEN}\nX")
    assert TOKEN not in str(bad.value)


# ---------------------------------------------------------------- TLS and mutual TLS

@CLIENTS
@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_tls_with_the_ca_gets_an_answer(serve, pki, client_class, host):
    servicer = Recorder()
    _recognize(client_class, f"{host}:{serve(servicer, tls='tls')}", tls_ca=pki["ca"], token=TOKEN)
    assert servicer.authorization == [f"Bearer {TOKEN}"]


@CLIENTS
def test_a_plaintext_client_cannot_call_the_tls_port(serve, client_class):
    servicer = Recorder()
    with pytest.raises(LinkNERError) as error:
        _recognize(client_class, f"127.0.0.1:{serve(servicer, tls='tls')}", token=TOKEN)
    assert error.value.code == grpc.StatusCode.UNAVAILABLE and servicer.authorization == []


def test_the_server_name_is_checked_against_the_certificate(serve, pki):
    port = serve(Recorder(), tls="tls")
    _recognize(LinkNERClient, f"127.0.0.1:{port}", tls_ca=pki["ca"], tls_server_name="localhost")
    with pytest.raises(LinkNERError) as error:
        _recognize(LinkNERClient, f"127.0.0.1:{port}", tls_ca=pki["ca"], tls_server_name="elsewhere.example")
    assert error.value.code == grpc.StatusCode.UNAVAILABLE


@CLIENTS
def test_mutual_tls_presents_the_client_certificate(serve, pki, client_class):
    servicer = Recorder()
    target = f"localhost:{serve(servicer, tls='mtls')}"
    _recognize(client_class, target, tls_ca=pki["ca"], tls_cert=pki["client"], tls_key=pki["client_key"])
    assert servicer.client_names == [CLIENT_NAME]
    with pytest.raises(LinkNERError) as error:  # no client certificate: the handshake fails
        _recognize(client_class, target, tls_ca=pki["ca"])
    assert error.value.code == grpc.StatusCode.UNAVAILABLE and servicer.client_names == [CLIENT_NAME]


@pytest.mark.parametrize("kwargs, message", [
    ({"tls_cert": "client.pem"}, "needs both tls_cert and tls_key"),
    ({"tls_server_name": "localhost"}, "tls_server_name needs TLS"),
    ({"tls_ca": "absent.pem"}, "absent.pem: cannot read"),
])
def test_unusable_tls_arguments_are_refused(kwargs, message):
    with pytest.raises(LinkNERConfigError, match=message):
        LinkNERClient("127.0.0.1:1", **kwargs)


# ---------------------------------------------------------------- linkner-client

def test_the_cli_sends_the_token_file_over_mutual_tls(serve, pki, tmp_path, capsys):
    servicer = Recorder()
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    code = main(["--target", f"127.0.0.1:{serve(servicer, tls='mtls')}", "--token-file", str(token_file),
                 "--tls-ca", str(pki["ca"]), "--tls-cert", str(pki["client"]), "--tls-key", str(pki["client_key"]),
                 "--tls-server-name", "localhost", "describe"])
    output = capsys.readouterr()
    assert code == 0 and '"model": "recorder"' in output.out
    assert servicer.authorization == [f"Bearer {TOKEN}"] and servicer.client_names == [CLIENT_NAME]
    assert TOKEN not in output.out + output.err


def test_the_cli_takes_the_token_from_the_environment(serve, monkeypatch, capsys):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    servicer = Recorder()
    assert main(["--target", f"127.0.0.1:{serve(servicer)}", "recognize", "Paris"]) == 0
    assert servicer.authorization == [f"Bearer {TOKEN}"]


def test_the_cli_reports_a_refused_token_without_showing_it(serve, tmp_path, capsys):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    code = main(["--target", f"127.0.0.1:{serve(Recorder(refuse=True))}", "--token-file", str(token_file),
                 "describe"])
    output = capsys.readouterr()
    assert code == 1 and "UNAUTHENTICATED" in output.err and TOKEN not in output.out + output.err
