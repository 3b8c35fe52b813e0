"""Word casing classes: the default encoder is uncased, so the span model gets casing back."""

from __future__ import annotations

from functools import lru_cache

PAD, LOWER, UPPER, TITLE, MIXED, NUMERIC, HAS_DIGIT, PUNCT, OTHER = range(9)
NUM_CASING_CLASSES = 9


@lru_cache(maxsize=1 << 16)  # words repeat: the batcher asks about every word of every sentence
def casing_class(word: str) -> int:
    """Classify a word's shape: lower, UPPER, Title, mIxed, numeric, has-digit, punctuation, other."""
    if not word:
        return OTHER
    letters = [character for character in word if character.isalpha()]
    digits = sum(character.isdigit() for character in word)
    if digits == len(word):
        return NUMERIC
    if digits:
        return HAS_DIGIT
    if not letters:
        return PUNCT if all(not character.isalnum() for character in word) else OTHER
    if all(character.islower() for character in letters):
        return LOWER
    if all(character.isupper() for character in letters):
        return UPPER
    if letters[0].isupper() and all(character.islower() for character in letters[1:]):
        return TITLE
    return MIXED
