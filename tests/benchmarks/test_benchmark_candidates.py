"""The option-form benchmark's core on the tiny model: the same routed spans for every form."""

import asyncio

import pytest

from benchmarks.candidates import compare_forms, markdown, parse_args

from linkner.llm.oracle import OracleBackend
from linkner.model.predictor import SpanPredictor


def test_oracle_is_perfect_on_the_routed_spans_and_never_hurts_f1(tiny_checkpoint, toy_dev):
    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    result = asyncio.run(compare_forms(predictor, toy_dev[:20], {"all": OracleBackend(toy_dev)}, progress=False))
    form = result["forms"]["all"]
    assert result["routed"] == -(-result["spans"] // 5)  # 20% of the spans, rounded up
    assert form["accuracy"] == 1.0 and form["gold_offered"] == 1.0 and form["errors"] == 0
    assert list(form["f1"]) == ["0.05", "0.1", "0.2"]
    assert all(f1 >= result["local_f1"] - 1e-9 for f1 in form["f1"].values())
    table = markdown(result)
    assert "| all | oracle | 100.0% | 100.0% | 0 |" in table and "F1 @ 20%" in table


@pytest.mark.slow
def test_both_forms_ask_the_real_llm_about_the_same_spans(tiny_checkpoint, toy_dev, smollm2):
    from linkner.llm.transformers_backend import TransformersBackend

    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    backend = TransformersBackend(smollm2, mode="letter", threads=1)
    forms = {"all": backend, "candidates (top 2)": backend.with_candidates(2)}
    result = asyncio.run(compare_forms(predictor, toy_dev[:6], forms, shares=[0.2], progress=False))
    all_form, candidates = result["forms"]["all"], result["forms"]["candidates (top 2)"]
    assert (all_form["model"], candidates["model"]) == ("transformers:smollm2-135m:letter",
                                                        "transformers:smollm2-135m:letter:top2")
    assert result["routed"] >= 1 and all_form["errors"] == candidates["errors"] == 0
    assert all_form["gold_offered"] == 1.0 and 0.0 <= candidates["gold_offered"] <= 1.0
    assert candidates["prompt_tokens_per_span"] != all_form["prompt_tokens_per_span"]  # different prompts


def test_command_line_defaults():
    args = parse_args(["--model", "m", "--sentences", "7"])
    assert (args.sentences, args.candidates, args.mode, args.shares) == (7, 2, "letter", "0.05,0.1,0.2")
    assert args.out.name == "candidates.json"
