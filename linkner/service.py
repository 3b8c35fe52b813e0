"""The service's logic without any serving framework: validate a request, split text into
sentences and words, run the RDC linker, and shape the answer with character offsets.

The gRPC gateway converts protobuf messages to and from these pydantic shapes and maps
:class:`InvalidRequest` to ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from pydantic import BaseModel, Field

from linkner.linking import DetectionPolicy, LinkResult, PolicyKind, RDCLinker
from linkner.text import split_sentences


class InvalidRequest(ValueError):
    """A request the service refuses; the message says what is wrong."""


class ServiceLimits(BaseModel):
    max_chars: int = Field(100_000, ge=1, description="longest text accepted")
    max_words: int = Field(20_000, ge=1, description="most words accepted in one document")
    max_word_chars: int = Field(200, ge=1)
    max_batch_items: int = Field(256, ge=1)


class RecognizeOptions(BaseModel):
    """Per-request overrides; None means the server's configuration."""

    estimator: str | None = None
    policy: str | None = None
    threshold: float | None = None
    budget: float | None = None
    max_llm_spans: int | None = None
    return_candidates: bool = False


class RecognizeInput(BaseModel):
    text: str = ""
    words: list[str] = Field(default_factory=list)
    options: RecognizeOptions = Field(default_factory=RecognizeOptions)
    request_id: str = ""


class OutputEntity(BaseModel):
    text: str
    label: str
    char_start: int
    char_end: int
    word_start: int
    word_end: int
    sentence: int
    source: str
    uncertainty: float
    local_label: str
    local_probability: float
    llm_score: float | None = None
    degraded: bool = False
    candidates: list[tuple[str, float]] = Field(default_factory=list)


class OutputWord(BaseModel):
    text: str
    char_start: int
    char_end: int
    sentence: int


class RecognizeOutput(BaseModel):
    entities: list[OutputEntity]
    degraded: bool = False
    degraded_reason: str = ""
    model: str = ""
    llm_backend: str = ""
    timings_ms: dict[str, float] = Field(default_factory=dict)
    llm_spans: int = 0
    words: list[OutputWord] = Field(default_factory=list)
    request_id: str = ""


@dataclass
class Document:
    """A request's words grouped in sentences, with character offsets (-1 for given words)."""

    sentences: list[list[str]]
    words: list[OutputWord]
    first_word: list[int]  # document index of each sentence's first word


def prepare_document(request: RecognizeInput, limits: ServiceLimits) -> Document:
    """Validate and split a request; raise :class:`InvalidRequest` naming the problem."""
    if request.text and request.words:
        raise InvalidRequest("give either text or words, not both")
    if not request.text.strip() and not request.words:
        raise InvalidRequest("empty request: text is empty and no words were given")
    if len(request.text) > limits.max_chars:
        raise InvalidRequest(f"text too long: {len(request.text)} characters, the limit is {limits.max_chars}")
    if request.words:
        if len(request.words) > limits.max_words:
            raise InvalidRequest(f"too many words: {len(request.words)}, the limit is {limits.max_words}")
        for index, word in enumerate(request.words):
            _check_word(index, word, limits)
        words = [OutputWord(text=word, char_start=-1, char_end=-1, sentence=0) for word in request.words]
        return Document(sentences=[list(request.words)], words=words, first_word=[0])
    sentences, words, first = [], [], []
    for number, tokens in enumerate(split_sentences(request.text)):
        first.append(len(words))
        sentences.append([token.text for token in tokens])
        words += [OutputWord(text=t.text, char_start=t.start, char_end=t.end, sentence=number) for t in tokens]
    if not words:
        raise InvalidRequest("text has no words")
    if len(words) > limits.max_words:
        raise InvalidRequest(f"too many words: {len(words)}, the limit is {limits.max_words}")
    return Document(sentences=sentences, words=words, first_word=first)


def _check_word(index: int, word: str, limits: ServiceLimits) -> None:
    if not word:
        raise InvalidRequest(f"words[{index}] is empty")
    if len(word) > limits.max_word_chars:
        raise InvalidRequest(f"words[{index}] is {len(word)} characters long, the limit is {limits.max_word_chars}")
    if any(character.isspace() for character in word):
        raise InvalidRequest(f"words[{index}] contains whitespace: {word[:40]!r}")
    if any(0xD800 <= ord(character) <= 0xDFFF for character in word) or "\ufffd" in word:
        raise InvalidRequest(f"words[{index}] is not valid UTF-8 text: {word[:40]!r}")
    if any(ord(character) < 32 or ord(character) == 127 for character in word):
        raise InvalidRequest(f"words[{index}] contains control characters: {word[:40]!r}")


def check_batch(items: int, limits: ServiceLimits) -> None:
    """Refuse an empty batch or one over the limit."""
    if not items:
        raise InvalidRequest("empty batch: no items")
    if items > limits.max_batch_items:
        raise InvalidRequest(f"batch too large: {items} items, the limit is {limits.max_batch_items}")


def resolve_policy(options: RecognizeOptions, default: DetectionPolicy, estimators: Sequence[str]) -> DetectionPolicy:
    """The request's policy: the server default with the request's overrides, validated."""
    update: dict = {}
    if options.estimator:
        if options.estimator not in estimators:
            raise InvalidRequest(f"unknown estimator {options.estimator!r}; this model offers {', '.join(estimators)}")
        update["estimator"] = options.estimator
    if options.policy:
        if options.policy not in PolicyKind.__args__:  # type: ignore[attr-defined]
            raise InvalidRequest(f"unknown policy {options.policy!r}; choose from {', '.join(PolicyKind.__args__)}")  # type: ignore[attr-defined]
        if options.policy == "calibrated" and default.calibration is None:
            raise InvalidRequest("policy 'calibrated' is not available: the model has no calibration")
        update["kind"] = options.policy
    for name in ("threshold", "budget"):
        value = getattr(options, name)
        if value is not None:
            if not 0.0 <= value <= 1.0 or value != value:
                raise InvalidRequest(f"{name} {value} is out of range: it must be within [0, 1]")
            update[name] = value
    if options.max_llm_spans is not None:
        if options.max_llm_spans < 0:
            raise InvalidRequest(f"max_llm_spans {options.max_llm_spans} must not be negative")
        update["max_llm_spans"] = options.max_llm_spans
    return default.model_copy(update=update) if update else default


def build_output(document: Document, result: LinkResult, request: RecognizeInput, model: str,
                 started: float) -> RecognizeOutput:
    """Shape linked entities with word and character offsets."""
    entities = []
    for number, (linked, first) in enumerate(zip(result.sentences, document.first_word)):
        for entity in linked:
            start, end = first + entity.start, first + entity.end
            words = document.words[start:end]
            has_chars = words[0].char_start >= 0
            text = (request.text[words[0].char_start : words[-1].char_end] if has_chars
                    else " ".join(word.text for word in words))
            entities.append(OutputEntity(
                text=text, label=entity.label, char_start=words[0].char_start, char_end=words[-1].char_end,
                word_start=start, word_end=end, sentence=number, source=entity.source,
                uncertainty=entity.uncertainty, local_label=entity.local_label,
                local_probability=entity.local_probability, llm_score=entity.llm_score, degraded=entity.degraded,
                candidates=entity.alternatives if request.options.return_candidates else []))
    stats = result.stats
    timings = {name: 1000 * seconds for name, seconds in stats.timings_s.items()}
    timings["total"] = 1000 * (time.perf_counter() - started)
    return RecognizeOutput(entities=entities, degraded=stats.degraded, degraded_reason=stats.degraded_reason or "",
                           model=model, llm_backend=stats.llm_model or "", timings_ms=timings, llm_spans=stats.routed,
                           words=document.words, request_id=request.request_id)


class LinkNERService:
    """Validates requests and answers them with an :class:`RDCLinker`."""

    def __init__(self, linker: RDCLinker, estimators: Sequence[str], model: str,
                 limits: ServiceLimits | None = None) -> None:
        self.linker = linker
        self.estimators = list(estimators)
        self.model = model
        self.limits = limits or ServiceLimits()

    async def recognize(self, request: RecognizeInput, timeout_s: float | None = None,
                        deadline_at: float | None = None) -> RecognizeOutput:
        """Answer one request; the LLM step ends by ``timeout_s`` and before ``deadline_at`` (wall
        clock), past which the local answer is kept."""
        started = time.perf_counter()
        document = prepare_document(request, self.limits)
        policy = resolve_policy(request.options, self.linker.policy, self.estimators)
        result = await self.linker.link(document.sentences, policy, timeout_s, deadline_at)
        return build_output(document, result, request, self.model, started)

