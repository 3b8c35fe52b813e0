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


def test_oov_real_moves_the_sets_own_unseen_names_between_sentences():
    from linkner.data.spans import Span, make_sentence
    from linkner.evaluation.perturb import is_unseen, unseen_mentions

    train = [make_sentence(["Paris", "beat", "Lyon", "."], [Span(0, 1, "ORG"), Span(2, 3, "ORG")])]
    data = [make_sentence(["Paris", "met", "Tomas", "Berdych", "in", "Quito", "."],
                          [Span(0, 1, "LOC"), Span(2, 4, "PER"), Span(5, 6, "LOC")]),
            make_sentence(["Marcelo", "Rios", "flew", "to", "Ankara", "."], [Span(0, 2, "PER"), Span(4, 5, "LOC")]),
            make_sentence(["The", "EU", "said", "so", "."], [Span(1, 2, "ORG")])]
    vocabulary = {token.lower() for s in train for token in s.tokens}
    pools = unseen_mentions(data, vocabulary)
    assert pools == {"PER": [("Tomas", "Berdych"), ("Marcelo", "Rios")], "LOC": [("Quito",), ("Ankara",)]}
    copies = perturb(data, "oov-real", seed=1, reference=train)
    assert copies == perturb(data, "oov-real", seed=1, reference=train)
    for original, copy in zip(data, copies):
        assert [span.label for span in copy.entities] == [span.label for span in original.entities]
        for before, after in zip(original.entities, copy.entities):
            old = tuple(original.tokens[before.start : before.end])
            new = tuple(copy.tokens[after.start : after.end])
            if before.label in pools:  # a real name of the set, unseen in train, another one than before
                assert new in pools[before.label] and is_unseen(new, vocabulary) and new != old
            else:
                assert new == old  # no unseen name of that type ("EU": too short to tell): left as it was
    assert tuple(copies[1].tokens) == ("Tomas", "Berdych", "flew", "to", "Quito", ".")


def test_unknown_perturbation_names_the_choices(toy_dev):
    import pytest

    with pytest.raises(ValueError, match="typo, oov, oov-real"):
        perturb(toy_dev, "shuffle")
