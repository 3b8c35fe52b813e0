from linkner.evaluation.perturb import perturb, typo
from tests_helpers import entity_texts


def test_typo_edits_only_entities_and_is_seeded(toy_dev):
    first = perturb(toy_dev, "typo", seed=3)
    assert first == perturb(toy_dev, "typo", seed=3)
    assert first != perturb(toy_dev, "typo", seed=4)
    changed = 0
    for original, copy in zip(toy_dev, first):
        assert len(copy) == len(original) and copy.entities == original.entities
        for position, (a, b) in enumerate(zip(original.tokens, copy.tokens)):
            inside = any(span.start <= position < span.end for span in original.entities)
            assert inside or a == b
            changed += a != b
    assert changed > len([s for s in toy_dev if s.entities]) * 0.7


def test_oov_names_are_unseen_and_keep_types(toy_train, toy_dev):
    vocabulary = {token.lower() for s in toy_train for token in s.tokens}
    copies = perturb(toy_dev, "oov", seed=1, reference=toy_train)
    for original, copy in zip(toy_dev, copies):
        assert [span.label for span in copy.entities] == [span.label for span in original.entities]
        for text in entity_texts(copy):
            assert not any(word.lower() in vocabulary for word in text.split() if len(word) > 3)
    sentence = next(s for s in copies if len(s.entities) > 1)
    outside = [t for i, t in enumerate(sentence.tokens) if not any(e.start <= i < e.end for e in sentence.entities)]
    original = next(o for o, c in zip(toy_dev, copies) if c is sentence)
    assert outside == [t for i, t in enumerate(original.tokens) if not any(e.start <= i < e.end for e in original.entities)]


def test_typo_changes_words_of_three_or_more_letters():
    import random

    rng = random.Random(0)
    for word in ["Berlin", "Lee", "aaa", "Mississippi"]:
        assert all(typo(word, rng) != word for _ in range(50))
    assert typo("EU", rng) == "EU"
