"""Validating a request and splitting it into sentences of words with character offsets."""

from __future__ import annotations

from dataclasses import dataclass

from linkner.service.limits import ServiceLimits
from linkner.text.segment import split_sentences
from protos.protocol import InvalidRequest, RecognizeRequest, Word


@dataclass
class Document:
    """A request's words grouped in sentences, with character offsets (-1 for given words); the
    words are built unchecked (``model_construct``): the segmenter's offsets are ints already."""

    sentences: list[list[str]]
    words: list[Word]
    first_word: list[int]  # document index of each sentence's first word


def prepare_document(request: RecognizeRequest, limits: ServiceLimits) -> Document:
    """Validate and split a request; raise :class:`InvalidRequest` naming the problem."""
    if request.text and request.words:
        raise InvalidRequest("give either text or words, not both")
    if not request.text.strip() and not request.words:
        raise InvalidRequest("empty request: text is empty and no words were given")
    if len(request.text) > limits.max_chars:
        raise InvalidRequest(f"text too long: {len(request.text)} characters, the limit is {limits.max_chars}")
    if request.words:
        if len(request.words) > limits.max_words:
            raise InvalidRequest(f"too many words: {len(request.words)}, the limit is {limits.max_words}")
        characters = sum(len(word) for word in request.words)
        if characters > limits.max_chars:
            raise InvalidRequest(f"words too long: {characters} characters together, the limit is {limits.max_chars}")
        for index, word in enumerate(request.words):
            _check_word(index, word, limits)
        words = [Word.model_construct(text=word, char_start=-1, char_end=-1, sentence=0) for word in request.words]
        return Document(sentences=[list(request.words)], words=words, first_word=[0])
    sentences, words, first = [], [], []
    for number, tokens in enumerate(split_sentences(request.text)):
        first.append(len(words))
        sentences.append([token.text for token in tokens])
        words += [Word.model_construct(text=t.text, char_start=t.start, char_end=t.end, sentence=number)
                  for t in tokens]
    if not words:
        raise InvalidRequest("text has no words")
    if len(words) > limits.max_words:
        raise InvalidRequest(f"too many words: {len(words)}, the limit is {limits.max_words}")
    return Document(sentences=sentences, words=words, first_word=first)


def _check_word(index: int, word: str, limits: ServiceLimits) -> None:
    if not word:
        raise InvalidRequest(f"words[{index}] is empty")
    if len(word) > limits.max_word_chars:
        raise InvalidRequest(f"words[{index}] is {len(word)} characters long, the limit is {limits.max_word_chars}")
    if any(character.isspace() for character in word):
        raise InvalidRequest(f"words[{index}] contains whitespace: {word[:40]!r}")
    if any(0xD800 <= ord(character) <= 0xDFFF for character in word) or "\ufffd" in word:
        raise InvalidRequest(f"words[{index}] is not valid UTF-8 text: {word[:40]!r}")
    if any(ord(character) < 32 or ord(character) == 127 for character in word):
        raise InvalidRequest(f"words[{index}] contains control characters: {word[:40]!r}")


def check_batch(items: int, limits: ServiceLimits, characters: int = 0) -> None:
    """Refuse an empty batch, or one over the item or character limit (``characters``: of every
    item's text or words together)."""
    if not items:
        raise InvalidRequest("empty batch: no items")
    if items > limits.max_batch_items:
        raise InvalidRequest(f"batch too large: {items} items, the limit is {limits.max_batch_items}")
    if characters > limits.max_batch_chars:
        raise InvalidRequest(f"batch too large: {characters} characters, the limit is {limits.max_batch_chars}")
