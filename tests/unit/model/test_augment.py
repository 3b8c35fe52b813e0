"""Training-time mention augmentation (replacement by other / invented names, typos)."""

import random

import pytest

from linkner.data.spans import Sentence
from linkner.evaluation.perturb import perturb
from linkner.model.augment import MentionAugmenter, augment_rng
from linkner.model.training import TrainConfig, Trainer


def outside_tokens(sentence: Sentence) -> list[str]:
    return [t for i, t in enumerate(sentence.tokens) if not any(e.start <= i < e.end for e in sentence.entities)]


def mentions(sentence: Sentence) -> list[tuple[str, tuple[str, ...]]]:
    return [(e.label, sentence.tokens[e.start : e.end]) for e in sentence.entities]


def test_replacement_keeps_spans_aligned_with_the_new_names(toy_train):
    augmenter = MentionAugmenter(toy_train, mention_replacement=1.0, seed=5)
    augmented = augmenter.epoch(toy_train, epoch=1)
    seen = {(label, words) for s in toy_train for label, words in mentions(s)}
    invented = swapped = 0
    for original, copy in zip(toy_train, augmented):
        assert outside_tokens(copy) == outside_tokens(original)  # context untouched, in order
        assert [e.label for e in copy.entities] == [e.label for e in original.entities]
        for (label, new), (_, old) in zip(mentions(copy), mentions(original)):
            if (label, new) in seen:  # another training mention of the same type
                swapped += new != old
            else:  # an invented name: none of its longer words occurs in training
                invented += 1
                assert not any(w.lower() in augmenter.vocabulary for w in new if len(w) > 3)
    total = sum(len(s.entities) for s in toy_train)
    assert invented > 0.35 * total and swapped > 0.35 * total  # the documented half/half split


def test_typo_changes_exactly_one_word_of_each_mention(toy_train):
    augmented = MentionAugmenter(toy_train, typo_rate=1.0, seed=5).epoch(toy_train, epoch=1)
    for original, copy in zip(toy_train, augmented):
        assert len(copy) == len(original) and copy.entities == original.entities
        assert outside_tokens(copy) == outside_tokens(original)
        for (_, new), (_, old) in zip(mentions(copy), mentions(original)):
            changed = sum(a != b for a, b in zip(new, old))
            assert changed == (1 if any(len(w) >= 3 for w in old) else 0)


def test_same_seed_and_epoch_repeat_other_epochs_and_seeds_differ(toy_train):
    augmenter = MentionAugmenter(toy_train, mention_replacement=0.4, typo_rate=0.2, seed=13)
    first = augmenter.epoch(toy_train, epoch=2)
    assert first == MentionAugmenter(toy_train, mention_replacement=0.4, typo_rate=0.2, seed=13).epoch(toy_train, 2)
    assert first != augmenter.epoch(toy_train, epoch=3)
    assert first != MentionAugmenter(toy_train, mention_replacement=0.4, typo_rate=0.2, seed=14).epoch(toy_train, 2)


def test_a_fraction_of_sentences_is_augmented_and_originals_are_untouched(toy_train):
    snapshot = list(toy_train)
    augmented = MentionAugmenter(toy_train, mention_replacement=0.3, typo_rate=0.1, seed=1).epoch(toy_train, 1)
    kept = sum(a is b for a, b in zip(augmented, toy_train))
    assert 0.2 * len(toy_train) < kept < 0.8 * len(toy_train)
    assert toy_train == snapshot  # augmented sentences are copies


def test_zero_rates_leave_the_data_unchanged(toy_train):
    augmented = MentionAugmenter(toy_train, seed=1).epoch(toy_train, epoch=1)
    assert all(a is b for a, b in zip(augmented, toy_train)) and len(augmented) == len(toy_train)


def test_training_streams_never_equal_evaluation_streams(toy_dev, toy_train):
    def draws(rng: random.Random) -> list[float]:
        return [rng.random() for _ in range(8)]

    evaluation = {tuple(draws(random.Random(f"{kind}:{seed}"))) for kind in ("typo", "oov") for seed in range(50)}
    training = {tuple(draws(augment_rng(seed, epoch))) for seed in range(50) for epoch in range(1, 11)}
    assert not evaluation & training
    # and the augmented data is not the evaluation set: typos at rate 1 with the same numeric seed
    augmented = MentionAugmenter(toy_train, typo_rate=1.0, seed=0).epoch(toy_dev, epoch=0)
    assert augmented != perturb(toy_dev, "typo", seed=0)


def test_rates_outside_zero_to_one_are_refused():
    with pytest.raises(ValueError):
        TrainConfig(mention_replacement=1.5)
    with pytest.raises(ValueError):
        TrainConfig(typo_rate=-0.1)


def test_trainer_feeds_augmented_sentences_each_epoch(tiny_encoder, toy_train, toy_dev, tmp_path):
    config = TrainConfig(encoder=str(tiny_encoder), epochs=2, batch_size=32, hidden_dim=16, width_dim=8,
                         casing_dim=8, max_span_len=4, progress=False, threads=1, mention_replacement=0.5,
                         typo_rate=0.2)
    trainer = Trainer(config, toy_train[:96], toy_dev[:16], tmp_path / "m")
    fed: list[list[Sentence]] = []
    encode = trainer.batcher.encode

    def spy(sentences, with_labels=False):
        if with_labels:
            fed[-1].extend(sentences)
        return encode(sentences, with_labels=with_labels)

    trainer.batcher.encode = spy
    original = trainer._train_epoch

    def epoch(number, budget_left):
        fed.append([])
        return original(number, budget_left)

    trainer._train_epoch = epoch
    result = trainer.fit()
    assert result.epochs_run == 2
    originals = set(toy_train[:96])
    for sentences in fed:
        assert len(sentences) == 96
        new = [s for s in sentences if s not in originals]
        assert 10 < len(new) < 96  # some augmented, some clean
    assert set(fed[0]) != set(fed[1])  # fresh augmentation per epoch


def test_a_half_precision_encoder_folder_trains_in_float32(tiny_encoder, tmp_path):
    import torch
    from transformers import BertModel

    from linkner.model.encoders import load_pretrained_encoder

    half = tmp_path / "half"
    BertModel.from_pretrained(tiny_encoder).half().save_pretrained(half)
    assert next(BertModel.from_pretrained(half).parameters()).dtype == torch.float16  # what transformers does
    assert next(load_pretrained_encoder(half).parameters()).dtype == torch.float32
