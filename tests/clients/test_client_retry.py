"""Client retries against a real gRPC server on loopback that is UNAVAILABLE at first."""

import asyncio
import time
from concurrent import futures

import grpc
import pytest

from clients.client import AsyncLinkNERClient, LinkNERClient, LinkNERError
from openai_peer import closed_port
from protos.linkner.v1 import linkner_pb2 as pb
from protos.linkner.v1 import linkner_pb2_grpc as pb_grpc


class Flaky(pb_grpc.LinkNERServicer):
    def __init__(self, failures: int, code=grpc.StatusCode.UNAVAILABLE) -> None:
        self.failures, self.code, self.calls, self.metadata, self.remaining = failures, code, 0, [], []

    def Recognize(self, request, context):  # noqa: N802
        self.calls += 1
        self.metadata.append(dict(context.invocation_metadata()))
        self.remaining.append(context.time_remaining())
        if self.calls <= self.failures:
            context.abort(self.code, "not yet")
        return pb.RecognizeResponse(request_id=request.request_id,
                                    entities=[pb.Entity(text="Paris", label="LOC", source="local")])


@pytest.fixture()
def server():
    servers = []

    def start(servicer):
        grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_LinkNERServicer_to_server(servicer, grpc_server)
        port = grpc_server.add_insecure_port("127.0.0.1:0")
        grpc_server.start()
        servers.append(grpc_server)
        return f"127.0.0.1:{port}"

    yield start
    for grpc_server in servers:
        grpc_server.stop(0)


def test_sync_client_retries_unavailable_and_sends_metadata(server):
    servicer = Flaky(failures=2)
    with LinkNERClient(server(servicer), retries=3, backoff_s=0.01, token="t0k") as client:
        result = client.recognize("Paris", request_id="r", timeout_s=5)
    assert servicer.calls == 3 and result.entities[0].label == "LOC" and result.request_id == "r"
    assert servicer.metadata[0]["authorization"] == "Bearer t0k"
    assert 0 < servicer.remaining[0] <= 5  # the call's own gRPC deadline
    assert not {"application", "linkner-deadline-ms"} & set(servicer.metadata[0])  # nothing Ray-specific


def test_async_client_retries_too(server):
    servicer = Flaky(failures=1)

    async def go():
        async with AsyncLinkNERClient(server(servicer), retries=2, backoff_s=0.01) as client:
            return await client.recognize("Paris")

    assert asyncio.run(go()).entities[0].text == "Paris" and servicer.calls == 2


def test_other_errors_are_not_retried(server):
    servicer = Flaky(failures=5, code=grpc.StatusCode.INVALID_ARGUMENT)
    with LinkNERClient(server(servicer), retries=3, backoff_s=0.01) as client, pytest.raises(LinkNERError) as error:
        client.recognize("Paris")
    assert servicer.calls == 1 and error.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_gives_up_after_the_retries(server):
    started = time.monotonic()
    with LinkNERClient(f"127.0.0.1:{closed_port()}", retries=2, backoff_s=0.05) as client, \
            pytest.raises(LinkNERError) as error:
        client.recognize("Paris", timeout_s=5)
    assert error.value.code == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started >= 0.075  # backoff 0.05 + 0.1, jittered down to half at most


def test_a_full_queue_is_retried_after_a_jittered_backoff(server):
    servicer = Flaky(failures=2, code=grpc.StatusCode.RESOURCE_EXHAUSTED)
    with LinkNERClient(server(servicer), retries=3, backoff_s=0.01) as client:
        assert client.recognize("Paris", timeout_s=5).entities[0].label == "LOC"
    assert servicer.calls == 3


def test_the_retry_budget_stops_retrying_a_failing_server(server):
    """gRPC's throttling: 10 tokens, a failure costs 1, retries only while more than 5 are left."""
    servicer = Flaky(failures=1000)
    with LinkNERClient(server(servicer), retries=3, backoff_s=0.001) as client:
        for _ in range(2):
            with pytest.raises(LinkNERError):
                client.recognize("Paris", timeout_s=5)
    assert servicer.calls == 4 + 1  # first call: 1 + 3 retries (tokens 10 -> 6); second: no retry (6 -> 5)


def test_no_retry_is_started_that_would_end_past_the_deadline(server):
    servicer = Flaky(failures=1)
    with LinkNERClient(server(servicer), retries=3, backoff_s=5.0) as client, pytest.raises(LinkNERError):
        client.recognize("Paris", timeout_s=1.0)  # the first backoff (2.5-5 s) would outlive the deadline
    assert servicer.calls == 1
