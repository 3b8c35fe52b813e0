"""The transformers backend on the real embedded SmolLM2-135M."""

import asyncio

import pytest
import torch

from linkner.llm.protocol import NON_ENTITY, SpanQuery
from linkner.llm.transformers_backend import TransformersBackend
from conftest import LLM_QUERIES_SENTENCES

LABELS = ["PER", "LOC", "ORG", "MISC"]
QUERIES = [SpanQuery(tokens=t, start=s, end=e) for t, s, e in LLM_QUERIES_SENTENCES]


@pytest.fixture(scope="module")
def label_backend(smollm2):
    return TransformersBackend(smollm2, mode="label", threads=1)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["letter", "label"])
def test_every_answer_is_an_option_with_a_distribution(smollm2, mode, label_backend):
    backend = label_backend if mode == "label" else TransformersBackend(smollm2, mode=mode, threads=1)
    answers = asyncio.run(backend.classify(QUERIES, LABELS))
    for answer in answers:
        assert answer.ok, answer.error
        assert answer.label in LABELS + [NON_ENTITY]
        assert sum(answer.option_scores.values()) == pytest.approx(1.0)
        assert answer.score == max(answer.option_scores.values())
        assert answer.prompt_tokens > 100 and answer.model.endswith(mode)


@pytest.mark.slow
def test_cached_prefix_scores_equal_a_plain_forward_pass(label_backend):
    backend = label_backend
    query = QUERIES[1]
    [answer] = asyncio.run(backend.classify([query], LABELS))
    builder = backend._builders[tuple(LABELS)][0]
    prompt = backend._prompt_ids(builder.messages(query, "label"))
    logprobs = []
    with torch.no_grad():
        for option in builder.options:
            continuation = backend.tokenizer.encode(option.name, add_special_tokens=False) + backend._end_ids
            ids = torch.tensor([prompt + continuation])
            scores = backend.model(ids).logits[0, len(prompt) - 1 : -1].log_softmax(-1)
            logprobs.append(scores.gather(1, torch.tensor(continuation).unsqueeze(1)).sum().item())
    expected = torch.tensor(logprobs).softmax(0).tolist()
    got = [answer.option_scores[option.label] for option in builder.options]
    assert got == pytest.approx(expected, abs=1e-3)


@pytest.mark.slow
def test_deadline_turns_unreached_spans_into_errors(label_backend):
    answers = asyncio.run(label_backend.classify(QUERIES * 5, LABELS, timeout_s=1e-6))
    assert any(not a.ok and "deadline" in a.error for a in answers)
