"""The serving benchmark's bookkeeping (which part of the stack a process belongs to) and its ingress without Ray."""

from __future__ import annotations

import pytest

from benchmarks import serving


def test_a_replica_counts_for_its_deployment_whatever_method_its_title_shows() -> None:
    assert serving.deployment_of("ray::ServeReplica:bench:ingress") == "ingress"
    # Ray appends the running method to the title: the ingress answering a health check is still the ingress
    assert serving.deployment_of("ray::ServeReplica:bench:ingress.check_health") == "ingress"
    assert serving.deployment_of("ray::ServeReplica:bench:ner.handle_batch extra") == "ner"


def test_the_ingress_without_ray_answers_over_grpc_and_counts_as_the_ingress(tiny_checkpoint) -> None:
    """``--compare-without-ray``'s server: the ingress class in a plain process answers a real gRPC
    call with the embedded model's entities, and the benchmark counts it and its worker processes as
    the ingress (not as Ray's daemons)."""
    import argparse

    import grpc
    import psutil

    from protos.linkner.v1 import linkner_pb2 as pb
    from protos.linkner.v1 import linkner_pb2_grpc as pb_grpc

    args = argparse.Namespace(model=tiny_checkpoint, threads=1, max_batch_size=16, ner_placement="embedded",
                              concurrent_passes=2, pass_workers="process", lone_pass_borrows=True, batch_wait_s=None,
                              llm=None)
    from linkner.model.predictor import SpanPredictor

    text = "John Smith lives in Berlin ."
    # what the checkpoint itself finds in these words, in process (its entities are the answer's)
    [found] = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu").predict([text.split()])
    expected = [(text.split()[e.start:e.end], e.label, e.start, e.end) for e in found]
    assert expected, "the tiny checkpoint finds no entity here: the answer would prove nothing"
    with serving.ingress_without_ray(serving.application_args(args, False)) as (server, address):
        parts = serving.stack_processes()
        ours = {server.pid} | {child.pid for child in psutil.Process(server.pid).children(recursive=True)}
        assert len(ours) >= 3 and ours <= set(parts["ingress"])  # the server and its 2 workers, none elsewhere
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


def test_the_one_pass_comparison_runs_one_worker_and_is_judged_against_one_pass_in_process() -> None:
    """``--compare-one-pass``: the app runs one forward pass at a time, and its 32-caller figure is
    compared with the in-process predictor on one thread (the same thread count), not with two."""
    import argparse

    args = argparse.Namespace(model="m", threads=1, max_batch_size=16, ner_placement="embedded", concurrent_passes=2,
                              pass_workers="process", lone_pass_borrows=True, batch_wait_s=None, llm=None)
    assert serving.application_args(args, False, ner={"concurrent_passes": 1})["ner"]["concurrent_passes"] == 1
    assert serving.application_args(args, False)["ner"]["concurrent_passes"] == 2

    def served(path: str, sentences_per_s: float) -> dict:
        return {"path": path, "concurrency": 32, "sentences_per_s": sentences_per_s, "requests_per_s": sentences_per_s,
                "cpu_ms_per_request_total": 8.0}

    report = {"pass_workers": "process", "served": [served("local", 220.0), served(serving.ONE_PASS_PATH, 180.0)],
              "inprocess": [{"name": "batched", "sentences_per_s": 200.0, "ms_per_sentence": 5.0},
                            {"name": "batched-processes", "sentences_per_s": 330.0, "ms_per_sentence": 3.0}]}
    serving.summarise(report)
    assert report["served_vs_inprocess_c32"] == 220.0 / 330.0
    assert report["one_pass_served_vs_inprocess_c32"] == 180.0 / 200.0
    assert report["one_pass_vs_local_c32"] == 180.0 / 220.0


def test_the_llm_path_serves_the_shipped_llm_pool_and_llm_queue_overrides_its_limits(tmp_path) -> None:
    shipped = serving.shipped_application()["args"]["llm_pool"]
    pool = serving.application_args(serving.parse_args(["--llm", str(tmp_path)]), True)["llm_pool"]
    assert pool["llm"] == {**shipped["llm"], "model": str(tmp_path)} and pool["enabled"]
    assert pool["max_queued_requests"] == shipped["max_queued_requests"]
    pool = serving.application_args(serving.parse_args(["--llm", str(tmp_path), "--llm-queue", "16,-1"]), True)
    assert (pool["llm_pool"]["max_ongoing_requests"], pool["llm_pool"]["max_queued_requests"]) == (16, -1)
    with pytest.raises(SystemExit):
        serving.parse_args(["--llm-queue", "4"])
