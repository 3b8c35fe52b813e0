"""The span model's configuration, stored as JSON beside its weights."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Objective = Literal["cross_entropy", "evidential"]


class SpanModelConfig(BaseModel):
    """Everything needed to rebuild a trained span model (weights excluded)."""

    model_config = ConfigDict(extra="forbid")

    labels: list[str] = Field(min_length=1, description="entity types; class 0 is always 'O'")
    encoder: str = Field("default", description="where the encoder came from (informational once trained)")
    encoder_config: dict[str, Any] = Field(default_factory=dict, description="the encoder's transformers config")
    max_span_len: int = Field(8, ge=1, le=64, description="longest candidate span, in words")
    max_subwords: int = Field(512, ge=16)
    width_dim: int = Field(32, ge=1)
    casing_dim: int = Field(16, ge=1)
    hidden_dim: int = Field(256, ge=1)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    objective: Objective = "cross_entropy"
    evidence_clamp: float = Field(10.0, gt=0, description="logits are clamped here before exp() for evidence")

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, labels: list[str]) -> list[str]:
        if "O" in labels:
            raise ValueError("'O' is implicit and must not be listed among the labels")
        if len(set(labels)) != len(labels):
            raise ValueError("labels must be distinct")
        return labels

    @property
    def num_classes(self) -> int:
        return len(self.labels) + 1
