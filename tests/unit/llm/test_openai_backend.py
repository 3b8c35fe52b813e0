import asyncio
import time

import pytest

from linkner.llm.openai_backend import OpenAIBackend, OpenAISettings
from linkner.llm.protocol import NON_ENTITY, SpanQuery
from openai_peer import OpenAIPeer, closed_port

LABELS = ["PER", "LOC", "ORG", "MISC"]
QUERY = SpanQuery(tokens=["Anna", "Berg", "visited", "Lima"], start=3, end=4)


def classify(settings: OpenAISettings, queries=(QUERY,), timeout_s=None):
    async def go():
        backend = OpenAIBackend(settings)
        try:
            return await backend.classify(list(queries), LABELS, timeout_s)
        finally:
            await backend.close()
    return asyncio.run(go())


def test_constrained_choice_maps_the_answer_to_a_label(monkeypatch):
    monkeypatch.setenv("TEST_KEY", "sekret")
    with OpenAIPeer(answer=lambda body: "location") as peer:
        [answer] = classify(OpenAISettings(base_url=peer.base_url, model="m", api_key_env="TEST_KEY"))
    assert answer.ok and answer.label == "LOC"
    assert answer.score == pytest.approx(0.7788, abs=1e-3)  # exp(-0.25)
    assert answer.prompt_tokens == 100 and answer.model == "openai:m"
    body = peer.requests[0]
    assert body["structured_outputs"]["choice"] == ["person", "location", "organization", "miscellaneous", NON_ENTITY]
    assert body["temperature"] == 0 and "Select the entity type of \"Lima\"" in body["messages"][-1]["content"]
    assert peer.headers[0]["Authorization"] == "Bearer sekret"


def test_unconstrained_answer_must_match_an_option_exactly():
    with OpenAIPeer(answer=lambda body: "I think it is a city") as peer:
        [answer] = classify(OpenAISettings(base_url=peer.base_url, model="m", constrained=False))
    assert not answer.ok and "matches no option" in answer.error
    assert "structured_outputs" not in peer.requests[0]
    with OpenAIPeer(answer=lambda body: "  Non-Entity ") as peer:
        [answer] = classify(OpenAISettings(base_url=peer.base_url, model="m", constrained=False))
    assert answer.label == NON_ENTITY


def test_unavailable_server_is_retried_with_backoff():
    with OpenAIPeer(fail_first=2) as peer:
        [answer] = classify(OpenAISettings(base_url=peer.base_url, model="m", max_retries=2, backoff_s=0.01))
    assert answer.ok and len(peer.requests) == 3


def test_unreachable_server_gives_error_answers_not_exceptions():
    settings = OpenAISettings(base_url=f"http://127.0.0.1:{closed_port()}/v1", model="m", max_retries=1,
                              backoff_s=0.01)
    answers = classify(settings, queries=[QUERY, QUERY])
    assert [a.ok for a in answers] == [False, False]
    assert "after 2 attempts" in answers[0].error


def test_deadline_bounds_a_slow_server():
    with OpenAIPeer(delay_s=2.0) as peer:
        started = time.monotonic()
        [answer] = classify(OpenAISettings(base_url=peer.base_url, model="m", max_retries=3), timeout_s=0.3)
    assert time.monotonic() - started < 1.5
    assert not answer.ok


def classify_with(answer_text, query, constrained=False):
    with OpenAIPeer(answer=lambda body: answer_text) as peer:
        [answer] = classify(OpenAISettings(base_url=peer.base_url, model="m", constrained=constrained),
                            queries=[query])
    return answer, peer.requests[0]


@pytest.mark.parametrize("text, options, label", [
    ("C", None, "ORG"), ("E", None, NON_ENTITY), ("A", None, "PER"),
    ("A", ["LOC", "ORG"], "LOC"), ("B", ["LOC", "ORG"], "ORG"), ("C", ["LOC", "ORG"], NON_ENTITY),
    ("B", ["ORG", "LOC"], "LOC"), ("organization", ["LOC", "ORG"], "ORG"),
])
def test_a_letter_or_name_maps_to_the_label_the_prompt_shows_for_it(text, options, label):
    answer, body = classify_with(text, QUERY.model_copy(update={"options": options}))
    assert answer.label == label
    prompt = body["messages"][-1]["content"]
    name = {"PER": "person", "LOC": "location", "ORG": "organization", NON_ENTITY: NON_ENTITY}[label]
    if len(text) == 1:
        assert f"\n{text}. {name}" in prompt  # the letter stands for that name in what the server saw


def test_candidates_constrain_the_choice_and_refuse_other_labels():
    query = QUERY.model_copy(update={"options": ["ORG", "LOC"]})
    with OpenAIPeer() as peer:  # answers the first offered choice
        [answer] = classify(OpenAISettings(base_url=peer.base_url, model="m"), queries=[query])
    assert peer.requests[0]["structured_outputs"]["choice"] == ["organization", "location", NON_ENTITY]
    assert answer.label == "ORG"
    for text in ("person", "D", "E"):  # not offered here (D and E exist only in the full form)
        answer, _ = classify_with(text, query)
        assert not answer.ok and "matches no option" in answer.error
