"""The LLM id: the ``model_id`` a backend reports and stored calibrations are keyed by. Computed
here only, by the backends from their settings and by the configuration without loading anything."""

from __future__ import annotations

from pathlib import Path

from linkner.llm.prompts import AnswerMode


def transformers_mode(mode: AnswerMode) -> AnswerMode:
    """The transformers backend scores names for ``choice`` (its constrained generation is vLLM's)."""
    return "label" if mode == "choice" else mode


def llm_id(backend: str, model: str | Path, mode: AnswerMode | None, candidates: int | None) -> str:
    """``backend:model[:mode][:topN]``. ``model`` is the configured one: a local folder for vllm and
    transformers (named by the folder's name, with the mode the backend answers in), the served
    model's name for openai (no mode). The ``topN`` suffix marks the candidates form only."""
    if backend == "openai":
        name, mode = str(model), None
    else:
        name = Path(model).name
        mode = transformers_mode(mode) if backend == "transformers" and mode else mode
    parts = [backend, name] + ([mode] if mode else []) + ([f"top{candidates}"] if candidates else [])
    return ":".join(parts)
