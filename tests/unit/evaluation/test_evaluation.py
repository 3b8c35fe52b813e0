import random

import pytest
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

from linkner.data.spans import Span
from linkner.evaluation.scores import auroc, calibration_bins, entity_scores, reliability_plot, uncertainty_quality
from linkner.data.readers import read_conll
from linkner.data.tags import spans_to_tags


def perturb(spans, length, rng):
    """Realistic mistakes: drop, relabel, shift a boundary, add a spurious entity."""
    result = []
    for span in spans:
        roll = rng.random()
        if roll < 0.1:
            continue
        if roll < 0.2:
            span = Span(span.start, span.end, rng.choice(["PER", "LOC", "ORG", "MISC"]))
        elif roll < 0.3 and span.end < length:
            span = Span(span.start, span.end + 1, span.label)
        result.append(span)
    if rng.random() < 0.15:
        position = rng.randrange(length)
        candidate = Span(position, position + 1, "MISC")
        if not any(candidate.overlaps(other) for other in result):
            result.append(candidate)
    # a boundary shift can create an overlap; keep the flat set
    flat = []
    for span in sorted(result):
        if not flat or not span.overlaps(flat[-1]):
            flat.append(span)
    return flat


def test_scores_match_seqeval_strict_iob2_on_real_data(conll_dir):
    sentences = read_conll(conll_dir / "dev.txt", strict=True)
    rng = random.Random(7)
    gold = [s.entities for s in sentences]
    predicted = [perturb(s.entities, len(s), rng) for s in sentences]
    ours = entity_scores(gold, predicted)

    y_true = [spans_to_tags(len(s), s.entities) for s in sentences]
    y_pred = [spans_to_tags(len(s), p) for s, p in zip(sentences, predicted)]
    theirs = classification_report(y_true, y_pred, mode="strict", scheme=IOB2, output_dict=True, digits=10)
    assert 0.7 < ours.micro.f1 < 0.95  # the perturbation really made mistakes
    for name, scores in ours.per_type.items():
        assert scores.precision == pytest.approx(theirs[name]["precision"], abs=1e-12)
        assert scores.recall == pytest.approx(theirs[name]["recall"], abs=1e-12)
        assert scores.f1 == pytest.approx(theirs[name]["f1-score"], abs=1e-12)
        assert scores.support == theirs[name]["support"]
    assert ours.micro.f1 == pytest.approx(theirs["micro avg"]["f1-score"], abs=1e-12)
    assert ours.micro.precision == pytest.approx(theirs["micro avg"]["precision"], abs=1e-12)
    assert ours.micro.recall == pytest.approx(theirs["micro avg"]["recall"], abs=1e-12)


def test_entity_scores_by_hand():
    gold = [[Span(0, 2, "PER"), Span(3, 4, "LOC")]]
    predicted = [[Span(0, 2, "PER"), Span(3, 4, "ORG")]]
    scores = entity_scores(gold, predicted)
    assert scores.micro.precision == 0.5 and scores.micro.recall == 0.5
    assert scores.per_type["ORG"].precision == 0.0 and scores.per_type["ORG"].support == 0
    assert scores.per_type["LOC"].recall == 0.0


def test_auroc_known_values():
    assert auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auroc([0.1, 0.2, 0.9, 0.8], [True, True, False, False]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [True, False, True, False]) == 0.5
    # one inversion out of 2 x 2 pairs
    assert auroc([0.9, 0.3, 0.4, 0.1], [True, True, False, False]) == 0.75
    assert auroc([0.1, 0.2], [False, False]) is None


def test_calibration_error_known_value():
    # bin 0.8-0.9: confidence 0.85 twice, one right -> |0.85 - 0.5| ; bin 0.3-0.4: 0.35, wrong -> |0.35 - 0|
    ece, bins = calibration_bins([0.85, 0.85, 0.35], [True, False, False])
    assert ece == pytest.approx((2 * 0.35 + 1 * 0.35) / 3)
    assert [count for _, _, count in bins] == [1, 2]


def test_reliability_plot_is_a_png(tmp_path):
    quality = uncertainty_quality("confidence", [0.1, 0.2, 0.7, 0.9], [True, True, False, True])
    path = reliability_plot([quality], tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
