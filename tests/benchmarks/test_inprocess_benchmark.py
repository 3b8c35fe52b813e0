"""The in-process benchmark's measurements on the tiny checkpoint and a handful of sentences."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import inprocess
from linkner.data.readers import write_dataset
from linkner.model.packing import CPU_PACK_TOKENS
from linkner.model.predictor import SpanPredictor


def test_rows_and_ratios_on_the_tiny_checkpoint(tiny_checkpoint, toy_dev) -> None:
    sentences = [list(s.tokens) for s in toy_dev[:10]]
    rows, ratios = inprocess.run_benchmark(tiny_checkpoint, sentences, batch_size=4, repeats=2)
    assert [row.name for row in rows] == ["encoder", "one", "batched", "batched-padded"]  # packed, and padded beside
    for row in rows:
        summary = row.summary()
        assert len(row.seconds) == 2 and summary["sentences_per_s"] > 0
        expected_words_per_s = summary["sentences_per_s"] * sum(map(len, sentences)) / len(sentences)
        assert summary["words_per_s"] == pytest.approx(expected_words_per_s)
    assert set(ratios) == {"batched_over_one", "batched_over_encoder", "packed_over_padded"}
    assert ratios["batched_over_one"] == pytest.approx(rows[2].sentences_per_s / rows[1].sentences_per_s)
    assert ratios["packed_over_padded"] == pytest.approx(rows[2].sentences_per_s / rows[3].sentences_per_s)
    table = inprocess.markdown(rows, ratios, "header")
    assert "| batched over one |" in table and table.count("\n| encoder") == 1 and f"packed rows of ~{CPU_PACK_TOKENS}" in table
    rows, ratios = inprocess.run_benchmark(tiny_checkpoint, sentences, batch_size=4, repeats=1, pack_tokens=0)
    assert [row.name for row in rows] == ["encoder", "one", "batched"] and "packed_over_padded" not in ratios


def test_passes_find_the_same_entities_one_at_a_time_and_batched(tiny_checkpoint, toy_dev) -> None:
    sentences = [list(s.tokens) for s in toy_dev[:9]]
    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu", batch_size=4)
    found = inprocess.predictor_pass(predictor, sentences, 1)
    assert found > 0 and inprocess.predictor_pass(predictor, sentences, 4) == found
    inprocess.encoder_pass(predictor, sentences, 4)  # runs on every chunk, one-sentence chunk included


def test_hf_pipeline_pass_on_a_tiny_token_head(tiny_encoder: Path, toy_dev, tmp_path: Path) -> None:
    import torch
    from transformers import AutoTokenizer, BertForTokenClassification

    folder = tmp_path / "head"
    AutoTokenizer.from_pretrained(tiny_encoder).save_pretrained(folder)
    sentences = [list(s.tokens) for s in toy_dev[:5]]
    labels = {0: "O", 1: "B-PER", 2: "I-PER"}
    for tagged, expected in (("O", 0), ("I-PER", len(sentences))):
        # a head that tags every sub-word ``tagged``: no entity at all, or one entity spanning each sentence
        head = BertForTokenClassification.from_pretrained(tiny_encoder, num_labels=3, id2label=labels,
                                                          label2id={v: k for k, v in labels.items()})
        with torch.no_grad():
            head.classifier.weight.zero_()
            head.classifier.bias.copy_(torch.tensor([10.0 if labels[i] == tagged else 0.0 for i in range(3)]))
        head.save_pretrained(folder)
        pipe = inprocess.hf_pipeline(folder)
        assert inprocess.pipeline_pass(pipe, sentences, 2) == expected, tagged  # chunks of 2, 2 and 1
        if tagged == "I-PER":  # one entity each, the whole sentence
            texts = [" ".join(s) for s in sentences]
            assert [[(e["start"], e["end"]) for e in found] for found in pipe(texts)] == [[(0, len(t))] for t in texts]


def test_cli_writes_json_and_markdown(tiny_checkpoint, toy_dev, tmp_path: Path) -> None:
    write_dataset(tmp_path / "test.txt", toy_dev[:12])
    out = tmp_path / "results" / "inprocess.json"
    assert inprocess.main(["--model", str(tiny_checkpoint), "--data-dir", str(tmp_path), "--sentences", "8",
                           "--batch-size", "4", "--repeats", "1", "--no-hf", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [row["name"] for row in result["rows"]] == ["encoder", "one", "batched", "batched-padded"]
    assert result["rows"][0]["sentences"] == 8 and result["threads"] == 1
    assert "batched over encoder" in out.with_suffix(".md").read_text()


@pytest.mark.slow  # about 40 s on 2 cores: a benchmark run in worker processes: not in the quick subset
def test_passes_in_worker_processes_cover_every_sentence_once(tiny_checkpoint, toy_dev) -> None:
    from linkner.model.processes import PredictorProcesses, PredictorSpec

    sentences = [list(s.tokens) for s in toy_dev[:9]]
    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu", batch_size=4)
    processes = PredictorProcesses(PredictorSpec(str(tiny_checkpoint), "cpu", 1, {"batch_size": 4}), 2)
    try:
        assert inprocess.process_passes(processes, sentences, 4, passes=2) == inprocess.predictor_pass(
            predictor, sentences, 4)
    finally:
        processes.close()
    rows, _ = inprocess.run_benchmark(tiny_checkpoint, sentences, batch_size=4, repeats=1, passes=2)
    assert [row.name for row in rows] == ["encoder", "one", "batched", "batched-padded", "batched-processes"]
    assert all(row.sentences_per_s > 0 for row in rows)
