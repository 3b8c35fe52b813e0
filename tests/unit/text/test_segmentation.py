"""The raw-text splitter: hard cases with exact sentences and words, exact offsets, no crash."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkner.text.segment import Token, split_sentences, tokenize

CASES_FILE = Path(__file__).resolve().parents[2] / "data" / "segmentation_cases.jsonl"  # tests/data
CASES = [json.loads(line) for line in CASES_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]

BLANK_LINE = re.compile(r"\n[ \t\r]*\n")


def words_of(text: str) -> list[list[str]]:
    return [[token.text for token in sentence] for sentence in split_sentences(text)]


def assert_offsets(text: str, sentences: list[list[Token]]) -> None:
    flat = [token for sentence in sentences for token in sentence]
    for token in flat:
        assert text[token.start : token.end] == token.text
        assert token.text and not any(character.isspace() for character in token.text)
    assert all(a.end <= b.start for a, b in zip(flat, flat[1:])), "tokens overlap or go backwards"


def test_enough_hard_cases() -> None:
    assert len(CASES) >= 40
    assert all(case["sentences"] and case["note"] for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=[case["note"][:60] for case in CASES])
def test_hard_case(case: dict) -> None:
    assert words_of(case["text"]) == case["sentences"]
    assert_offsets(case["text"], split_sentences(case["text"]))


def test_tokenize_is_the_sentences_flattened() -> None:
    text = "Dr. Smith met Mr. Jones. He moved to St. Louis."
    assert tokenize(text) == [token for sentence in split_sentences(text) for token in sentence]
    assert [t.text for t in tokenize(text)][:3] == ["Dr.", "Smith", "met"]


@pytest.mark.parametrize("text", ["", " ", "\n\n\n", "\t \r\n", "\u200b", "\x00\x01\x1f\x7f", "\ud800 \udfff x",
                                  "\u202eمرحبا بالعالم\u202c.", "e\u0301\u0301\u0301 .", "x" * 100_000,
                                  "a." * 50_000, "- \n" * 20_000, "1. \n" * 20_000, "(" * 30_000, "'" * 30_000,
                                  "Mr. " * 20_000, "\U0001F600\U0001F600. \U0001F600"])
def test_hostile_input_never_crashes(text: str) -> None:
    sentences = split_sentences(text)
    assert_offsets(text, sentences)
    assert all(sentences), "no empty sentence"


def test_blank_line_always_ends_a_sentence() -> None:
    assert words_of("Dr.\n\nSmith") == [["Dr", "."], ["Smith"]]
    assert words_of("in the U.S.\n \nIt") == [["in", "the", "U.S", "."], ["It"]]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_offsets_are_exact_for_any_text(text: str) -> None:
    assert_offsets(text, split_sentences(text))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["Dr.", "U.S.", "Inc.", "J.", "3.5", "1996-08-22", "Jean-Luc", "O'Neill", ".", ",",
                                 '"', "(", ")", "...", "Smith", "the", "\n", "\n\n", " ", "e.g.", "https://x.org/a.b",
                                 "a@b.co", "- ", "1. ", "\u00e9", "\ud800", "\x00"]), max_size=40))
def test_offsets_are_exact_for_tricky_pieces(pieces: list[str]) -> None:
    text = " ".join(pieces)
    sentences = split_sentences(text)
    assert_offsets(text, sentences)
    for sentence in sentences:  # no sentence runs over a blank line
        assert not BLANK_LINE.search(text[sentence[0].start : sentence[-1].end])
