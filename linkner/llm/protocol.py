"""The one protocol every LLM backend speaks: a batch of span queries in, one answer per span out.

An answer is a label from the label set or :data:`NON_ENTITY`, never free text. A backend that
fails returns answers with ``error`` set; it never raises into the linker.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, Sequence, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protos.protocol import FailureKind

NON_ENTITY = "Non-entity"


class LLMOverloaded(Exception):
    """Raised by a backend's ``classify`` when the LLM refuses the call at once because its queue is
    full: the linker keeps the local answer, marked degraded, instead of waiting for a turn."""


class Demonstration(BaseModel):
    """A labelled example span shown to the LLM."""

    model_config = ConfigDict(frozen=True)
    tokens: tuple[str, ...]
    start: int
    end: int
    label: str  # an entity type or NON_ENTITY

    @property
    def text(self) -> str:
        return " ".join(self.tokens[self.start : self.end])


class SpanQuery(BaseModel):
    """One span to classify, in its sentence, with what the local model thought of it.

    ``options`` are the entity labels offered for this span (the local model's top candidates,
    most probable first); ``None`` offers every label. :data:`NON_ENTITY` is always offered too."""

    tokens: list[str] = Field(min_length=1)
    start: int = Field(ge=0)
    end: int = Field(gt=0)
    demonstrations: list[Demonstration] = Field(default_factory=list)
    options: list[str] | None = None

    @field_validator("options")
    @classmethod
    def _distinct_entity_labels(cls, options: list[str] | None) -> list[str] | None:
        if options is not None:
            if NON_ENTITY in options:
                raise ValueError(f"{NON_ENTITY!r} is always offered; list entity labels only")
            if len(set(options)) != len(options):
                raise ValueError(f"options repeat a label: {options}")
        return options

    @property
    def text(self) -> str:
        return " ".join(self.tokens[self.start : self.end])


class SpanAnswer(BaseModel):
    """The LLM's verdict on one span."""

    label: str | None = None  # an entity type, NON_ENTITY, or None when the backend failed
    score: float | None = None  # probability of ``label`` among the options
    option_scores: dict[str, float] = Field(default_factory=dict)  # probability per option, when known
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # what went wrong, for people
    failure: FailureKind | None = None  # what went wrong, for code: set with every error

    @model_validator(mode="after")
    def _every_error_has_a_kind(self) -> "SpanAnswer":
        if self.error is not None and self.failure is None:
            self.failure = "error"
        return self

    @property
    def ok(self) -> bool:
        return self.error is None and self.label is not None


@runtime_checkable
class LLMBackend(Protocol):
    """Classifies spans into ``labels + [NON_ENTITY]``."""

    model_id: str

    async def classify(
        self, queries: Sequence[SpanQuery], labels: Sequence[str], timeout_s: float | None = None
    ) -> list[SpanAnswer]:
        """One answer per query, in order; failures come back as answers with ``error`` set."""
        ...

    async def close(self) -> None:
        """Release engines, sessions and threads."""
        ...


def failed(queries: Sequence[SpanQuery], model: str, error: str, failure: FailureKind = "error") -> list[SpanAnswer]:
    """The same error answer for every query."""
    return [SpanAnswer(model=model, error=error, failure=failure) for _ in queries]


def failure_of(error: BaseException) -> FailureKind:
    """The kind of a caught exception: a timeout, an LLM that refused the call at once, or an error."""
    if isinstance(error, LLMOverloaded):
        return "overloaded"
    return "timeout" if isinstance(error, (TimeoutError, asyncio.TimeoutError)) else "error"


def error_answer(model: str, error: BaseException) -> SpanAnswer:
    """The answer for a query whose call raised ``error``."""
    return SpanAnswer(model=model, error=f"{type(error).__name__}: {error}", failure=failure_of(error))
