import math

import pytest
import torch

from linkner.uncertainty.estimators import SpanOutputs, get_estimator
from linkner.uncertainty.names import available_estimators


def outputs(logits, samples=None, evidential=False):
    logits = torch.tensor(logits, dtype=torch.float)
    probs = logits.softmax(-1)
    sample_probs = None if samples is None else torch.tensor(samples, dtype=torch.float)
    return SpanOutputs(logits=logits, probs=probs, predicted=probs.argmax(-1), sample_probs=sample_probs,
                       evidential=evidential)


def test_confidence_is_one_minus_max_probability():
    # softmax([log 3, 0]) = [0.75, 0.25]
    result = get_estimator("confidence")(outputs([[math.log(3), 0.0], [0.0, 0.0]]))
    assert result.tolist() == pytest.approx([0.25, 0.5])


def test_entropy_is_normalised():
    result = get_estimator("entropy")(outputs([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]]))
    assert result.tolist() == pytest.approx([1.0, 0.0], abs=1e-6)


def test_mc_dropout_averages_predicted_class_probability():
    samples = [[[0.9, 0.1], [0.2, 0.8]], [[0.5, 0.5], [0.4, 0.6]]]  # T=2, N=2
    result = get_estimator("mc_dropout", mc_samples=2)(outputs([[2.0, 0.0], [0.0, 2.0]], samples))
    # span 0 predicted class 0: 1 - (0.9 + 0.5) / 2; span 1 predicted class 1: 1 - (0.8 + 0.6) / 2
    assert result.tolist() == pytest.approx([0.3, 0.3])


def test_mc_dropout_needs_samples():
    with pytest.raises(ValueError, match="stochastic passes"):
        get_estimator("mc_dropout")(outputs([[1.0, 0.0]]))
    with pytest.raises(ValueError, match="at least 2"):
        get_estimator("mc_dropout", mc_samples=1)


def test_evidential_uncertainty_mass():
    # alpha = exp(logits) + 1: [e^0 + 1, e^0 + 1, e^0 + 1] = [2, 2, 2] -> K / S = 3 / 6
    # [log 9, 0, 0] -> [10, 2, 2] -> 3 / 14
    result = get_estimator("evidential")(outputs([[0.0, 0.0, 0.0], [math.log(9), 0.0, 0.0]], evidential=True))
    assert result.tolist() == pytest.approx([0.5, 3 / 14])


def test_evidential_refuses_softmax_models():
    with pytest.raises(ValueError, match="evidential objective"):
        get_estimator("evidential")(outputs([[0.0, 1.0]]))


def test_unknown_estimator_lists_choices():
    with pytest.raises(ValueError, match="choose from confidence, entropy, mc_dropout, evidential"):
        get_estimator("vibes")
    assert "evidential" not in available_estimators(evidential=False)
