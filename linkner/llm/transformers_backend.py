"""A light LLM backend on plain transformers: no generation, no parsing. Each option is scored by
its log-likelihood as the assistant's answer, so the answer is always one of the options.

- ``letter`` mode: one forward pass per span; the options' letters compete as the next token.
- ``label`` mode: each option's name plus the end-of-turn token is scored as a continuation
  (sum of token log-probabilities), all continuations reusing the span prompt's cache.
The key/value cache of the fixed preamble (system turn, instructions, definitions) is computed
once per label set and option form (every label, or the query's own candidates) and shared by
every span; only the offered options are scored.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from linkner.model.encoders import offline_hub
from linkner.llm.ids import llm_id
from linkner.llm.prompts import AnswerMode, PromptBuilder
from linkner.llm.protocol import SpanAnswer, SpanQuery, failed, failure_of
from linkner.llm.scoring import answer_from_logprobs
from linkner.llm.tokens import end_of_turn_ids, single_token_id


class TransformersBackend:
    """Scores options with a local causal LM folder (e.g. the prepared SmolLM2)."""

    def __init__(
        self,
        model_path: str | Path,
        mode: AnswerMode = "label",
        device: str = "cpu",
        threads: int | None = None,
        definitions: dict[str, str] | None = None,
        candidates: int | None = None,
    ) -> None:
        if mode not in ("letter", "label"):
            raise ValueError("the transformers backend scores 'letter' or 'label' options ('choice' is vLLM's)")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        offline_hub()
        if threads:
            torch.set_num_threads(threads)
        path = Path(model_path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a local model folder; run `linkner prepare-llm` first")
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).eval()
        self.device = device
        self.mode: AnswerMode = mode
        self.definitions = definitions
        self.candidates = candidates
        self.folder = path
        self.model_id = llm_id("transformers", path, mode, candidates)
        self._builders: dict[tuple[str, ...], PromptBuilder] = {}
        self._prefixes: dict[tuple[tuple[str, ...], bool], tuple[list[int], Any]] = {}
        self._lock = threading.Lock()  # one forward pass at a time on this model
        self._end_ids = end_of_turn_ids(self.tokenizer)

    async def classify(
        self, queries: Sequence[SpanQuery], labels: Sequence[str], timeout_s: float | None = None
    ) -> list[SpanAnswer]:
        """Score every query in a worker thread; a deadline turns unfinished spans into errors."""
        if not queries:
            return []
        deadline = time.monotonic() + timeout_s if timeout_s else None
        try:
            return await asyncio.to_thread(self._classify_all, list(queries), tuple(labels), deadline)
        except Exception as error:  # the protocol: failures become error answers
            return failed(queries, self.model_id, f"{type(error).__name__}: {error}", failure_of(error))

    def with_candidates(self, candidates: int | None) -> "TransformersBackend":
        """A view offering the top-``candidates`` labels (None: every label), sharing the model,
        its lock and its cached preambles."""
        other = copy.copy(self)
        other.candidates = candidates
        other.model_id = llm_id("transformers", self.folder, self.mode, candidates)
        return other

    async def close(self) -> None:
        self._builders.clear()
        self._prefixes.clear()

    # ------------------------------------------------------------------ scoring

    def _classify_all(self, queries: list[SpanQuery], labels: tuple[str, ...], deadline: float | None) -> list[SpanAnswer]:
        answers = []
        with self._lock:
            builder = self._builder(labels)
            for query in queries:
                if deadline is not None and time.monotonic() > deadline:
                    answers.append(SpanAnswer(model=self.model_id, error="deadline exceeded before this span",
                                              failure="timeout"))
                    continue
                answers.append(self._classify_one(query, builder))
        return answers

    def _builder(self, labels: tuple[str, ...]) -> PromptBuilder:
        if labels not in self._builders:
            self._builders[labels] = PromptBuilder(labels, self.definitions)
        return self._builders[labels]

    def _prefix(self, builder: PromptBuilder, listed: bool) -> tuple[list[int], Any]:
        """Token ids and key/value cache of the fixed start of every prompt of one option form."""
        key = (tuple(builder.labels), listed)
        if key not in self._prefixes:
            probe_query = SpanQuery(tokens=["x"], start=0, end=1, options=builder.labels[:1] if listed else None)
            prefix_ids = self._prompt_ids([{"role": "system", "content": builder.system},
                                           {"role": "user", "content": builder.preamble_for(probe_query)}],
                                          generation=False)
            # drop the user turn's closing tokens: the shared prefix ends inside the user message
            probe = self._prompt_ids(builder.messages(probe_query, self.mode))
            common = _common_prefix(prefix_ids, probe)
            with self.torch.no_grad():
                cache = self.model(self._tensor(prefix_ids[:common]), use_cache=True).past_key_values
            self._prefixes[key] = (prefix_ids[:common], cache)
        return self._prefixes[key]

    def _classify_one(self, query: SpanQuery, builder: PromptBuilder) -> SpanAnswer:
        torch = self.torch
        options = builder.options_for(query)
        prefix_ids, prefix_cache = self._prefix(builder, query.options is not None)
        prompt_ids = self._prompt_ids(builder.messages(query, self.mode))
        shared = len(prefix_ids) if prompt_ids[: len(prefix_ids)] == prefix_ids else 0
        with torch.no_grad():
            cache = copy.deepcopy(prefix_cache) if shared else None
            output = self.model(self._tensor(prompt_ids[shared:]), past_key_values=cache, use_cache=True)
            last = output.logits[0, -1].float().log_softmax(-1)
            if self.mode == "letter":
                letter_ids = [single_token_id(self.tokenizer, option.letter) for option in options]
                scores = [last[token].item() for token in letter_ids]
                completion = 1
            else:
                scores, completion = [], 0
                for option in options:
                    continuation = self.tokenizer.encode(option.name, add_special_tokens=False) + self._end_ids
                    branch = copy.deepcopy(output.past_key_values)
                    rest = self.model(self._tensor(continuation[:-1]), past_key_values=branch).logits[0].float()
                    logprobs = torch.cat([last.unsqueeze(0), rest.log_softmax(-1)], dim=0)
                    scores.append(logprobs.gather(1, self._tensor(continuation).T).sum().item())
                    completion += len(continuation)
        return answer_from_logprobs(options, scores, self.model_id, len(prompt_ids), completion)

    # ------------------------------------------------------------------ tokens

    def _prompt_ids(self, messages: list[dict[str, str]], generation: bool = True) -> list[int]:
        if self.tokenizer.chat_template:
            encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=generation, tokenize=True)
            ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
            return list(ids)
        text = "\n\n".join(message["content"] for message in messages) + ("\nAnswer:" if generation else "")
        return self.tokenizer.encode(text)

    def _tensor(self, ids: Sequence[int] | Sequence[Sequence[int]]) -> Any:
        tensor = self.torch.tensor(ids, dtype=self.torch.long, device=self.device)
        return tensor.unsqueeze(0) if tensor.dim() == 1 else tensor


def _common_prefix(first: Sequence[int], second: Sequence[int]) -> int:
    length = 0
    for a, b in zip(first, second):
        if a != b:
            break
        length += 1
    return length
