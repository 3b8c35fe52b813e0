from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Options(_message.Message):
    __slots__ = ("estimator", "policy", "threshold", "budget", "max_llm_spans", "return_candidates", "return_words")
    ESTIMATOR_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    MAX_LLM_SPANS_FIELD_NUMBER: _ClassVar[int]
    RETURN_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    RETURN_WORDS_FIELD_NUMBER: _ClassVar[int]
    estimator: str
    policy: str
    threshold: float
    budget: float
    max_llm_spans: int
    return_candidates: bool
    return_words: bool
    def __init__(self, estimator: _Optional[str] = ..., policy: _Optional[str] = ..., threshold: _Optional[float] = ..., budget: _Optional[float] = ..., max_llm_spans: _Optional[int] = ..., return_candidates: _Optional[bool] = ..., return_words: _Optional[bool] = ...) -> None: ...

class RecognizeRequest(_message.Message):
    __slots__ = ("text", "words", "options", "request_id")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    text: str
    words: _containers.RepeatedScalarFieldContainer[bytes]
    options: Options
    request_id: str
    def __init__(self, text: _Optional[str] = ..., words: _Optional[_Iterable[bytes]] = ..., options: _Optional[_Union[Options, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("label", "probability")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    label: str
    probability: float
    def __init__(self, label: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class Entity(_message.Message):
    __slots__ = ("text", "label", "char_start", "char_end", "word_start", "word_end", "sentence", "source", "uncertainty", "local_label", "local_probability", "llm_score", "degraded", "candidates")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CHAR_START_FIELD_NUMBER: _ClassVar[int]
    CHAR_END_FIELD_NUMBER: _ClassVar[int]
    WORD_START_FIELD_NUMBER: _ClassVar[int]
    WORD_END_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    LOCAL_LABEL_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    LLM_SCORE_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
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
    llm_score: float
    degraded: bool
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    def __init__(self, text: _Optional[str] = ..., label: _Optional[str] = ..., char_start: _Optional[int] = ..., char_end: _Optional[int] = ..., word_start: _Optional[int] = ..., word_end: _Optional[int] = ..., sentence: _Optional[int] = ..., source: _Optional[str] = ..., uncertainty: _Optional[float] = ..., local_label: _Optional[str] = ..., local_probability: _Optional[float] = ..., llm_score: _Optional[float] = ..., degraded: _Optional[bool] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("recognize_ms", "detect_ms", "classify_ms", "merge_ms", "total_ms")
    RECOGNIZE_MS_FIELD_NUMBER: _ClassVar[int]
    DETECT_MS_FIELD_NUMBER: _ClassVar[int]
    CLASSIFY_MS_FIELD_NUMBER: _ClassVar[int]
    MERGE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    recognize_ms: float
    detect_ms: float
    classify_ms: float
    merge_ms: float
    total_ms: float
    def __init__(self, recognize_ms: _Optional[float] = ..., detect_ms: _Optional[float] = ..., classify_ms: _Optional[float] = ..., merge_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class Word(_message.Message):
    __slots__ = ("text", "char_start", "char_end", "sentence")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CHAR_START_FIELD_NUMBER: _ClassVar[int]
    CHAR_END_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_FIELD_NUMBER: _ClassVar[int]
    text: str
    char_start: int
    char_end: int
    sentence: int
    def __init__(self, text: _Optional[str] = ..., char_start: _Optional[int] = ..., char_end: _Optional[int] = ..., sentence: _Optional[int] = ...) -> None: ...

class RecognizeResponse(_message.Message):
    __slots__ = ("entities", "degraded", "degraded_reason", "model", "llm_backend", "timings", "llm_spans", "words", "request_id", "trace_id", "degraded_kind")
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_REASON_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LLM_BACKEND_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    LLM_SPANS_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_KIND_FIELD_NUMBER: _ClassVar[int]
    entities: _containers.RepeatedCompositeFieldContainer[Entity]
    degraded: bool
    degraded_reason: str
    model: str
    llm_backend: str
    timings: Timings
    llm_spans: int
    words: _containers.RepeatedCompositeFieldContainer[Word]
    request_id: str
    trace_id: str
    degraded_kind: str
    def __init__(self, entities: _Optional[_Iterable[_Union[Entity, _Mapping]]] = ..., degraded: _Optional[bool] = ..., degraded_reason: _Optional[str] = ..., model: _Optional[str] = ..., llm_backend: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., llm_spans: _Optional[int] = ..., words: _Optional[_Iterable[_Union[Word, _Mapping]]] = ..., request_id: _Optional[str] = ..., trace_id: _Optional[str] = ..., degraded_kind: _Optional[str] = ...) -> None: ...

class RecognizeBatchRequest(_message.Message):
    __slots__ = ("items", "options")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[RecognizeRequest]
    options: Options
    def __init__(self, items: _Optional[_Iterable[_Union[RecognizeRequest, _Mapping]]] = ..., options: _Optional[_Union[Options, _Mapping]] = ...) -> None: ...

class RecognizeBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RecognizeResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[RecognizeResponse, _Mapping]]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("model", "labels", "estimators", "llm_backend", "policy", "calibration_status", "calibration", "max_llm_spans_per_request")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATORS_FIELD_NUMBER: _ClassVar[int]
    LLM_BACKEND_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_STATUS_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    MAX_LLM_SPANS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    model: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    estimators: _containers.RepeatedScalarFieldContainer[str]
    llm_backend: str
    policy: str
    calibration_status: str
    calibration: str
    max_llm_spans_per_request: int
    def __init__(self, model: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., estimators: _Optional[_Iterable[str]] = ..., llm_backend: _Optional[str] = ..., policy: _Optional[str] = ..., calibration_status: _Optional[str] = ..., calibration: _Optional[str] = ..., max_llm_spans_per_request: _Optional[int] = ...) -> None: ...
