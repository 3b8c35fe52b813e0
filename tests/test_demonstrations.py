import torch

from linkner.llm.demonstrations import (NoDemonstrations, RandomDemonstrations, RetrievedDemonstrations,
                                        training_demonstrations)
from linkner.model.predictor import SpanPredictor


def test_random_is_k_per_label_and_seeded(toy_train):
    pool = training_demonstrations(toy_train)
    chosen = RandomDemonstrations(pool, k=2, seed=1).select([(["x"], 0, 1)])[0]
    assert sorted(d.label for d in chosen) == ["LOC", "LOC", "ORG", "ORG", "PER", "PER"]
    assert chosen == RandomDemonstrations(pool, k=2, seed=1).chosen
    assert NoDemonstrations().select([(["x"], 0, 1)]) == [[]]


def test_retrieval_finds_spans_of_the_same_kind(tiny_checkpoint, toy_train, toy_dev, tmp_path):
    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    pool = training_demonstrations(toy_train)
    selector = RetrievedDemonstrations.cached(predictor, pool, tmp_path / "emb.pt", k=3)
    assert (tmp_path / "emb.pt").is_file()
    again = RetrievedDemonstrations.cached(predictor, pool, tmp_path / "emb.pt", k=3)
    assert torch.equal(selector.embeddings, again.embeddings)
    queries = [(s.tokens, e.start, e.end, e.label) for s in toy_dev[:20] for e in s.entities]
    chosen = selector.select([(t, a, b) for t, a, b, _ in queries])
    agreement = sum(demos[-1].label == label for demos, (*_, label) in zip(chosen, queries)) / len(queries)
    assert agreement > 0.8  # the nearest training span (shown last) mostly has the query's type
    one = predictor.span_embeddings([(toy_dev[0].tokens, 0, 2)])
    batched = predictor.span_embeddings([(toy_dev[0].tokens, 0, 2), (toy_dev[1].tokens, 0, 1)])
    assert torch.allclose(one[0], batched[0], atol=1e-5)
