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
