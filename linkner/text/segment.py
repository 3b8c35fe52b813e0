"""Splitting raw text into sentences of words with character offsets, in CoNLL-2003 style.

The segmentation and tokenization are syntok's (a rule-based segmenter that knows abbreviations,
initials, numbers, URLs and e-mail addresses). On top of it, a few CoNLL conventions:

* a period inside a sentence stays on its word (``Dr.``, ``Inc.``, ``J.``, ``U.S.``, ``e.g.``,
  ``1.``); the full stop that ends a sentence is a token of its own (``in the U.S`` ``.``);
* hyphenated words stay whole (``Jean-Luc``, ``well-known``; syntok drops the hyphen);
* names with an inner capital stay whole (``McLean``, ``DiCaprio``; syntok splits them);
* ``O'Neill`` / ``D'Arcy`` stay whole (``'s`` and ``n't`` are still split off);
* syntok keeps a sentence going after any word with a dot inside unless the next word is on its
  list of sentence starters; a full stop after an e-mail address or URL followed by a capitalised
  word, or after a dotted abbreviation followed by a pronoun (``in the U.S. He said``), ends one;
* a blank line always ends a sentence, and so does a new line that starts a list item
  (``- ``, ``* ``, ``• ``, ``1. ``, ``2) ``);
* a single line break ends a sentence unless the next line starts with a lower-case letter (a
  wrapped line of prose goes on; headlines, datelines and table rows are lines of their own).

Every token's text is ``text[token.start:token.end]``; no input makes it raise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

from syntok.segmenter import segment as _syntok_segment
from syntok.tokenizer import Tokenizer as _SyntokTokenizer

# A blank line (paragraph break), or a line break before a list item: both start a new block.
_BLOCK_BREAK = re.compile(
    r"\n[^\S\n]*\n\s*"  # blank line(s)
    r"|[\u2029\f]\s*"  # paragraph separator, form feed
    r"|\n(?=[^\S\n]*(?:[-*\u2022\u2023\u25e6\u25aa\u2013\u2014]|\(?\d{1,3}[.)])[^\S\n])"  # list item
)
_LINE_BREAK = re.compile(r"\n[^\S\n]*(?=\S)")
_WHITESPACE_FREE = re.compile(r"\S+")
_CLOSING = frozenset({'"', "'", ")", "]", "}", "\u00bb", "\u201d", "\u2019", "`", "''"})
_APOSTROPHES = ("'", "\u2019")
_JOINERS = frozenset("-_\u00ad\u058a\u05be\u1400\u1806\u2010\u2011\u2012\u2e17\u30a0")  # syntok drops these

_WEB_ADDRESS = re.compile(r"@|://|^www\.", re.IGNORECASE)
_PRONOUN_STARTERS = frozenset("I He She We They You His Her Their Our My Then But There".split())

_tokenizer = _SyntokTokenizer(replace_not_contraction=False)


@dataclass(frozen=True)
class Token:
    """A word or punctuation mark and its character offsets in the original text (end exclusive)."""

    text: str
    start: int
    end: int


def split_sentences(text: str) -> list[list[Token]]:
    """Sentences of CoNLL-style tokens with exact character offsets into ``text``."""
    sentences: list[list[Token]] = []
    for start, end in _blocks(text):
        # offsets are shifted here: syntok's own base_offset pads the text with that many spaces
        for syntok_sentence in _syntok_segment(_tokenizer.tokenize(text[start:end])):
            for raw in _missed_breaks(syntok_sentence):
                sentence = _conll_tokens(text, raw, start)
                if sentence:
                    sentences.append(sentence)
    return sentences


def tokenize(text: str) -> list[Token]:
    """All tokens of ``text`` in order, sentence boundaries dropped."""
    return [token for sentence in split_sentences(text) for token in sentence]


def _blocks(text: str) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of the stretches between blank lines, before list items, and at line breaks
    not followed by a lower-case letter."""
    start = 0
    for match in _BLOCK_BREAK.finditer(text):
        if match.start() > start:
            yield from _lines(text, start, match.start())
        start = match.end()
    if start < len(text):
        yield from _lines(text, start, len(text))


def _lines(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Cut ``text[start:end]`` at line breaks whose next line does not start in lower case."""
    for match in _LINE_BREAK.finditer(text, start, end):
        if not text[match.end()].islower():
            if match.start() > start:
                yield start, match.start()
            start = match.end()
    if start < end:
        yield start, end


def _missed_breaks(raw: list) -> Iterator[list]:
    """Cut a syntok sentence after a full stop that syntok took for an abbreviation's dot when the
    word before it is an e-mail address or URL (then a capitalised word follows) or when a pronoun
    follows."""
    start = 0
    for index in range(1, len(raw) - 1):
        stop, before, after = raw[index], raw[index - 1].value, raw[index + 1]
        if stop.value != "." or stop.spacing or not after.spacing.isspace():
            continue
        if (_WEB_ADDRESS.search(before) and after.value[:1].isupper()) or (
                "." in before and after.value in _PRONOUN_STARTERS):
            yield raw[start : index + 1]
            start = index + 1
    yield raw[start:]


def _conll_tokens(text: str, raw: list, base: int) -> list[Token]:
    """One syntok sentence (offsets from ``base``) as :class:`Token` s, with the CoNLL conventions."""
    pieces: list[list[int]] = []  # [start, end] pairs, merged in place
    for token in raw:
        if not token.value:
            continue
        start = base + token.offset
        end = start + len(token.value)
        if pieces and _joins(text, pieces[-1], start):
            pieces[-1][1] = end
        else:
            pieces.append([start, end])
    tokens: list[Token] = []
    for start, end in _attach_inner_periods(text, pieces):
        # never a token with whitespace inside (syntok's idea of a space is narrower than Python's)
        for match in _WHITESPACE_FREE.finditer(text, start, end):
            tokens.append(Token(match.group(), match.start(), match.end()))
    return tokens


def _joins(text: str, previous: list[int], start: int) -> bool:
    """Whether a token starting at ``start`` continues the previous one: a hyphen or underscore
    between them (syntok leaves it out of both), a lower-to-upper case change (syntok splits
    ``McLean``, ``DiCaprio``, ``iPhone``) or an ``O'Neill``-style name."""
    between = text[previous[1] : start]
    if between:
        return len(between) == 1 and between in _JOINERS
    before = text[previous[0] : previous[1]]
    after = text[start : start + 2]
    if before[-1:].islower() and before[-1].isalpha() and after[:1].isupper():
        return True
    return (len(before) == 1 and before.isalpha() and before.isupper() and len(after) == 2
            and after[0] in _APOSTROPHES and after[1].isupper())


def _attach_inner_periods(text: str, pieces: list[list[int]]) -> list[list[int]]:
    """Glue a ``.`` to the word right before it unless it ends the sentence (only closing
    quotes or brackets after it): ``Dr.`` ``Inc.`` ``U.S.`` mid-sentence, ``U.S`` ``.`` at the end."""
    last_content = len(pieces) - 1
    while last_content >= 0 and text[pieces[last_content][0] : pieces[last_content][1]] in _CLOSING:
        last_content -= 1
    merged: list[list[int]] = []
    for index, (start, end) in enumerate(pieces):
        if (merged and index < last_content and text[start:end] == "." and merged[-1][1] == start
                and text[start - 1].isalnum()):
            merged[-1] = [merged[-1][0], end]
        else:
            merged.append([start, end])
    return merged
