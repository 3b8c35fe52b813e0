"""The candidates option form (filter-then-rerank): the linker offers the LLM only the local
model's top-N entity labels plus Non-entity, and the form is part of the backend's model_id."""

import asyncio

import pytest

from linkner.data.spans import Sentence, Span
from linkner.llm.factory import LLMConfig, candidate_count, model_id_for
from linkner.llm.openai_backend import OpenAIBackend, OpenAISettings
from linkner.llm.oracle import OracleBackend
from linkner.llm.protocol import NON_ENTITY, SpanAnswer, SpanQuery
from linkner.data.spans import Entity
from linkner.model.predictor import SpanPredictor
from linkner.routing.answers import AnswerCache
from linkner.routing.linker import RDCLinker, candidate_labels, span_queries
from linkner.routing.policy import DetectionPolicy

TOKENS = [["Anna", "Berg", "visited", "Lima"], ["Reuters", "said"]]


def prediction(start, end, label, alternatives):
    return Entity(start=start, end=end, label=label, probability=alternatives[0][1],
                            uncertainty={"confidence": 1 - alternatives[0][1]}, alternatives=alternatives)


PREDICTIONS = [
    [prediction(0, 2, "PER", [("PER", 0.9), ("ORG", 0.06), ("LOC", 0.03), ("O", 0.01), ("MISC", 0.0)]),
     prediction(3, 4, "LOC", [("LOC", 0.4), ("O", 0.3), ("ORG", 0.2), ("MISC", 0.07), ("PER", 0.03)])],
    [prediction(0, 1, "ORG", [("ORG", 0.5), ("O", 0.45), ("MISC", 0.05)])],
]


class Recorder:
    """A backend that records the queries it gets and answers Non-entity."""

    model_id = "recorder"

    def __init__(self, candidates=None):
        self.candidates = candidates
        self.queries: list[SpanQuery] = []

    async def classify(self, queries, labels, timeout_s=None):
        self.queries.extend(queries)
        return [SpanAnswer(label=NON_ENTITY, score=1.0, model=self.model_id) for _ in queries]

    async def close(self):
        return None


def test_candidate_labels_skip_the_non_entity_class_and_keep_the_local_order():
    assert candidate_labels(PREDICTIONS[0][0], 2) == ["PER", "ORG"]
    assert candidate_labels(PREDICTIONS[0][1], 2) == ["LOC", "ORG"]  # "O" is second: skipped
    assert candidate_labels(PREDICTIONS[0][1], 3) == ["LOC", "ORG", "MISC"]
    assert candidate_labels(PREDICTIONS[1][0], 3) == ["ORG", "MISC"]  # only what the prediction carries
    assert candidate_labels(Entity(0, 1, "PER", 0.5), 2) == ["PER"]


def test_span_queries_offer_the_top_candidates_only_in_the_candidates_form():
    routed = [(0, 1), (1, 0)]
    assert [q.options for q in span_queries(TOKENS, PREDICTIONS, routed, candidates=2)] == [["LOC", "ORG"],
                                                                                            ["ORG", "MISC"]]
    assert [q.options for q in span_queries(TOKENS, PREDICTIONS, routed)] == [None, None]


class FixedRecognizer:
    labels = ["PER", "LOC", "ORG", "MISC"]

    async def recognize(self, sentences, estimators):
        return PREDICTIONS


@pytest.mark.parametrize("candidates, expected", [(2, [["LOC", "ORG"], ["ORG", "MISC"]]), (None, [None, None])])
def test_linker_and_answer_cache_fill_options_from_the_backend_form(candidates, expected):
    backend = Recorder(candidates)
    linker = RDCLinker(FixedRecognizer(), backend, DetectionPolicy(kind="threshold", threshold=0.45))
    result = asyncio.run(linker.link(TOKENS))
    assert result.stats.routed == 2
    assert [q.options for q in backend.queries] == expected
    cached = Recorder(candidates)
    sentences = [Sentence(tuple(t), ()) for t in TOKENS]
    asyncio.run(AnswerCache(cached, sentences, PREDICTIONS, FixedRecognizer.labels).ensure([(0, 1), (1, 0)],
                                                                                           progress=False))
    assert [q.options for q in cached.queries] == expected


def test_predictor_keeps_every_class_so_top_n_entity_labels_exist(tiny_checkpoint, toy_dev):
    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    entities = [e for sentence in predictor.predict([s.tokens for s in toy_dev[:8]]) for e in sentence]
    assert entities
    for entity in entities:
        assert len(entity.alternatives) == len(predictor.labels) + 1  # O included
        probabilities = [p for _, p in entity.alternatives]
        assert probabilities == sorted(probabilities, reverse=True)
        top = candidate_labels(entity, 3)
        assert len(top) == 3 and top[0] == entity.label and "O" not in top


def test_model_id_names_the_option_form_and_backends_report_it():
    assert model_id_for(LLMConfig(options="all")) == "vllm:smollm2-135m:letter"
    assert model_id_for(LLMConfig(options="candidates")) == "vllm:smollm2-135m:letter:top2"
    assert model_id_for(LLMConfig(options="candidates", candidates=3, mode="choice")) == "vllm:smollm2-135m:choice:top3"
    assert model_id_for(LLMConfig(backend="transformers", mode="choice")) == "transformers:smollm2-135m:label:top2"
    assert candidate_count(LLMConfig(options="all", candidates=3)) is None  # "all" ignores the count
    for options in ("all", "candidates"):
        config = LLMConfig(backend="openai", model="m", base_url="http://127.0.0.1:9/v1", options=options)
        backend = OpenAIBackend(OpenAISettings(base_url=config.base_url, model=config.model),
                                candidates=candidate_count(config))
        assert backend.model_id == model_id_for(config) == ("openai:m:top2" if options == "candidates" else "openai:m")
        asyncio.run(backend.close())


def test_vllm_model_id_follows_the_config_without_starting_an_engine(smollm2):
    pytest.importorskip("vllm")
    from linkner.llm.factory import build_backend

    for config in (LLMConfig(model=str(smollm2)), LLMConfig(model=str(smollm2), options="candidates", mode="label")):
        backend = build_backend(config)
        assert backend.model_id == model_id_for(config) and backend._shared.engine is None
        assert backend.candidates == candidate_count(config)
    view = build_backend(LLMConfig(model=str(smollm2))).with_candidates(2).with_mode("choice")
    assert view.model_id == "vllm:smollm2-135m:choice:top2" and view.candidates == 2


def test_oracle_answers_gold_whatever_is_offered():
    sentence = Sentence(("Anna", "Berg", "visited", "Lima"), (Span(3, 4, "LOC"),))
    query = SpanQuery(tokens=list(sentence.tokens), start=3, end=4, options=["PER"])
    [answer] = asyncio.run(OracleBackend([sentence]).classify([query], ["PER", "LOC"]))
    assert answer.label == "LOC"
