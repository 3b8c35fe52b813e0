"""The raw-text benchmark end to end on a tiny model and a few CoNLL-2003 test documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.raw_text import detokenize, evaluate, load_documents, markdown


def test_detokenize_glues_punctuation_and_keeps_offsets() -> None:
    sentences = [["He", "said", '"', "yes", '"', "(", "U.S.", ")", "."],
                 ["It", "'s", "1996-08-22", "and", "it", "does", "n't", "rain", "!"]]
    text, offsets = detokenize(sentences)
    assert text == 'He said "yes" (U.S.). It\'s 1996-08-22 and it doesn\'t rain!'
    for sentence, sentence_offsets in zip(sentences, offsets):
        assert [text[start:end] for start, end in sentence_offsets] == sentence


@pytest.fixture(scope="module")
def documents(conll_dir: Path):
    return load_documents(conll_dir / "test.txt", limit=4)


def test_gold_entities_sit_at_their_character_spans(documents) -> None:
    assert len(documents) == 4 and all(d.entities for d in documents)
    for document in documents:
        gold = [" ".join(s.tokens[span.start : span.end]) for s in document.sentences for span in s.entities]
        found = [document.text[span.start : span.end] for span in document.entities]
        assert [g.replace(" ", "") for g in gold] == [f.replace(" ", "") for f in found]
        assert all(not f.startswith(" ") and not f.endswith(" ") for f in found)


def test_report_has_both_f1s(tiny_checkpoint: Path, documents) -> None:
    from linkner.model.predictor import SpanPredictor

    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    report = evaluate(predictor, documents, progress=False)
    assert report["documents"] == 4 and report["gold_entities"] == sum(len(d.entities) for d in documents)
    assert {row["segmenter"] for row in report["rows"]} == {"syntok + CoNLL conventions (linkner)", "regex (old)"}
    for row in report["rows"]:
        assert 0.0 <= row["raw_text_f1"] <= 1.0 and 0.0 <= row["pre_tokenized_f1"] <= 1.0
        assert row["difference"] == pytest.approx(row["raw_text_f1"] - row["pre_tokenized_f1"])
        assert row["sentences"] > 0
    linkner_row = report["rows"][0]
    assert linkner_row["raw_text_scores"]["micro"]["support"] == report["gold_entities"]
    assert "| syntok + CoNLL conventions (linkner) |" in markdown(report)
