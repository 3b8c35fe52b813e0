"""Training-time augmentation of gold mentions, so the model reads context instead of memorising names.

Each epoch, every gold mention of a training sentence is, independently:

- replaced with probability ``mention_replacement``: by an invented name of its type
  (:func:`linkner.evaluation.perturb.unseen_name`) with probability ``invented_share``, otherwise
  by another mention of the same type seen in training (drawn uniformly over distinct surface
  forms, so rare names are as likely as frequent ones);
- given a one-character typo in one of its words with probability ``typo_rate``
  (:func:`linkner.evaluation.perturb.typo_in_mention`), after any replacement.

A sentence none of whose mentions is drawn stays the original object, so the model still sees the
clean data (with the defaults of 0.0 nothing changes at all). Augmented sentences are fresh copies
with their gold spans moved to the new lengths; the originals are never edited.

Seeds: the random stream of an epoch is ``random.Random(f"train-augment:{seed}:{epoch}")``. The
evaluation perturbations use ``random.Random(f"{kind}:{seed}")`` with ``kind`` in ``typo`` /
``oov``, so no training stream can ever equal an evaluation one whatever the seeds (the
``train-augment:`` prefix is never a perturbation kind), and the same seed and epoch always give
the same augmented data (resumed runs included).
"""

from __future__ import annotations

import random
from typing import Sequence

from linkner.data.spans import Sentence
from linkner.evaluation.perturb import mention_forms, typo_in_mention, unseen_name, with_mentions

AUGMENT_NAMESPACE = "train-augment"


def augment_rng(seed: int, epoch: int) -> random.Random:
    """The augmentation stream of one epoch (never one of evaluation's ``"{kind}:{seed}"`` streams)."""
    return random.Random(f"{AUGMENT_NAMESPACE}:{seed}:{epoch}")


class MentionAugmenter:
    """Replaces and misspells gold mentions of training sentences, freshly per epoch."""

    def __init__(self, train: Sequence[Sentence], mention_replacement: float = 0.0, typo_rate: float = 0.0,
                 invented_share: float = 0.5, seed: int = 0) -> None:
        for name, value in (("mention_replacement", mention_replacement), ("typo_rate", typo_rate),
                            ("invented_share", invented_share)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        self.mention_replacement = mention_replacement
        self.typo_rate = typo_rate
        self.invented_share = invented_share
        self.seed = seed
        self.vocabulary = {token.lower() for sentence in train for token in sentence.tokens}
        self.pools = mention_forms(train)  # distinct training mentions per type, in first-seen order

    @property
    def active(self) -> bool:
        return self.mention_replacement > 0 or self.typo_rate > 0

    def epoch(self, sentences: Sequence[Sentence], epoch: int) -> list[Sentence]:
        """The training data of ``epoch``: originals, some with augmented mentions (same order)."""
        if not self.active:
            return list(sentences)
        rng = augment_rng(self.seed, epoch)
        return [self.augment(sentence, rng) for sentence in sentences]

    def augment(self, sentence: Sentence, rng: random.Random) -> Sentence:
        """``sentence`` with each mention replaced / misspelt by chance; unchanged, the same object."""
        entities = sorted(sentence.entities)
        if not entities or any(a.end > b.start for a, b in zip(entities, entities[1:])):
            return sentence  # nothing to change, or nested mentions (left as they are)
        mentions, changed = [], False
        for entity in entities:
            original = sentence.tokens[entity.start : entity.end]
            words = list(original)
            if rng.random() < self.mention_replacement:
                words = self._replacement(entity.label, original, rng)
            if rng.random() < self.typo_rate:
                words = typo_in_mention(words, rng)
            changed = changed or tuple(words) != original
            mentions.append(words)
        return with_mentions(sentence, entities, mentions) if changed else sentence

    def _replacement(self, label: str, original: tuple[str, ...], rng: random.Random) -> list[str]:
        pool = self.pools.get(label, [])
        if rng.random() < self.invented_share or len(pool) < 2:
            return unseen_name(label, rng, self.vocabulary)
        for _ in range(5):
            form = pool[rng.randrange(len(pool))]
            if form != original:
                break
        return list(form)
