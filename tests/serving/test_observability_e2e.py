"""Observability end to end: a real Ray instance with its Prometheus endpoint on a chosen port, the
real gRPC proxy and channel, a tiny checkpoint, an OpenAI-compatible LLM peer, and real OTLP/gRPC
receivers. Counters and histogram counts scraped over HTTP move by exactly what was sent; one
request carrying a W3C traceparent yields every stage's span in the caller's trace with the right
parents; an application configured through the standard OTEL_* variables alone exports too."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections import Counter

import grpc
import pytest

from openai_peer import OpenAIPeer
from otlp_receiver import OTLPReceiver
from test_serving_e2e import address, app_args

from serve.ports import free_port

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")

TEXT = "John Smith visited Paris yesterday. Google said Mary Jones will move to Tokyo."
FAILING = "Zorro met Anna Berg in Lima ."  # the peer answers spans of this sentence with no option
ENV = {"OTEL_EXPORTER_OTLP_ENDPOINT": None, "OTEL_SERVICE_NAME": "linkner-env",
       "OTEL_TRACES_SAMPLER": "parentbased_always_on", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test"}


@pytest.fixture(scope="module")
def observed(tiny_checkpoint):
    """Ray (metrics exported every second) and Serve; app ``obs`` traces to one receiver through
    its config file (ratio 0: only callers' sampled traces are kept), app ``env`` to another
    through the OTEL_* variables of the process that builds it, and nothing else."""
    from ray import serve

    from serve.app import build_app

    metrics_port = free_port()
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=8,
             object_store_memory=256 * 1024 * 1024, log_to_driver=False, _metrics_export_port=metrics_port,
             _system_config={"metrics_report_interval_ms": 1000})
    serve.start(proxy_location="Disabled")  # each application answers on its own gRPC port
    peer = OpenAIPeer(answer=lambda body: "banana" if "Zorro" in json.dumps(body) else "person")
    peer.__enter__()
    by_file, by_env = OTLPReceiver(), OTLPReceiver()
    by_file.__enter__()
    by_env.__enter__()
    main = app_args(tiny_checkpoint, peer.base_url)
    main["telemetry"] = {"exporter": "otlp", "otlp_endpoint": by_file.endpoint, "sampler_ratio": 0.0,
                         "export_delay_ms": 200}
    serve.run(build_app(main), name="obs", route_prefix="/obs")
    env_app = app_args(tiny_checkpoint, peer.base_url)
    env_app["llm_pool"] = {"enabled": False}
    saved = {key: os.environ.get(key) for key in ENV}
    os.environ.update({key: value or by_env.endpoint for key, value in ENV.items()})
    try:
        built = build_app(env_app)  # the replicas get the resolved config; their own environment has no OTEL_*
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    serve.run(built, name="env", route_prefix="/env")
    yield {"peer": peer, "targets": {"obs": address(main), "env": address(env_app)}, "metrics": f"http://127.0.0.1:{metrics_port}/metrics",
           "by_file": by_file, "by_env": by_env}
    serve.shutdown()
    ray.shutdown()
    peer.__exit__(None, None, None)
    by_file.__exit__(None, None, None)
    by_env.__exit__(None, None, None)


def stub(channel):
    from protos.linkner.v1 import linkner_pb2_grpc as pb_grpc

    return pb_grpc.LinkNERStub(channel)


def scrape(url: str, app: str = "obs") -> dict[tuple[str, tuple], float]:
    """Every ``ray_linkner_*`` sample of application ``app``, summed over replicas and workers:
    ``(name, sorted labels without Ray's own) -> value``."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    ours = {"application", "deployment", "replica", "Component", "NodeAddress", "SessionName", "Version", "WorkerId",
            "JobId", "otel_scope_name", "otel_scope_schema_url", "otel_scope_version"}
    samples: dict[tuple[str, tuple], float] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("ray_linkner_") and sample.labels.get("application") == app:
                labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in ours))
                samples[(sample.name.removeprefix("ray_"), labels)] += sample.value
    return samples


def settled(url: str, timeout_s: float = 30.0) -> dict[tuple[str, tuple], float]:
    """A scrape once two in a row, past Ray's export interval, agree (everything sent is counted)."""
    deadline = time.monotonic() + timeout_s
    last = scrape(url)
    while time.monotonic() < deadline:
        time.sleep(2.5)
        now = scrape(url)
        if now == last:
            return now
        last = now
    return last


def delta(after, before, name: str, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_prometheus_counters_move_by_exactly_what_was_sent(observed):
    from protos.linkner.v1 import linkner_pb2 as pb

    metadata: list[tuple[str, str]] = []
    # a caller's deadline of 300 ms leaves the LLM step nothing (it ends 300 ms before the deadline):
    # an answer that had its local entities in time is degraded ``llm_timeout``; one that did not (a
    # loaded machine) ends DEADLINE_EXCEEDED. Sent until one timed out; every outcome is accounted below.
    tight = metadata + [("linkner-deadline-ms", "300")]
    with grpc.insecure_channel(observed["targets"]["obs"]) as channel:
        stub(channel).Recognize(pb.RecognizeRequest(text=TEXT), metadata=metadata, timeout=30)  # warm up
        before = settled(observed["metrics"])
        local, routed = pb.Options(policy="none", return_words=True), pb.Options(return_words=True)
        requests = [(TEXT, local), ("Anna Berg visited Lima .", local), (TEXT, local), (TEXT, routed),
                    ("Ali Khan left Reuters .", routed), (FAILING, routed)]
        replies = [stub(channel).Recognize(pb.RecognizeRequest(text=text, options=options), metadata=metadata,
                                           timeout=30) for text, options in requests]
        with pytest.raises(grpc.RpcError) as refused:
            stub(channel).Recognize(pb.RecognizeRequest(text=""), metadata=metadata, timeout=30)
        late, missed = [], []  # answers under the tight deadline, and the status codes of those that failed
        for _ in range(10):
            try:
                late.append(stub(channel).Recognize(pb.RecognizeRequest(text=TEXT, options=routed), metadata=tight,
                                                    timeout=30))
            except grpc.RpcError as error:
                missed.append(error.code())
            if late and late[-1].degraded_kind == "llm_timeout":
                break
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [reply.degraded for reply in replies] == [False] * 5 + [True] and replies[5].llm_spans > 0
    assert [reply.degraded_kind for reply in replies] == [""] * 5 + ["llm_error"]
    assert all(reply.llm_spans == 0 for reply in replies[:3]) and replies[3].llm_spans > 0
    timed_out = [reply for reply in late if reply.degraded_kind == "llm_timeout"]
    assert timed_out, f"no answer timed out its LLM step in 10 tries: {missed}"
    assert all(reply.llm_spans > 0 and "deadline" in reply.degraded_reason for reply in timed_out)
    assert all(reply.degraded_kind == "" for reply in late if reply not in timed_out)  # the LLM made 1 ms
    assert set(missed) <= {grpc.StatusCode.DEADLINE_EXCEEDED}, missed
    after = settled(observed["metrics"])
    answered = replies + late
    sent = len(answered)
    assert delta(after, before, "linkner_requests_total", method="Recognize", code="OK") == sent
    assert delta(after, before, "linkner_requests_total", method="Recognize", code="INVALID_ARGUMENT") == 1
    assert delta(after, before, "linkner_requests_total", method="Recognize", code="DEADLINE_EXCEEDED") == len(missed)
    assert delta(after, before, "linkner_documents_total") == sent
    for stage in ("recognize", "detect", "classify", "merge", "total"):
        assert delta(after, before, "linkner_stage_seconds_count", stage=stage) == sent, stage
        assert delta(after, before, "linkner_stage_seconds_bucket", stage=stage, le="+Inf") == sent, stage
    assert delta(after, before, "linkner_llm_share_count") == sent
    assert delta(after, before, "linkner_stage_seconds_total", stage="total") > 0
    assert delta(after, before, "linkner_llm_share_bucket", le="0.001") == 3  # the local-only requests
    entities = Counter((e.label, e.source) for reply in answered for e in reply.entities)
    for (label, source), count in entities.items():
        assert delta(after, before, "linkner_entities_total", label=label, source=source) == count
    assert {source for _, source in entities} == {"local", "llm"}
    llm_spans = sum(reply.llm_spans for reply in answered)
    assert delta(after, before, "linkner_llm_routed_spans_total") == llm_spans
    spans = sum(len(reply.entities) for reply in replies[:3]) + llm_spans  # threshold 0 routes every span
    assert delta(after, before, "linkner_spans_total") == spans

    def moved(name: str, key: str) -> dict[str, float]:
        """The series of ``name`` that moved, by the value of their one label ``key``."""
        return {dict(labels)[key]: delta(after, before, name, **dict(labels)) for series, labels in after
                if series == name and delta(after, before, name, **dict(labels))}

    # each degraded answer under its own reason, and no other reason moved (llm_overloaded, other)
    assert moved("linkner_degraded_total", "reason") == {"llm_error": 1, "llm_timeout": len(timed_out)}
    assert moved("linkner_llm_failures_total", "kind") == {
        "error": replies[5].llm_spans, "timeout": sum(reply.llm_spans for reply in timed_out)}
    sentences = sum(max(word.sentence for word in reply.words) + 1 for reply in answered)
    # a request that missed its deadline may still have had its sentences through the model (2 each)
    assert sentences <= delta(after, before, "linkner_ner_sentences_total") <= sentences + 2 * len(missed)
    batches = delta(after, before, "linkner_ner_batch_sentences_count")
    assert 1 <= batches <= sent + len(missed) and delta(after, before, "linkner_ner_batch_requests_count") == batches
    assert delta(after, before, "linkner_ner_queue_seconds_count") >= batches


STAGES = {"linkner.request", "linkner.link", "linkner.recognize", "linkner.ner.request", "linkner.ner.batch",
          "linkner.detect", "linkner.classify", "linkner.llm.classify", "linkner.merge"}


def test_a_callers_trace_holds_every_stage_with_its_parents(observed):
    from protos.linkner.v1 import linkner_pb2 as pb

    trace_id, caller = "5bf92f3577b34da6a3ce929d0e0e4737", "10f067aa0ba902b7"
    seen_by_llm = len(observed["peer"].headers)
    with grpc.insecure_channel(observed["targets"]["obs"]) as channel:
        unsampled = stub(channel).Recognize(pb.RecognizeRequest(text=TEXT), timeout=30)
        reply = stub(channel).Recognize(
            pb.RecognizeRequest(text=TEXT), timeout=30,
            metadata=[("traceparent", f"00-{trace_id}-{caller}-01"),
                      ("tracestate", "vendor=1"), ("baggage", "tenant=acme")])
    assert reply.trace_id == trace_id and reply.llm_spans > 0
    # the caller's baggage and trace reach the LLM server, through the ingress and the LLM pool
    llm_calls = [{k.lower(): v for k, v in h.items()} for h in observed["peer"].headers[seen_by_llm:]]
    ours = [h for h in llm_calls if trace_id in h.get("traceparent", "")]
    assert ours and all(h.get("baggage") == "tenant=acme" for h in ours), llm_calls
    rpc_name = "linkner.v1.LinkNER/Recognize"
    spans = observed["by_file"].wait_for(trace_id, STAGES | {rpc_name})
    by_name = {span["name"]: span for span in spans}
    assert STAGES | {rpc_name} <= set(by_name), sorted(by_name)
    rpc = by_name[rpc_name]
    assert rpc["parent_id"] == caller and rpc["kind"] == 2  # SPAN_KIND_SERVER
    assert {key: rpc["attributes"][key] for key in ("rpc.system", "rpc.service", "rpc.method",
                                                    "rpc.grpc.status_code")} == {
        "rpc.system": "grpc", "rpc.service": "linkner.v1.LinkNER", "rpc.method": "Recognize",
        "rpc.grpc.status_code": 0}
    parents = {"linkner.request": rpc_name, "linkner.link": "linkner.request", "linkner.recognize": "linkner.link",
               "linkner.detect": "linkner.link", "linkner.classify": "linkner.link", "linkner.merge": "linkner.link",
               "linkner.ner.request": "linkner.recognize", "linkner.ner.batch": "linkner.ner.request",
               "linkner.llm.classify": "linkner.classify"}
    for child, parent in parents.items():
        assert by_name[child]["parent_id"] == by_name[parent]["span_id"], (child, parent)
    llm = by_name["linkner.llm.classify"]
    assert llm["kind"] == 3  # SPAN_KIND_CLIENT
    assert (llm["attributes"]["gen_ai.system"], llm["attributes"]["gen_ai.request.model"]) == ("openai", "peer")
    assert llm["attributes"]["gen_ai.usage.input_tokens"] == 100 * reply.llm_spans  # the peer's usage
    assert llm["attributes"]["gen_ai.usage.output_tokens"] == 2 * reply.llm_spans
    assert by_name["linkner.request"]["attributes"]["linkner.routed"] == reply.llm_spans
    assert "linkner.queue_wait_ms" in by_name["linkner.ner.batch"]["attributes"]
    # ratio 0 in the file: a request without a sampled caller leaves no trace (sent first, so its
    # spans would have been exported before these)
    assert unsampled.trace_id and observed["by_file"].trace(unsampled.trace_id) == []


def test_standard_environment_variables_alone_configure_tracing(observed):
    from protos.linkner.v1 import linkner_pb2 as pb

    trace_id = "6bf92f3577b34da6a3ce929d0e0e4738"
    with grpc.insecure_channel(observed["targets"]["env"]) as channel:
        reply = stub(channel).Recognize(pb.RecognizeRequest(text=TEXT), timeout=30, metadata=[
            ("traceparent", f"00-{trace_id}-20f067aa0ba902b7-01")])
    assert reply.trace_id == trace_id
    names = {"linkner.v1.LinkNER/Recognize", "linkner.request", "linkner.recognize", "linkner.ner.batch"}
    spans = observed["by_env"].wait_for(trace_id, names)
    assert names <= {span["name"] for span in spans}
    resource = spans[0]["resource"]
    assert resource["service.name"] == "linkner-env" and resource["deployment.environment"] == "test"
    assert observed["by_file"].trace(trace_id) == []
