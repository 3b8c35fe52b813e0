"""The ``linkner.v1`` protobuf messages to and from the shapes of :mod:`protos.protocol`: the
server decodes requests and encodes results with it, the client the other way round."""

from __future__ import annotations

import json

from protos.linkner.v1 import linkner_pb2 as pb
from protos.protocol import (Description, Entity, InvalidRequest, RecognizeOptions, RecognizeRequest,
                             RecognizeResult, Word)

STAGES = ("recognize", "detect", "classify", "merge", "total")  # the fields of linkner.v1.Timings, less "_ms"


def options_to_proto(options: RecognizeOptions) -> pb.Options:
    message = pb.Options(estimator=options.estimator or "", policy=options.policy or "",
                         return_candidates=options.return_candidates, return_words=options.return_words)
    for name in ("threshold", "budget", "max_llm_spans"):  # proto3 optional: unset means the server's choice
        if getattr(options, name) is not None:
            setattr(message, name, getattr(options, name))
    return message


def options_from_proto(message: pb.Options) -> RecognizeOptions:
    return RecognizeOptions(
        estimator=message.estimator or None,
        policy=message.policy or None,
        threshold=message.threshold if message.HasField("threshold") else None,
        budget=message.budget if message.HasField("budget") else None,
        max_llm_spans=message.max_llm_spans if message.HasField("max_llm_spans") else None,
        return_candidates=message.return_candidates,
        return_words=message.return_words,
    )


def request_to_proto(request: RecognizeRequest) -> pb.RecognizeRequest:
    return pb.RecognizeRequest(text=request.text, words=[word.encode("utf-8") for word in request.words],
                               options=options_to_proto(request.options), request_id=request.request_id)


def decode_words(words: list[bytes]) -> list[str]:
    """UTF-8 words; a word that is not valid UTF-8 raises :class:`InvalidRequest` naming it."""
    decoded = []
    for index, raw in enumerate(words):
        try:
            decoded.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise InvalidRequest(f"words[{index}] is not valid UTF-8 ({error.reason} at byte {error.start}): "
                                 f"{raw[:40]!r}") from None
    return decoded


def request_from_proto(message: pb.RecognizeRequest, default_options: pb.Options | None = None) -> RecognizeRequest:
    """A request; an item of a batch without options of its own takes the batch's (``default_options``)."""
    options = message.options if message.HasField("options") or default_options is None else default_options
    return RecognizeRequest(text=message.text, words=decode_words(list(message.words)),
                            options=options_from_proto(options), request_id=message.request_id)


def result_to_proto(result: RecognizeResult) -> pb.RecognizeResponse:
    return pb.RecognizeResponse(
        entities=[pb.Entity(text=e.text, label=e.label, char_start=e.char_start, char_end=e.char_end,
                            word_start=e.word_start, word_end=e.word_end, sentence=e.sentence, source=e.source,
                            uncertainty=e.uncertainty, local_label=e.local_label,
                            local_probability=e.local_probability, llm_score=e.llm_score, degraded=e.degraded,
                            candidates=[pb.Candidate(label=label, probability=p) for label, p in e.candidates])
                  for e in result.entities],
        degraded=result.degraded, degraded_reason=result.degraded_reason, degraded_kind=result.degraded_kind,
        model=result.model, llm_backend=result.llm_backend, llm_spans=result.llm_spans,
        request_id=result.request_id, trace_id=result.trace_id,
        timings=pb.Timings(**{f"{stage}_ms": result.timings_ms.get(stage, 0.0) for stage in STAGES}),
        words=[pb.Word(text=w.text, char_start=w.char_start, char_end=w.char_end, sentence=w.sentence)
               for w in result.words],
    )


def result_from_proto(message: pb.RecognizeResponse) -> RecognizeResult:
    return RecognizeResult(
        entities=[Entity(text=e.text, label=e.label, char_start=e.char_start, char_end=e.char_end,
                         word_start=e.word_start, word_end=e.word_end, sentence=e.sentence, source=e.source,
                         uncertainty=e.uncertainty, local_label=e.local_label,
                         local_probability=e.local_probability,
                         llm_score=e.llm_score if e.HasField("llm_score") else None, degraded=e.degraded,
                         candidates=[(c.label, c.probability) for c in e.candidates])
                  for e in message.entities],
        degraded=message.degraded, degraded_reason=message.degraded_reason, degraded_kind=message.degraded_kind,
        model=message.model, llm_backend=message.llm_backend, llm_spans=message.llm_spans,
        request_id=message.request_id, trace_id=message.trace_id,
        timings_ms={stage: getattr(message.timings, f"{stage}_ms") for stage in STAGES},
        words=[Word(text=w.text, char_start=w.char_start, char_end=w.char_end, sentence=w.sentence)
               for w in message.words],
    )


def description_to_proto(description: Description) -> pb.DescribeResponse:
    """The calibration travels as JSON text ("" when there is none)."""
    fields = description.model_dump()
    fields["calibration"] = json.dumps(description.calibration) if description.calibration is not None else ""
    return pb.DescribeResponse(**fields)


def description_from_proto(message: pb.DescribeResponse) -> Description:
    return Description(model=message.model, labels=list(message.labels), estimators=list(message.estimators),
                       llm_backend=message.llm_backend, policy=message.policy,
                       calibration_status=message.calibration_status,
                       calibration=json.loads(message.calibration) if message.calibration else None,
                       max_llm_spans_per_request=message.max_llm_spans_per_request)
