"""The service's logic without any serving framework: validate a request, resolve its routing
options, run the RDC linker, and shape the answer with character offsets."""

from __future__ import annotations

import time
from typing import Sequence

from linkner.routing.linker import LinkResult, RDCLinker
from linkner.routing.policy import DetectionPolicy, PolicyKind
from linkner.service.api import (InvalidRequest, OutputEntity, RecognizeInput, RecognizeOptions, RecognizeOutput,
                                 ServiceLimits)
from linkner.service.documents import Document, prepare_document

SHOWN_CANDIDATES = 3  # the local model's top classes returned with ``return_candidates``


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
                candidates=entity.alternatives[:SHOWN_CANDIDATES] if request.options.return_candidates else []))
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

