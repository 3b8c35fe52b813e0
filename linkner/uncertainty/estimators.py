"""Per-span uncertainty estimators of the LinkNER paper, behind one interface.

Every estimator maps the model outputs of N spans to N uncertainties in [0, 1] (higher = less
sure). Outputs carry the deterministic logits and probabilities, the class each span was
predicted as, and, when an estimator asks for them, probabilities from T stochastic passes.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from linkner.uncertainty.names import ESTIMATOR_NAMES, LEARNED


@dataclass
class SpanOutputs:
    """Model outputs for N spans over C classes."""

    logits: torch.Tensor  # [N, C]
    probs: torch.Tensor  # [N, C]
    predicted: torch.Tensor  # [N] class index
    sample_probs: torch.Tensor | None = None  # [T, N, C] from stochastic (dropout) passes
    evidential: bool = False  # trained with the evidential objective
    evidence_clamp: float = 10.0


class UncertaintyEstimator(ABC):
    """Maps :class:`SpanOutputs` to an uncertainty per span."""

    name: ClassVar[str]
    samples: int = 0  # stochastic passes this estimator needs

    @abstractmethod
    def __call__(self, outputs: SpanOutputs) -> torch.Tensor:
        """Uncertainty ``[N]`` in [0, 1]."""


class ConfidenceEstimator(UncertaintyEstimator):
    """``1 - max_c p(c)``."""

    name = "confidence"

    def __call__(self, outputs: SpanOutputs) -> torch.Tensor:
        return 1.0 - outputs.probs.max(-1).values


class EntropyEstimator(UncertaintyEstimator):
    """Entropy of the class distribution divided by ``log C`` (so in [0, 1])."""

    name = "entropy"

    def __call__(self, outputs: SpanOutputs) -> torch.Tensor:
        probs = outputs.probs.clamp_min(1e-12)
        return -(probs * probs.log()).sum(-1) / math.log(probs.size(-1))


class MCDropoutEstimator(UncertaintyEstimator):
    """``1 - mean_t p_t(predicted class)`` over T stochastic dropout passes."""

    name = "mc_dropout"

    def __init__(self, samples: int = 8) -> None:
        if samples < 2:
            raise ValueError("mc_dropout needs at least 2 stochastic passes")
        self.samples = samples

    def __call__(self, outputs: SpanOutputs) -> torch.Tensor:
        if outputs.sample_probs is None:
            raise ValueError("mc_dropout needs probabilities from stochastic passes (sample_probs)")
        index = outputs.predicted.view(1, -1, 1).expand(outputs.sample_probs.size(0), -1, 1)
        return 1.0 - outputs.sample_probs.gather(-1, index).squeeze(-1).mean(0)


class EvidentialEstimator(UncertaintyEstimator):
    """E-NER's uncertainty mass ``K / S`` with ``alpha = exp(logits) + 1`` and ``S = sum(alpha)``."""

    name = "evidential"

    def __call__(self, outputs: SpanOutputs) -> torch.Tensor:
        if not outputs.evidential:
            raise ValueError("the evidential estimator needs a model trained with the evidential objective")
        alpha = outputs.logits.clamp(max=outputs.evidence_clamp).exp() + 1.0
        return alpha.size(-1) / alpha.sum(-1)


def span_features(outputs: SpanOutputs, dropout: bool = False) -> torch.Tensor:
    """Model-output features of each span for the learned error detector ``[N, 5]``: top probability,
    margin to the second class, probability of ``O`` (class 0), normalised entropy, and (with
    ``dropout`` and stochastic passes) the spread of the predicted class's probability across them."""
    ranked = outputs.probs.sort(dim=-1, descending=True).values
    second = ranked[:, 1] if ranked.size(1) > 1 else torch.zeros_like(ranked[:, 0])
    spread = torch.zeros_like(ranked[:, 0])
    if dropout and outputs.sample_probs is not None:
        index = outputs.predicted.view(1, -1, 1).expand(outputs.sample_probs.size(0), -1, 1)
        spread = outputs.sample_probs.gather(-1, index).squeeze(-1).std(0)
    entropy = EntropyEstimator()(outputs)
    return torch.stack([ranked[:, 0], ranked[:, 0] - second, outputs.probs[:, 0], entropy, spread], dim=-1)


ESTIMATORS: dict[str, type[UncertaintyEstimator]] = {
    estimator.name: estimator
    for estimator in (ConfidenceEstimator, EntropyEstimator, MCDropoutEstimator, EvidentialEstimator)
}


def get_estimator(name: str, mc_samples: int = 8) -> UncertaintyEstimator:
    """Build an estimator by name; unknown names raise ``ValueError`` listing the known ones.
    (``learned`` is not built here: it needs a document's predictions, see ``SpanPredictor``.)"""
    if name == LEARNED:
        raise ValueError(f"{LEARNED!r} is scored over a document's predictions by the predictor's error detector, "
                         "not per span")
    if name not in ESTIMATORS:
        raise ValueError(f"unknown uncertainty estimator {name!r}; choose from {', '.join(ESTIMATORS)}")
    if name == MCDropoutEstimator.name:
        return MCDropoutEstimator(mc_samples)
    return ESTIMATORS[name]()
assert (*ESTIMATORS, LEARNED) == ESTIMATOR_NAMES
