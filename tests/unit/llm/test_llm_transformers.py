"""The transformers backend on the real embedded SmolLM2-135M."""

import asyncio
import re
from contextlib import contextmanager

import pytest
import torch

from linkner.llm.protocol import NON_ENTITY, SpanQuery
from linkner.llm.transformers_backend import TransformersBackend
from conftest import LLM_QUERIES_SENTENCES

LABELS = ["PER", "LOC", "ORG", "MISC"]
QUERIES = [SpanQuery(tokens=t, start=s, end=e) for t, s, e in LLM_QUERIES_SENTENCES]
# the candidates form: each query offers its own labels (two orders, one single candidate)
CANDIDATE_QUERIES = [query.model_copy(update={"options": options})
                     for query, options in zip(QUERIES, (["PER", "ORG"], ["ORG", "LOC"], ["MISC"]))]


def offered(query: SpanQuery) -> set[str]:
    return set(query.options if query.options is not None else LABELS) | {NON_ENTITY}


def shown_letter(user_text: str, name: str) -> str:
    """The letter the prompt text itself puts before ``name`` (the question's list when there is
    one, else the definitions), read from what the model sees, not from the option objects."""
    return re.findall(rf"^([A-Z])\. {re.escape(name)}\b", user_text, flags=re.MULTILINE)[-1]


@pytest.fixture(scope="module")
def label_backend(smollm2):
    return TransformersBackend(smollm2, mode="label", threads=1)


@pytest.fixture(scope="module")
def letter_backend(smollm2):
    return TransformersBackend(smollm2, mode="letter", threads=1)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["letter", "label"])
def test_every_answer_is_an_offered_option_with_a_distribution(mode, label_backend, letter_backend):
    backend = label_backend if mode == "label" else letter_backend
    queries = QUERIES + CANDIDATE_QUERIES
    answers = asyncio.run(backend.classify(queries, LABELS))
    for query, answer in zip(queries, answers):
        assert answer.ok, answer.error
        assert set(answer.option_scores) == offered(query)
        assert answer.label in offered(query)
        assert answer.label == max(answer.option_scores, key=answer.option_scores.get)
        assert sum(answer.option_scores.values()) == pytest.approx(1.0)
        assert answer.score == max(answer.option_scores.values())
        assert answer.prompt_tokens > 100 and answer.model.endswith(mode)


@contextmanager
def favouring(backend: TransformersBackend, token_ids: list[int]):
    """Add a large bias to the logits of the target answer's tokens at every position: every other
    option starts with a token some 50 nats less likely, so the target must win."""
    def hook(module, inputs, output):
        output = output.clone()
        output[..., token_ids] += 50.0
        return output

    handle = backend.model.lm_head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["letter", "label"])
@pytest.mark.parametrize("target", ["ORG", "LOC", NON_ENTITY])
def test_the_favoured_option_maps_to_its_own_label(mode, target, label_backend, letter_backend):
    """Whatever the model would say, the token of the target's letter (as the prompt shows it) or
    name is made to win: the answer must be that label, so a swapped letter/name mapping fails."""
    backend = label_backend if mode == "label" else letter_backend
    name = {"ORG": "organization", "LOC": "location", NON_ENTITY: NON_ENTITY}[target]
    for query in (QUERIES[0], QUERIES[0].model_copy(update={"options": ["LOC", "ORG"]}),
                  QUERIES[0].model_copy(update={"options": ["ORG", "LOC"]})):
        builder = backend._builder(tuple(LABELS))
        text = builder.messages(query, mode)[-1]["content"]
        answer_text = shown_letter(text, name) if mode == "letter" else name
        tokens = backend.tokenizer.encode(answer_text, add_special_tokens=False)
        with favouring(backend, tokens):
            [answer] = asyncio.run(backend.classify([query], LABELS))
        assert answer.label == target, (query.options, answer.option_scores)
        assert answer.option_scores[target] > 0.99


@pytest.mark.slow
@pytest.mark.parametrize("options", [None, ["ORG", "LOC"]])
def test_cached_prefix_scores_equal_a_plain_forward_pass(label_backend, options):
    backend = label_backend
    query = QUERIES[1].model_copy(update={"options": options})
    [answer] = asyncio.run(backend.classify([query], LABELS))
    builder = backend._builder(tuple(LABELS))
    prompt = backend._prompt_ids(builder.messages(query, "label"))
    logprobs = []
    with torch.no_grad():
        for option in builder.options_for(query):
            continuation = backend.tokenizer.encode(option.name, add_special_tokens=False) + backend._end_ids
            ids = torch.tensor([prompt + continuation])
            scores = backend.model(ids).logits[0, len(prompt) - 1 : -1].log_softmax(-1)
            logprobs.append(scores.gather(1, torch.tensor(continuation).unsqueeze(1)).sum().item())
    expected = torch.tensor(logprobs).softmax(0).tolist()
    got = [answer.option_scores[option.label] for option in builder.options_for(query)]
    assert got == pytest.approx(expected, abs=1e-3)
    assert len(backend._prefixes[(tuple(LABELS), options is not None)][0]) > 100  # the preamble is cached


@pytest.mark.slow
def test_deadline_turns_unreached_spans_into_errors(label_backend):
    answers = asyncio.run(label_backend.classify(QUERIES * 5, LABELS, timeout_s=1e-6))
    assert any(not a.ok and "deadline" in a.error for a in answers)
