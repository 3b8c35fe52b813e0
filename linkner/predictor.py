"""Batched inference: sentences in, entities with per-span uncertainties out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from linkner.data import Sentence, Span
from linkner.decoding import greedy_non_overlapping
from linkner.model.batching import SpanBatcher
from linkner.model.checkpoint import load_checkpoint
from linkner.model.span_model import SpanNER
from linkner.uncertainty import SpanOutputs, UncertaintyEstimator, get_estimator


@dataclass
class EntityPrediction:
    """A predicted entity: word offsets (end exclusive), label, its probability, uncertainties by
    estimator name, and the top classes (``O`` included) with their probabilities."""

    start: int
    end: int
    label: str
    probability: float
    uncertainty: dict[str, float] = field(default_factory=dict)
    alternatives: list[tuple[str, float]] = field(default_factory=list)

    @property
    def span(self) -> Span:
        return Span(self.start, self.end, self.label)


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` means the GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class SpanPredictor:
    """Runs a :class:`SpanNER` over sentences in length-sorted batches and decodes entities."""

    def __init__(
        self,
        model: SpanNER,
        batcher: SpanBatcher,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        mc_samples: int = 8,
        window_words: int = 128,
        top_k: int = 3,
    ) -> None:
        self.model = model.eval()
        self.batcher = batcher
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.mc_samples = mc_samples
        self.window_words = window_words
        self.top_k = top_k

    @classmethod
    def from_checkpoint(cls, folder: str | Path, device: str = "auto", **options: int) -> "SpanPredictor":
        """Load a checkpoint folder onto ``device`` (``auto``: GPU if present)."""
        chosen = pick_device(device)
        model, batcher = load_checkpoint(folder, chosen)
        return cls(model, batcher, chosen, **options)

    @property
    def labels(self) -> list[str]:
        return self.model.config.labels

    def predict(
        self, sentences: Sequence[Sequence[str]], estimators: Iterable[str] = ("confidence",)
    ) -> list[list[EntityPrediction]]:
        """Entities of each word-tokenised sentence, with the named uncertainties per entity.

        Sentences longer than ``window_words`` (or than the encoder's sub-word limit) are cut
        into windows; every word of the input is looked at."""
        chosen = [get_estimator(name, self.mc_samples) for name in dict.fromkeys(estimators)]
        results: list[list[EntityPrediction]] = [[] for _ in sentences]
        pending = [
            (index, offset, tuple(words[offset : offset + self.window_words]))
            for index, words in enumerate(sentences)
            for offset in range(0, len(words), self.window_words)
        ]
        while pending:
            pending.sort(key=lambda window: len(window[2]))
            retry = []
            for chunk in _chunks(pending, self.batch_size):
                retry.extend(self._predict_windows(chunk, chosen, results))
            pending = retry
        return results

    def _predict_windows(
        self,
        windows: list[tuple[int, int, tuple[str, ...]]],
        estimators: list[UncertaintyEstimator],
        results: list[list[EntityPrediction]],
    ) -> list[tuple[int, int, tuple[str, ...]]]:
        """Predict windows into ``results``; return the halves of any window too long to encode."""
        batch = self.batcher.encode([Sentence(words) for _, _, words in windows]).to(self.device)
        outputs = self._outputs(batch, max((e.samples for e in estimators), default=0))
        uncertainties = {e.name: e(outputs).tolist() for e in estimators} if estimators else {}
        probs = outputs.probs.tolist()
        predicted = outputs.predicted.tolist()
        classes = self.batcher.classes
        too_long = []
        flat = 0
        for row, (index, offset, words) in enumerate(windows):
            spans = batch.spans[row]
            if batch.represented_words[row] < len(words):
                half = max(1, len(words) // 2)
                too_long += [(index, offset, words[:half]), (index, offset + half, words[half:])]
                flat += len(spans)
                continue
            candidates = [flat + i for i, _ in enumerate(spans) if predicted[flat + i] != 0]
            kept = greedy_non_overlapping(
                candidates, [spans[i - flat] for i in candidates], [probs[i][predicted[i]] for i in candidates]
            )
            for i in kept:
                start, end = spans[i - flat]
                ranked = sorted(range(len(classes)), key=lambda c: -probs[i][c])[: self.top_k]
                results[index].append(
                    EntityPrediction(
                        start=offset + start,
                        end=offset + end,
                        label=classes[predicted[i]],
                        probability=probs[i][predicted[i]],
                        uncertainty={name: values[i] for name, values in uncertainties.items()},
                        alternatives=[(classes[c], probs[i][c]) for c in ranked],
                    )
                )
            results[index].sort(key=lambda entity: entity.start)
            flat += len(spans)
        return too_long

    @torch.no_grad()
    def _outputs(self, batch, samples: int) -> SpanOutputs:
        """Flattened outputs of the real (unpadded) spans; head-dropout samples when asked."""
        features = self.model.span_features(batch)[batch.span_mask]
        logits = self.model.classify(features)
        probs = self.model.probabilities(logits)
        sample_probs = None
        if samples:
            self.model.head_dropout.train()
            try:
                sample_probs = torch.stack(
                    [self.model.probabilities(self.model.classify(features)) for _ in range(samples)]
                )
            finally:
                self.model.head_dropout.eval()
        return SpanOutputs(
            logits=logits.float().cpu(),
            probs=probs.float().cpu(),
            predicted=probs.argmax(-1).cpu(),
            sample_probs=None if sample_probs is None else sample_probs.float().cpu(),
            evidential=self.model.config.objective == "evidential",
            evidence_clamp=self.model.config.evidence_clamp,
        )


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
