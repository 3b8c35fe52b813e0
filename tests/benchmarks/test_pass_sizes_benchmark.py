"""``benchmarks.pass_sizes``: the ingress without Ray counts its forward passes and their
sentences exactly, and the report reads right."""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor

import pytest

from benchmarks import pass_sizes, serving

pytestmark = pytest.mark.slow  # minutes, or the network: not in ./run.sh test --fast

TWO_SENTENCES = "John Smith lives in Berlin. Mary works in Paris."


def test_the_ingress_without_ray_counts_its_passes_and_their_sentences(tiny_checkpoint) -> None:
    import grpc

    from protos.linkner.v1 import linkner_pb2 as pb
    from protos.linkner.v1 import linkner_pb2_grpc as pb_grpc

    args = argparse.Namespace(model=tiny_checkpoint, threads=1, ner_placement="embedded", llm=None)
    request = pb.RecognizeRequest(text=TWO_SENTENCES, options=pb.Options(policy="none"))
    with serving.ingress_without_ray(serving.application_args(args, False), count_passes=True) as (server, address):
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.LinkNERStub(channel)
            stub.Recognize(request, timeout=60)  # warm
            passes, sentences = serving.passes_so_far(server)
            for _ in range(3):  # one after another: a pass each, both sentences in it
                stub.Recognize(request, timeout=60)
            after = serving.passes_so_far(server)
            assert after == (passes + 3, sentences + 6)
            with ThreadPoolExecutor(8) as pool:  # at once: coalesced, every sentence counted once
                list(pool.map(lambda _: stub.Recognize(request, timeout=60), range(8)))
            burst_passes, burst_sentences = serving.passes_so_far(server)
            assert burst_sentences == after[1] + 16
            assert 1 <= burst_passes - after[0] < 8


def test_the_report_sets_each_level_beside_the_model_at_its_pass_size(tmp_path) -> None:
    report = {"header": "h", "inprocess_sentences_per_s": {"4": 150.0, "9": 200.0, "16": 250.0},
              "inprocess_worker_cpu_ms_per_sentence": {"4": 9.0, "9": 7.0, "16": 6.5},
              "served": [{"callers": 32, "requests_per_s": 190.0, "sentences_per_pass": 9.2, "pass_size": 9,
                          "worker_cpu_ms_per_sentence": 7.8, "ingress_cpu_ms_per_request": 0.9},
                         {"callers": 8, "requests_per_s": 140.0, "sentences_per_pass": 3.6, "pass_size": 4,
                          "worker_cpu_ms_per_sentence": 10.1, "ingress_cpu_ms_per_request": 1.6}]}
    table = pass_sizes.markdown(report)
    assert "| 32 | 190.0 | 9.2 | 200.0 (9 a pass) | 0.95 | 0.76 | 7.80, 7.00 | 0.90 |" in table
    assert "| 8 | 140.0 | 3.6 | 150.0 (4 a pass) | 0.93 | 0.56 | 10.10, 9.00 | 1.60 |" in table
    assert "| 16 | 250.0 | 6.50 |" in table
    pass_sizes.plot(report, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
