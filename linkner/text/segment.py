"""Splitting raw text into sentences of words with character offsets (CoNLL-style tokens:
punctuation apart, abbreviations like ``U.S.`` and numbers like ``1996-08-22`` or ``3.5`` kept)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(
    r"(?:[A-Za-z]\.){2,}"  # U.S.  e.g.
    r"|\d+(?:[.,:/-]\d+)*"  # 1996-08-22  3.5  1,000  10:30
    r"|\w+(?:[-'’]\w+)*"  # words, hyphenated words, don't
    r"|[^\w\s]",  # any other single character
    re.UNICODE,
)
_SENTENCE_END = {".", "!", "?"}
_CLOSERS = {'"', "'", ")", "]", "»", "”", "’"}


@dataclass(frozen=True)
class Token:
    text: str
    start: int  # character offset in the original text
    end: int


def tokenize(text: str) -> list[Token]:
    """Words and punctuation with their character offsets."""
    return [Token(match.group(), match.start(), match.end()) for match in _TOKEN.finditer(text)]


def split_sentences(text: str) -> list[list[Token]]:
    """Sentences of tokens: a break after ``.``, ``!`` or ``?`` (and closing quotes or brackets),
    and at blank lines."""
    sentences: list[list[Token]] = []
    current: list[Token] = []
    tokens = tokenize(text)
    for index, token in enumerate(tokens):
        if current and "\n\n" in text[current[-1].end : token.start].replace("\r", ""):
            sentences.append(current)
            current = []
        current.append(token)
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        ends = token.text in _SENTENCE_END or (token.text in _CLOSERS and len(current) > 1
                                               and current[-2].text in _SENTENCE_END)
        if ends and (following is None or following.text not in _CLOSERS):
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences
