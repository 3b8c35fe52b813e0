"""Protobuf messages to and from the core's pydantic shapes."""

from __future__ import annotations

from linkner.service.api import InvalidRequest, RecognizeInput, RecognizeOptions, RecognizeOutput, ServiceDescription
from protos.linkner.v1 import linkner_pb2 as pb


def options_from_proto(options: pb.Options) -> RecognizeOptions:
    return RecognizeOptions(
        estimator=options.estimator or None,
        policy=options.policy or None,
        threshold=options.threshold if options.HasField("threshold") else None,
        budget=options.budget if options.HasField("budget") else None,
        max_llm_spans=options.max_llm_spans if options.HasField("max_llm_spans") else None,
        return_candidates=options.return_candidates,
        return_words=options.return_words,
    )


def decode_words(words: list[bytes]) -> list[str]:
    """UTF-8 words; a word that is not valid UTF-8 raises InvalidRequest naming it."""
    decoded = []
    for index, raw in enumerate(words):
        try:
            decoded.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise InvalidRequest(f"words[{index}] is not valid UTF-8 ({error.reason} at byte {error.start}): "
                                 f"{raw[:40]!r}") from None
    return decoded


def request_from_proto(request: pb.RecognizeRequest, default_options: pb.Options | None = None) -> RecognizeInput:
    options = request.options if request.HasField("options") or default_options is None else default_options
    return RecognizeInput(text=request.text, words=decode_words(list(request.words)),
                          options=options_from_proto(options), request_id=request.request_id)


def response_to_proto(output: RecognizeOutput) -> pb.RecognizeResponse:
    timings = output.timings_ms
    return pb.RecognizeResponse(
        entities=[
            pb.Entity(text=e.text, label=e.label, char_start=e.char_start, char_end=e.char_end,
                      word_start=e.word_start, word_end=e.word_end, sentence=e.sentence, source=e.source,
                      uncertainty=e.uncertainty.get(output.estimator, 1.0 - e.probability),
                      local_label=e.local_label, local_probability=e.probability, llm_score=e.llm_score,
                      degraded=e.degraded,
                      candidates=[pb.Candidate(label=label, probability=p) for label, p in e.alternatives])
            for e in output.entities
        ],
        degraded=output.degraded, degraded_reason=output.degraded_reason, degraded_kind=output.degraded_kind,
        model=output.model,
        llm_backend=output.llm_backend, llm_spans=output.llm_spans, request_id=output.request_id,
        timings=pb.Timings(recognize_ms=timings.get("recognize", 0.0), detect_ms=timings.get("detect", 0.0),
                           classify_ms=timings.get("classify", 0.0), merge_ms=timings.get("merge", 0.0),
                           total_ms=timings.get("total", 0.0)),
        words=[pb.Word(text=w.text, char_start=w.char_start, char_end=w.char_end, sentence=w.sentence)
               for w in output.words],
    )


def description_to_proto(description: ServiceDescription) -> pb.DescribeResponse:
    return pb.DescribeResponse(**description.model_dump())
