"""Batched inference: sentences in, entities with per-span uncertainties out."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from linkner.data.spans import Entity, Sentence
from linkner.model.decoding import consistent_labels, greedy_non_overlapping
from linkner.model.batching import SpanBatch, SpanBatcher
from linkner.model.checkpoint import load_checkpoint
from linkner.model.packing import CPU_OVERHEAD_TOKENS, CPU_PACK_TOKENS, GPU_OVERHEAD_TOKENS, GPU_PACK_TOKENS, \
    PACKED_OVERHEAD_TOKENS, plan_batches
from linkner.model.runtime import Runtime, apply_runtime
from linkner.model.span_model import SpanNER
from linkner.uncertainty.detector import DetectorError, ErrorDetector, load_detector
from linkner.uncertainty.features import document_groups
from linkner.uncertainty.estimators import SpanOutputs, UncertaintyEstimator, get_estimator, span_features
from linkner.uncertainty.names import LEARNED, available_estimators

log = logging.getLogger(__name__)


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` means the GPU when there is one, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class SpanPredictor:
    """Runs a :class:`SpanNER` over sentences in length-sorted batches and decodes entities.

    With ``pack_tokens`` (default: ``CPU_PACK_TOKENS``, ``GPU_PACK_TOKENS`` on a GPU), a call's windows
    run in batches of ``batch_size`` whose sentences the encoder reads end to end in packed rows of
    about that many sub-words (no padding; 0 turns it off, and so does an encoder that cannot take
    packed rows).
    Otherwise they are sorted by sub-word length and cut into batches of at most ``batch_size``
    where padding would cost more than ``overhead_tokens`` (what one more forward call is worth,
    in padded sub-words). ``max_batch_tokens`` optionally caps a batch's padded sub-words."""

    def __init__(
        self,
        model: SpanNER,
        batcher: SpanBatcher,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        mc_samples: int = 8,
        window_words: int = 128,
        top_k: int | None = None,
        overhead_tokens: int | None = None,
        max_batch_tokens: int | None = None,
        pack_tokens: int | None = None,
        detector: ErrorDetector | None = None,
        detector_problem: str = "no error detector was loaded",
        consistency: bool = False,
    ) -> None:
        self.model = model.eval()
        self.detector = detector  # the ``learned`` estimator, when the checkpoint has a valid one
        self.detector_problem = "" if detector is not None else detector_problem
        self.consistency = consistency  # document-level label consistency (see ``consistent_labels``)
        self.batcher = batcher
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.mc_samples = mc_samples
        self.window_words = window_words
        self.top_k = top_k
        # what one more forward call costs, in padded sub-words: small on a CPU, large on a GPU
        default = GPU_OVERHEAD_TOKENS if self.device.type == "cuda" else CPU_OVERHEAD_TOKENS
        self.overhead_tokens = default if overhead_tokens is None else overhead_tokens
        self.max_batch_tokens = max_batch_tokens
        if pack_tokens is None:
            pack_tokens = GPU_PACK_TOKENS if self.device.type == "cuda" else CPU_PACK_TOKENS
        first_position = self.model.packed_first_position() if pack_tokens else None
        if pack_tokens and first_position is None:
            log.warning("the %s encoder cannot take packed rows; batches are padded instead", model.config.encoder)
            pack_tokens = 0
        self.pack_tokens = pack_tokens
        self.first_position = first_position or 0  # where packed rows count each sentence's positions from

    checkpoint: str = ""
    """Which checkpoint this is (:func:`checkpoint_identity`), "" when not loaded from one."""

    runtime: str = "eager"
    """How the encoder runs (:mod:`linkner.model.runtime`): ``eager`` float32, or ``int8``."""

    @classmethod
    def from_checkpoint(cls, folder: str | Path, device: str = "auto", runtime: Runtime = "eager",
                        **options: int | bool) -> "SpanPredictor":
        """Load a checkpoint folder onto ``device`` (``auto``: GPU if present), its encoder run in
        ``runtime`` (``int8``: on a CPU only; elsewhere float32)."""
        chosen = pick_device(device)
        model, batcher = load_checkpoint(folder, chosen)
        try:
            detector, problem = load_detector(folder, model.config.labels), ""
        except DetectorError as error:  # the other estimators still work; ``learned`` says why it cannot
            detector, problem = None, str(error)
        predictor = cls(model, batcher, chosen, detector=detector, detector_problem=problem, **options)
        predictor.checkpoint = checkpoint_identity(folder)
        # after the float32 model found how to pack rows: an int8 encoder quantizes each call's
        # activations on their own range, so padded and packed rows differ by more than rounding
        predictor.runtime = apply_runtime(predictor.model, runtime, chosen, folder, predictor.first_position)
        return predictor

    @property
    def estimators(self) -> list[str]:
        """The estimator names this predictor can compute."""
        return available_estimators(self.model.config.objective == "evidential", self.detector is not None)

    @property
    def labels(self) -> list[str]:
        return self.model.config.labels

    def describe(self) -> dict:
        """Labels, objective, encoder, estimators and device of this predictor (plain values)."""
        config = self.model.config
        return {"labels": list(config.labels), "objective": config.objective, "encoder": config.encoder,
                "estimators": self.estimators, "device": str(self.device),
                "checkpoint": self.checkpoint, "runtime": self.runtime}

    def predict(
        self, sentences: Sequence[Sequence[str]], estimators: Iterable[str] = ("confidence",),
        documents: Sequence[int] | None = None,
    ) -> list[list[Entity]]:
        """Entities of each word-tokenised sentence, with the named uncertainties per entity.

        Sentences longer than ``window_words`` (or than the encoder's sub-word limit) are cut
        into windows; every word of the input is looked at. ``documents`` gives each sentence's
        document id for the ``learned`` estimator's document evidence and for label consistency
        (None: the sentences of this call are one document)."""
        names = list(dict.fromkeys(estimators))
        if LEARNED not in names:
            predictions = self._decode(sentences, names, None)[0]
            return self._consistent(sentences, predictions, documents)
        if self.detector is None:
            raise ValueError(f"the {LEARNED!r} estimator is not available: {self.detector_problem}")
        others = [name for name in names if name != LEARNED]
        predictions, features = self._decode(sentences, others, self.detector.mc_samples)
        self.detector.annotate(sentences, predictions, features, documents)  # on the model's own labels
        return self._consistent(sentences, predictions, documents)

    def _consistent(self, sentences: Sequence[Sequence[str]], predictions: list[list[Entity]],
                    documents: Sequence[int] | None) -> list[list[Entity]]:
        if not self.consistency:
            return predictions
        return consistent_labels(sentences, predictions, document_groups(len(sentences), documents))

    def predict_with_span_features(
        self, sentences: Sequence[Sequence[str]], estimators: Iterable[str] = (), mc_samples: int = 0
    ) -> tuple[list[list[Entity]], list[list[list[float]]]]:
        """:meth:`predict` plus each entity's model-output features (``SPAN_FEATURES``), what an
        error detector is fitted on; ``mc_samples`` head-dropout passes give the MC spread."""
        predictions, features = self._decode(sentences, list(dict.fromkeys(estimators)), mc_samples)
        return predictions, features or []

    def _decode(
        self, sentences: Sequence[Sequence[str]], estimators: list[str], feature_samples: int | None
    ) -> tuple[list[list[Entity]], list[list[list[float]]] | None]:
        """Entities per sentence and, unless ``feature_samples`` is None, their span features."""
        chosen = [get_estimator(name, self.mc_samples) for name in estimators]
        found: list[list[Entity]] = [[] for _ in sentences]
        features: dict[int, list[float]] | None = None if feature_samples is None else {}
        pending = [
            Window(index, *bounds, tuple(words))
            for index, words in enumerate(sentences)
            for bounds in plan_windows(len(words), 0, len(words), self.window_words)
        ]
        while pending:
            retry: list[Window] = []
            tokenized = self.batcher.tokenize([window.words for window in pending])  # once for every batch
            for rows in self._plan(tokenized.lengths):
                batch = self.batcher.encode_rows(tokenized, rows).to(self.device)
                retry.extend(self._predict_windows([pending[row] for row in rows], batch, chosen, found, features,
                                                   feature_samples or 0))
            pending = retry
        results = [
            greedy_non_overlapping(entities, [(e.start, e.end) for e in entities], [e.probability for e in entities])
            for entities in found
        ]
        if features is None:
            return results, None
        return results, [[features[id(entity)] for entity in entities] for entities in results]

    def _plan(self, lengths: list[int]) -> list[list[int]]:
        """Batches (indices into the windows whose sub-words are ``lengths``) of at most ``batch_size``
        windows: packed, as few as ``max_batch_tokens`` allows; padded, sorted by sub-word length and
        cut where padding would cost more than another forward call (see :func:`plan_batches`)."""
        count = len(lengths)
        if count <= 1 or self.batch_size <= 1:
            return [[index] for index in range(count)]
        if self.pack_tokens and self.max_batch_tokens is None:  # packed rows have no padding to plan for
            return [list(range(start, min(count, start + self.batch_size)))
                    for start in range(0, count, self.batch_size)]
        overhead = PACKED_OVERHEAD_TOKENS if self.pack_tokens else self.overhead_tokens
        return plan_batches(lengths, self.batch_size, overhead, self.max_batch_tokens)

    def _predict_windows(
        self, windows: list["Window"], batch: SpanBatch, estimators: list[UncertaintyEstimator],
        found: list[list[Entity]], features: dict[int, list[float]] | None = None, feature_samples: int = 0,
    ) -> list["Window"]:
        """Add the entities of each window (``batch`` holds them encoded) that start in the words it
        owns to ``found`` (and, with ``features``, their span features by ``id(entity)``); return
        smaller windows replacing any window too long for the encoder's sub-word limit."""
        too_long: list[Window] = []
        own_from, own_to = [], []
        for row, window in enumerate(windows):
            fits = batch.represented_words[row] >= len(window.words)
            own_from.append(window.own_start - window.start if fits else 0)
            own_to.append(window.own_end - window.start if fits else 0)  # a window cut short owns nothing
            if not fits:
                size = max(1, (window.end - window.start) // 2)
                too_long += [
                    Window(window.sentence, *bounds, window.sentence_words)
                    for bounds in plan_windows(len(window.sentence_words), window.own_start, window.own_end, size)
                ]
        owned = (torch.tensor(own_from, device=self.device), torch.tensor(own_to, device=self.device))
        samples = max([e.samples for e in estimators] + [feature_samples])
        spans, outputs, _ = self._outputs(batch, samples, owned)
        if not len(spans):
            return too_long
        span_rows = None if features is None else span_features(outputs, feature_samples > 0).tolist()
        # only the owned entity candidates ever leave tensors
        uncertainties = {e.name: e(outputs).tolist() for e in estimators}
        ranked_probs, ranked_classes = outputs.probs.sort(dim=-1, descending=True, stable=True)
        keep = self.top_k or len(self.batcher.classes)
        ranked_probs, ranked_classes = ranked_probs[:, :keep].tolist(), ranked_classes[:, :keep].tolist()
        rows, starts, ends = spans.T.tolist()
        classes = self.batcher.classes
        by_row: dict[int, list[int]] = {}
        for index, row in enumerate(rows):
            by_row.setdefault(row, []).append(index)
        for row, candidates in by_row.items():
            window = windows[row]
            kept = greedy_non_overlapping(
                candidates, [(starts[i], ends[i]) for i in candidates], [ranked_probs[i][0] for i in candidates]
            )
            chosen = set(kept)
            for i in kept:
                entity = Entity(
                    start=window.start + starts[i],
                    end=window.start + ends[i],
                    label=classes[ranked_classes[i][0]],
                    probability=ranked_probs[i][0],
                    uncertainty={name: values[i] for name, values in uncertainties.items()},
                    alternatives=[(classes[c], p) for c, p in zip(ranked_classes[i], ranked_probs[i])],
                )
                found[window.sentence].append(entity)
                if span_rows is not None:  # the overlapping candidates the decoder suppressed
                    rivals = [ranked_probs[r][0] for r in candidates
                              if r not in chosen and starts[r] < ends[i] and starts[i] < ends[r]]
                    features[id(entity)] = [*span_rows[i], max(rivals, default=0.0), float(len(rivals))]
        return too_long

    @torch.no_grad()
    def span_embeddings(self, items: Sequence[tuple[Sequence[str], int, int]], batch_size: int = 64) -> torch.Tensor:
        """Unit-length embeddings ``[N, 2H]`` of spans ``(words, start, end_exclusive)``: the encoder
        states of the span's first and last word (what the span classifier itself looks at).
        Each distinct sentence is encoded once."""
        sentences = list(dict.fromkeys(tuple(words) for words, _, _ in items))
        position = {words: index for index, words in enumerate(sentences)}
        word_states: list[torch.Tensor] = []
        for chunk in _chunks(sentences, batch_size):
            batch = self.batcher.encode([Sentence(words) for words in chunk]).to(self.device)
            states = self.model.encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
            words = states.gather(1, batch.word_index.unsqueeze(-1).expand(-1, -1, states.size(-1))).float().cpu()
            word_states.extend(words[row] for row in range(len(chunk)))
        if not items:
            return torch.zeros(0, 2 * self.model.encoder.config.hidden_size)
        pairs = torch.stack([torch.cat([word_states[position[tuple(words)]][start],
                                        word_states[position[tuple(words)]][end - 1]])
                             for words, start, end in items])
        return torch.nn.functional.normalize(pairs, dim=-1)

    @torch.no_grad()
    def _outputs(
        self, batch, samples: int, owned: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, SpanOutputs, list[int]]:
        """Classify every real (unpadded) span; keep the entity candidates (not predicted ``O``,
        and, with ``owned`` = per-row ``(from, to)`` word bounds, starting in ``from .. to - 1``).

        Returns the candidates' ``(row, start, end_exclusive)`` ``[M, 3]`` on the CPU, their
        estimator inputs (with ``samples`` head-dropout passes when asked), and their positions
        among the batch's real spans in row-major order."""
        words, casing = self.model.word_states(batch, self.pack_tokens, self.first_position)
        rows, columns = batch.span_mask.nonzero(as_tuple=True)
        starts, ends = batch.span_start[rows, columns], batch.span_end[rows, columns]
        logits = self.model.selected_logits(words, casing, rows, starts, ends)
        probs = self.model.probabilities(logits)
        candidate = probs.argmax(-1) != 0
        if owned is not None:
            candidate &= (starts >= owned[0][rows]) & (starts < owned[1][rows])
        positions = candidate.nonzero().squeeze(-1)
        logits, probs = logits[positions], probs[positions]
        rows, starts, ends = rows[positions], starts[positions], ends[positions]
        sample_probs = None
        if samples and len(positions):  # functional dropout: the shared module stays in eval mode
            features = self.model.selected_features(words, casing, rows, starts, ends)
            sample_probs = torch.stack(
                [self.model.probabilities(self.model.classify(features, sample=True)) for _ in range(samples)]
            )
        if samples and not len(positions):
            sample_probs = probs.unsqueeze(0).expand(samples, -1, -1)
        outputs = SpanOutputs(
            logits=logits.float().cpu(),
            probs=probs.float().cpu(),
            predicted=probs.argmax(-1).cpu(),
            sample_probs=None if sample_probs is None else sample_probs.float().cpu(),
            evidential=self.model.config.objective == "evidential",
            evidence_clamp=self.model.config.evidence_clamp,
        )
        spans = torch.stack([rows, starts, ends + 1], dim=-1).cpu()
        return spans, outputs, positions.tolist()


@dataclass(frozen=True)
class Window:
    """Words ``start .. end - 1`` of sentence ``sentence``; entities are kept from it only when they
    start in ``own_start .. own_end - 1`` (the rest is context shared with neighbouring windows)."""

    sentence: int
    start: int
    end: int
    own_start: int
    own_end: int
    sentence_words: tuple[str, ...]

    @property
    def words(self) -> tuple[str, ...]:
        return self.sentence_words[self.start : self.end]


def plan_windows(length: int, own_start: int, own_end: int, size: int) -> list[tuple[int, int, int, int]]:
    """Cover words ``own_start .. own_end - 1`` with windows of at most ``size`` words, each owning a
    central stretch and reading up to ``size // 4`` words of context on either side. Returns
    ``(start, end, own_start, own_end)`` tuples."""
    if own_end - own_start <= size and own_start == 0 and own_end == length:
        return [(0, length, 0, length)] if length else []
    context = size // 4
    step = max(1, size - 2 * context)
    windows = []
    for chunk_start in range(own_start, own_end, step):
        chunk_end = min(own_end, chunk_start + step)
        windows.append((max(0, chunk_start - context), min(length, chunk_end + context), chunk_start, chunk_end))
    return windows


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def checkpoint_identity(folder: str | Path) -> str:
    """``<folder name>@<first 12 hex digits of the weights' SHA-256>``: names the served weights, so
    an answer tells which checkpoint made it (a new one rolled out shows at once)."""
    from linkner.model.metadata import weights_fingerprint

    return f"{Path(folder).name}@{weights_fingerprint(folder)[:12]}"
