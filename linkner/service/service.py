"""The service's logic without any serving framework: validate a request, resolve its routing
options, run the RDC linker, and shape the answer with character offsets."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

from linkner.data.spans import Entity as Prediction
from linkner.routing.linker import LinkResult, RDCLinker
from linkner.routing.merge import LinkStats
from linkner.routing.policy import DetectionPolicy
from linkner.service.documents import Document, prepare_document
from linkner.service.limits import ServiceLimits
from linkner.service.precedence import resolve_policy
from protos.protocol import Description, Entity, RecognizeRequest, RecognizeResult

__all__ = ["LinkNERService", "Prepared", "build_result"]

SHOWN_CANDIDATES = 3  # the local model's top classes returned with ``return_candidates``


def placed_entity(prediction: Prediction, document: Document, text: str, sentence: int, estimator: str,
                  candidates: int) -> Entity:
    """A linked prediction of sentence ``sentence`` placed in the document: word and character
    offsets, its text, its uncertainty under ``estimator``, its top ``candidates`` classes."""
    start = document.first_word[sentence] + prediction.start
    end = document.first_word[sentence] + prediction.end
    head, tail = document.words[start], document.words[end - 1]
    return Entity(
        text=text[head.char_start : tail.char_end] if head.char_start >= 0
        else " ".join(word.text for word in document.words[start:end]),
        label=prediction.label, char_start=head.char_start, char_end=tail.char_end, word_start=start,
        word_end=end, sentence=sentence, source=prediction.source,
        uncertainty=prediction.uncertainty.get(estimator, 1.0 - prediction.probability),
        local_label=prediction.local_label, local_probability=prediction.probability,
        llm_score=prediction.llm_score, degraded=prediction.degraded,
        candidates=list(prediction.alternatives[:candidates]))


def build_result(document: Document, result: LinkResult, prepared: "Prepared", model: str,
                 started: float) -> RecognizeResult:
    """The answer to a prepared request from what linking found."""
    request, stats = prepared.request, result.stats
    candidates = SHOWN_CANDIDATES if request.options.return_candidates else 0
    entities = [placed_entity(prediction, document, request.text, number, prepared.policy.estimator, candidates)
                for number, linked in enumerate(result.sentences) for prediction in linked]
    timings = {name: 1000 * seconds for name, seconds in stats.timings_s.items()}
    timings["total"] = 1000 * (time.perf_counter() - started)
    return RecognizeResult(entities=entities, degraded=stats.degraded, degraded_reason=stats.degraded_reason or "",
                           degraded_kind=stats.degraded_kind, model=model, llm_backend=stats.llm_model or "",
                           llm_spans=stats.routed, timings_ms=timings, request_id=request.request_id,
                           words=document.words if request.options.return_words else [])


class LinkNERService:
    """Validates requests and answers them with an :class:`RDCLinker`."""

    def __init__(self, linker: RDCLinker, estimators: Sequence[str], model: str,
                 limits: ServiceLimits | None = None, calibration_status: str = "none",
                 stored_calibration: dict | None = None) -> None:
        self.linker = linker
        self.estimators = list(estimators)
        self.model = model
        self.limits = limits or ServiceLimits()
        self.calibration_status = calibration_status
        self.stored_calibration = stored_calibration

    def describe(self) -> Description:
        """The model, its labels and estimators, the LLM, and the effective default routing (the
        policy a request without options gets, hard cap included)."""
        default = resolve_policy(RecognizeRequest().options, self.linker.policy, self.estimators,
                                 self.limits.max_llm_spans_per_request)
        backend = self.linker.backend
        return Description(
            model=self.model, labels=list(self.linker.recognizer.labels), estimators=self.estimators,
            llm_backend=getattr(backend, "model_id", "") if backend is not None else "",
            policy=default.describe() if backend is not None else "none: no LLM configured",
            calibration_status=self.calibration_status, calibration=self.stored_calibration,
            max_llm_spans_per_request=self.limits.max_llm_spans_per_request)

    def prepare(self, request: RecognizeRequest) -> "Prepared":
        """Validate ``request`` and split it into sentences; raise :class:`InvalidRequest` naming the
        problem. Cheap: callers check every item of a batch this way before any work starts."""
        document = prepare_document(request, self.limits)
        policy = resolve_policy(request.options, self.linker.policy, self.estimators,
                                self.limits.max_llm_spans_per_request)
        return Prepared(request, document, policy)

    async def answer(self, prepared: "Prepared", timeout_s: float | None = None,
                     deadline_at: float | None = None) -> tuple[RecognizeResult, LinkStats]:
        """Answer a prepared request, with what linking did (the metrics' counts); the LLM step
        ends by ``timeout_s`` and before ``deadline_at`` (wall clock), past which the local answer
        is kept."""
        started = time.perf_counter()
        result = await self.linker.link(prepared.document.sentences, prepared.policy, timeout_s, deadline_at)
        return build_result(prepared.document, result, prepared, self.model, started), result.stats


@dataclass(frozen=True)
class Prepared:
    """A validated request: its document and the routing policy it resolved to."""

    request: RecognizeRequest
    document: Document
    policy: DetectionPolicy
