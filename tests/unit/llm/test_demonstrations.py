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


def test_embedding_cache_is_keyed_by_pool_content_and_weights(tiny_checkpoint, toy_train, tmp_path):
    import shutil

    from safetensors.torch import save_model

    from linkner.llm.demonstrations import embeddings_cache_path, load_cached_embeddings

    checkpoint = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, checkpoint)
    predictor = SpanPredictor.from_checkpoint(checkpoint, device="cpu")
    pool = training_demonstrations(toy_train[:40])
    other = training_demonstrations(toy_train[40:])[: len(pool)]  # as many spans, other content
    assert len(other) == len(pool) and other != pool

    cache = embeddings_cache_path(checkpoint, pool)
    selector = RetrievedDemonstrations.cached(predictor, pool, cache, k=3)
    assert embeddings_cache_path(checkpoint, list(pool)) == cache  # the same pool and weights: a hit
    assert torch.equal(load_cached_embeddings(cache, len(pool)), selector.embeddings)
    other_cache = embeddings_cache_path(checkpoint, other)
    assert other_cache != cache and load_cached_embeddings(other_cache, len(other)) is None  # same size: a miss

    with torch.no_grad():  # "retrain": new weights in the checkpoint folder
        predictor.model.output.bias.add_(1.0)
    save_model(predictor.model, str(checkpoint / "model.safetensors"))
    retrained = embeddings_cache_path(checkpoint, pool)
    assert retrained != cache and load_cached_embeddings(retrained, len(pool)) is None
    RetrievedDemonstrations.cached(predictor, pool, retrained, k=3)
    assert retrained.is_file() and not cache.is_file()  # the stale file for the old weights is gone
