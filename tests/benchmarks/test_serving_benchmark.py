"""The serving benchmark's bookkeeping (which part of the stack a process belongs to) and its ingress without Ray."""

from __future__ import annotations

import pytest

from benchmarks import serving


def test_a_replica_counts_for_its_deployment_whatever_method_its_title_shows() -> None:
    assert serving.deployment_of("ray::ServeReplica:bench:ingress") == "ingress"
    # Ray appends the running method to the title: the ingress answering a health check is still the ingress
    assert serving.deployment_of("ray::ServeReplica:bench:ingress.check_health") == "ingress"
    assert serving.deployment_of("ray::ServeReplica:bench:ner.handle_batch extra") == "ner"


@pytest.mark.slow  # about 20 s on 2 cores: a benchmark run against a server process: not in the quick subset
def test_the_ingress_without_ray_answers_over_grpc_and_counts_as_the_ingress(tiny_checkpoint) -> None:
    """``--compare-without-ray``'s server: the ingress class in a plain process answers a real gRPC
    call with the embedded model's entities, and the benchmark counts it and its worker processes as
    the ingress (not as Ray's daemons)."""
    import argparse

    import grpc
    import psutil

    from protos.linkner.v1 import linkner_pb2 as pb
    from protos.linkner.v1 import linkner_pb2_grpc as pb_grpc

    from deployments.ner import embedded_passes
    from linkner.model.predictor import SpanPredictor
    from linkner.model.runtime import DEFAULT_RUNTIME
    from linkner.service.config import NERConfig

    args = argparse.Namespace(model=tiny_checkpoint, threads=1, ner_placement="embedded", llm=None)

    text = "John Smith lives in Berlin ."
    # what the checkpoint itself finds in these words, in process (its entities are the answer's)
    [found] = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu", runtime=DEFAULT_RUNTIME).predict(
        [text.split()])
    expected = [(text.split()[e.start:e.end], e.label, e.start, e.end) for e in found]
    assert expected, "the tiny checkpoint finds no entity here: the answer would prove nothing"
    with serving.ingress_without_ray(serving.application_args(args, False)) as (server, address):
        parts = serving.stack_processes()
        ours = {server.pid} | {child.pid for child in psutil.Process(server.pid).children(recursive=True)}
        # the server and its worker processes (a pass per core), none elsewhere
        assert len(ours) >= 1 + embedded_passes(NERConfig(threads=1)) and ours <= set(parts["ingress"])
        with grpc.insecure_channel(address) as channel:
            reply = pb_grpc.LinkNERStub(channel).Recognize(
                pb.RecognizeRequest(text=text, options=pb.Options(policy="none")), timeout=60)
            assert reply.model and not reply.degraded and reply.llm_spans == 0
            assert [(e.text.split(), e.label, e.word_start, e.word_end) for e in reply.entities] == expected
            assert all(text[e.char_start:e.char_end] == e.text and e.source == "local" and e.sentence == 0
                       for e in reply.entities)
            assert reply.timings.total_ms >= reply.timings.recognize_ms > 0
            with pytest.raises(grpc.RpcError) as refused:
                pb_grpc.LinkNERStub(channel).Recognize(pb.RecognizeRequest(text=""), timeout=60)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_every_configuration_measured_is_a_valid_application() -> None:
    """The app args of each placement (and of the LLM path) pass the application's own validation:
    no setting the config no longer has (it forbids unknown keys)."""
    from linkner.service.config import AppConfig

    for placement in ("embedded", "pool"):
        args = serving.parse_args(["--model", "m", "--threads", "2", "--ner-placement", placement])
        for llm in (False, True):
            config = AppConfig.model_validate(serving.application_args(args, llm))
            assert (config.ner.placement, config.ner.threads, config.llm_pool.enabled) == (placement, 2, llm)
    assert serving.parse_args([]).ner_placement == serving.shipped_ner_settings()["placement"]


def test_the_local_path_is_judged_against_as_many_passes_in_process_as_the_ingress_runs() -> None:
    """Embedded, the ingress runs one pass per core in worker processes: the in-process rows run
    that many at once, and the served 32-caller figure is compared with them (and with one pass)."""
    from deployments.ner import embedded_passes
    from linkner.service.config import NERConfig

    embedded = serving.parse_args(["--threads", "1", "--ner-placement", "embedded"])
    assert serving.forward_passes(embedded) == embedded_passes(NERConfig(threads=1))
    assert serving.forward_passes(serving.parse_args(["--ner-placement", "pool"])) == 1

    def served(path: str, sentences_per_s: float) -> dict:
        return {"path": path, "concurrency": 32, "sentences_per_s": sentences_per_s, "requests_per_s": sentences_per_s,
                "cpu_ms_per_request_total": 8.0}

    report = {"served": [served("local", 220.0), served("local, NER pool", 110.0)],
              "inprocess": [{"name": "batched", "sentences_per_s": 200.0, "ms_per_sentence": 5.0},
                            {"name": "batched-processes", "sentences_per_s": 330.0, "ms_per_sentence": 3.0}]}
    serving.summarise(report)
    assert report["served_vs_inprocess_c32"] == 220.0 / 330.0
    assert report["served_vs_inprocess_one_pass_c32"] == 220.0 / 200.0
    assert report["other_placement_vs_local_c32"] == 110.0 / 220.0
    assert report["stack_cpu_ms_per_request"] == 8.0 - 5.0


def test_the_llm_path_serves_the_shipped_llm_pool_and_llm_queue_overrides_its_limits(tmp_path) -> None:
    from linkner.service.config import AppConfig

    shipped = serving.shipped_application()["args"]["llm_pool"]
    pool = serving.application_args(serving.parse_args(["--llm", str(tmp_path)]), True)["llm_pool"]
    assert pool["llm"] == {**shipped["llm"], "model": str(tmp_path)} and pool["enabled"]
    # the shipped queue limits (serve_config.yaml's, or the config's defaults where it names none)
    assert pool.get("deployment") == shipped.get("deployment")
    app_args = serving.application_args(serving.parse_args(["--llm", str(tmp_path), "--llm-queue", "16,-1"]), True)
    deployment = AppConfig.model_validate(app_args).llm_pool.deployment
    assert (deployment["max_ongoing_requests"], deployment["max_queued_requests"]) == (16, -1)
    with pytest.raises(SystemExit):
        serving.parse_args(["--llm-queue", "4"])
