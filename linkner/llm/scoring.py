"""Turning per-option log-likelihoods into an answer (shared by every scoring backend)."""

from __future__ import annotations

import math
from typing import Sequence

from linkner.llm.prompts import Option
from linkner.llm.protocol import SpanAnswer


def answer_from_logprobs(
    options: Sequence[Option], logprobs: Sequence[float], model: str, prompt_tokens: int, completion_tokens: int
) -> SpanAnswer:
    """Normalise option log-likelihoods into probabilities and pick the most likely option."""
    peak = max(logprobs)
    weights = [math.exp(value - peak) if math.isfinite(value) else 0.0 for value in logprobs]
    total = sum(weights)
    probabilities = [weight / total for weight in weights]
    best = max(range(len(options)), key=lambda i: probabilities[i])
    return SpanAnswer(
        label=options[best].label,
        score=probabilities[best],
        option_scores={option.label: p for option, p in zip(options, probabilities)},
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )
