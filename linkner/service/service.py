"""The service's logic without any serving framework: validate a request, resolve its routing
options, run the RDC linker, and shape the answer with character offsets."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Sequence

from linkner.routing.linker import LinkResult, RDCLinker
from linkner.routing.policy import DetectionPolicy
from linkner.service.api import RecognizeInput, RecognizeOutput, ServiceDescription, ServiceLimits
from linkner.service.documents import Document, prepare_document
from linkner.service.precedence import resolve_policy

__all__ = ["LinkNERService", "Prepared", "build_output"]

SHOWN_CANDIDATES = 3  # the local model's top classes returned with ``return_candidates``


def build_output(document: Document, result: LinkResult, prepared: "Prepared", model: str,
                 started: float) -> RecognizeOutput:
    """Place the linked entities in the request's document: word and character offsets, text."""
    request = prepared.request
    candidates = SHOWN_CANDIDATES if request.options.return_candidates else 0
    entities = []
    for number, (linked, first) in enumerate(zip(result.sentences, document.first_word)):
        for entity in linked:
            start, end = first + entity.start, first + entity.end
            head, tail = document.words[start], document.words[end - 1]
            text = (request.text[head.char_start : tail.char_end] if head.char_start >= 0
                    else " ".join(word.text for word in document.words[start:end]))
            entities.append(replace(entity, sentence=number, word_start=start, word_end=end,
                                    char_start=head.char_start, char_end=tail.char_end, text=text,
                                    alternatives=entity.alternatives[:candidates]))
    stats = result.stats
    timings = {name: 1000 * seconds for name, seconds in stats.timings_s.items()}
    timings["total"] = 1000 * (time.perf_counter() - started)
    return RecognizeOutput(entities=entities, estimator=prepared.policy.estimator, degraded=stats.degraded,
                           degraded_reason=stats.degraded_reason or "", model=model,
                           llm_backend=stats.llm_model or "", timings_ms=timings, llm_spans=stats.routed,
                           spans=stats.spans, degraded_kind=stats.degraded_kind or "",
                           llm_errors=stats.llm_errors, llm_timeouts=stats.llm_timeouts,
                           llm_overloaded=stats.llm_overloaded,
                           words=document.words if request.options.return_words else [],
                           request_id=request.request_id)


class LinkNERService:
    """Validates requests and answers them with an :class:`RDCLinker`."""

    def __init__(self, linker: RDCLinker, estimators: Sequence[str], model: str,
                 limits: ServiceLimits | None = None, calibration_status: str = "none",
                 stored_calibration: str = "") -> None:
        self.linker = linker
        self.estimators = list(estimators)
        self.model = model
        self.limits = limits or ServiceLimits()
        self.calibration_status = calibration_status
        self.stored_calibration = stored_calibration

    def describe(self) -> ServiceDescription:
        """The model, its labels and estimators, the LLM, and the effective default routing (the
        policy a request without options gets, hard cap included)."""
        default = resolve_policy(RecognizeInput().options, self.linker.policy, self.estimators,
                                 self.limits.max_llm_spans_per_request)
        backend = self.linker.backend
        return ServiceDescription(
            model=self.model, labels=list(self.linker.recognizer.labels), estimators=self.estimators,
            llm_backend=getattr(backend, "model_id", "") if backend is not None else "",
            policy=default.describe() if backend is not None else "none: no LLM configured",
            calibration_status=self.calibration_status, calibration=self.stored_calibration,
            max_llm_spans_per_request=self.limits.max_llm_spans_per_request)

    def prepare(self, request: RecognizeInput) -> "Prepared":
        """Validate ``request`` and split it into sentences; raise :class:`InvalidRequest` naming the
        problem. Cheap: callers check every item of a batch this way before any work starts."""
        document = prepare_document(request, self.limits)
        policy = resolve_policy(request.options, self.linker.policy, self.estimators,
                                self.limits.max_llm_spans_per_request)
        return Prepared(request, document, policy)

    async def answer(self, prepared: "Prepared", timeout_s: float | None = None,
                     deadline_at: float | None = None) -> RecognizeOutput:
        """Answer a prepared request; the LLM step ends by ``timeout_s`` and before ``deadline_at``
        (wall clock), past which the local answer is kept."""
        started = time.perf_counter()
        result = await self.linker.link(prepared.document.sentences, prepared.policy, timeout_s, deadline_at)
        return build_output(prepared.document, result, prepared, self.model, started)


@dataclass(frozen=True)
class Prepared:
    """A validated request: its document and the routing policy it resolved to."""

    request: RecognizeInput
    document: Document
    policy: DetectionPolicy
