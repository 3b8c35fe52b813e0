"""Seeded perturbations of a labelled data set, for robustness evaluation.

- ``typo``: one character edit (swap, drop, double or replace) inside a word of each entity.
- ``oov``: each entity replaced by a made-up, plausible name of the same type that does not occur
  in a reference vocabulary (the training data), so the local model has never seen it.
- ``oov-real``: each entity replaced by a *real* name of the same type that the data set itself
  contains and the reference vocabulary does not (for CoNLL test against train: the test set's own
  unseen mentions, moved to other sentences). No name generator is involved, so a model trained
  with invented names (``linkner.model.augment``) cannot gain here by learning the generator's style.
"""

from __future__ import annotations

import random
from typing import Callable, Iterable, Literal, Sequence

from linkner.data.spans import Sentence, Span, make_sentence

PerturbKind = Literal["typo", "oov", "oov-real"]
PERTURB_KINDS: tuple[str, ...] = ("typo", "oov", "oov-real")
_ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r", "s", "st", "t", "tr",
           "v", "z", "ch", "sh", "th"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou", "ia"]
_CODAS = ["", "", "n", "r", "l", "s", "k", "m", "nd", "rt"]
_SUFFIXES = {
    "LOC": ["burg", "ville", "stan", "ia", "port", "field", "grad"],
    "ORG": ["Corp", "Group", "United", "Holdings", "Bank", "Party", "Institute"],
    "MISC": ["ian", "ese", "ish", "Cup", "Open", "Prize"],
}


def _syllables(rng: random.Random, count: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(count))


def invented_name(label: str, rng: random.Random) -> list[str]:
    """A pronounceable made-up name for an entity type (CoNLL's four; others like ORG)."""
    if label == "PER":
        return [_syllables(rng, rng.randint(1, 2)).capitalize(), _syllables(rng, rng.randint(2, 3)).capitalize()]
    if label == "LOC":
        return [_syllables(rng, 2).capitalize() + rng.choice(_SUFFIXES["LOC"])]
    if label == "MISC":
        suffix = rng.choice(_SUFFIXES["MISC"])
        stem = _syllables(rng, 2).capitalize()
        return [stem + suffix] if suffix.islower() else [stem, suffix]
    return [_syllables(rng, 2).capitalize(), rng.choice(_SUFFIXES["ORG"])]


def typo(word: str, rng: random.Random) -> str:
    """One character edit that changes ``word`` (words shorter than 3 characters stay)."""
    if len(word) < 3:
        return word
    position = rng.randrange(1, len(word) - 1)
    edit = rng.choice(["swap", "drop", "double", "replace"])
    if edit == "swap" and word[position] != word[position + 1]:
        return word[:position] + word[position + 1] + word[position] + word[position + 2:]
    if edit == "drop":
        return word[:position] + word[position + 1:]
    if edit == "double":
        return word[:position] + word[position] + word[position:]
    letters = [c for c in "abcdefghijklmnopqrstuvwxyz" if c != word[position].lower()]
    return word[:position] + rng.choice(letters) + word[position + 1:]


def typo_in_mention(words: Sequence[str], rng: random.Random) -> list[str]:
    """A copy of a mention's ``words`` with a :func:`typo` in one word of 3+ characters (a
    mention without such a word comes back unchanged)."""
    words = list(words)
    candidates = [i for i, word in enumerate(words) if len(word) >= 3]
    if candidates:
        index = rng.choice(candidates)
        words[index] = typo(words[index], rng)
    return words


def unseen_name(label: str, rng: random.Random, vocabulary: set[str], tries: int = 20) -> list[str]:
    """An :func:`invented_name` none of whose words longer than 3 characters is in ``vocabulary``
    (lower-cased); after ``tries`` draws the last one is kept."""
    for _ in range(tries):
        words = invented_name(label, rng)
        if not any(word.lower() in vocabulary for word in words if len(word) > 3):
            break
    return words


def with_mentions(sentence: Sentence, entities: Sequence[Span], mentions: Sequence[Sequence[str]]) -> Sentence:
    """A copy of ``sentence`` whose ``entities`` (in order, not overlapping) read ``mentions``
    instead, gold spans moved to the new lengths; the other words are kept."""
    tokens: list[str] = []
    spans: list[Span] = []
    cursor = 0
    for entity, words in zip(entities, mentions):
        tokens.extend(sentence.tokens[cursor : entity.start])
        spans.append(Span(len(tokens), len(tokens) + len(words), entity.label))
        tokens.extend(words)
        cursor = entity.end
    tokens.extend(sentence.tokens[cursor:])
    return make_sentence(tokens, spans)


def is_unseen(words: Sequence[str], vocabulary: set[str]) -> bool:
    """True when a mention has a word longer than 3 characters and none of those is in
    ``vocabulary`` (lower-cased): the rule :func:`unseen_name` draws by."""
    long_words = [word.lower() for word in words if len(word) > 3]
    return bool(long_words) and not any(word in vocabulary for word in long_words)


def mention_forms(sentences: Iterable[Sentence], keep: Callable[[tuple[str, ...]], bool] = lambda words: True
                  ) -> dict[str, list[tuple[str, ...]]]:
    """Per entity type, the distinct surface forms of the mentions in ``sentences`` that ``keep``
    accepts (first-seen order, so draws from them are deterministic)."""
    pools: dict[str, dict[tuple[str, ...], None]] = {}
    for sentence in sentences:
        for entity in sentence.entities:
            words = tuple(sentence.tokens[entity.start : entity.end])
            if keep(words):
                pools.setdefault(entity.label, {})[words] = None
    return {label: list(forms) for label, forms in pools.items()}


def unseen_mentions(sentences: Iterable[Sentence], vocabulary: set[str]) -> dict[str, list[tuple[str, ...]]]:
    """Per entity type, the distinct surface forms in ``sentences`` that are unseen in ``vocabulary``."""
    return mention_forms(sentences, lambda words: is_unseen(words, vocabulary))


def real_unseen_name(original: Sequence[str], label: str, rng: random.Random,
                     pools: dict[str, list[tuple[str, ...]]]) -> list[str]:
    """Another real unseen mention of type ``label`` (not ``original`` itself when the pool has
    another); ``original`` unchanged when the pool of that type is empty."""
    choices = [form for form in pools.get(label, []) if list(form) != list(original)] or pools.get(label, [])
    return list(rng.choice(choices)) if choices else list(original)


def perturb_sentence(sentence: Sentence, kind: PerturbKind, rng: random.Random, vocabulary: set[str],
                     pools: dict[str, list[tuple[str, ...]]] | None = None) -> Sentence:
    """Perturb every entity of ``sentence``; sentences without entities come back unchanged
    (``pools``: :func:`unseen_mentions`, needed by ``oov-real``)."""
    if not sentence.entities:
        return sentence
    mentions = []
    for entity in sentence.entities:
        words = sentence.tokens[entity.start : entity.end]
        if kind == "typo":
            mentions.append(typo_in_mention(words, rng))
        elif kind == "oov":
            mentions.append(unseen_name(entity.label, rng, vocabulary))
        else:
            mentions.append(real_unseen_name(words, entity.label, rng, pools or {}))
    return with_mentions(sentence, sentence.entities, mentions)


def perturb(sentences: Sequence[Sentence], kind: PerturbKind, seed: int = 0,
            reference: Iterable[Sentence] = ()) -> list[Sentence]:
    """A perturbed copy of ``sentences``; the same seed gives the same copy."""
    if kind not in PERTURB_KINDS:
        raise ValueError(f"unknown perturbation {kind!r}; choose one of {', '.join(PERTURB_KINDS)}")
    rng = random.Random(f"{kind}:{seed}")
    vocabulary = {token.lower() for sentence in reference for token in sentence.tokens}
    pools = unseen_mentions(sentences, vocabulary) if kind == "oov-real" else None
    return [perturb_sentence(sentence, kind, rng, vocabulary, pools) for sentence in sentences]
