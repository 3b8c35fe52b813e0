"""Hostile requests for the live gRPC API: hypothesis strategies, their wire encoding (a string
field may hold invalid UTF-8, as some clients send a lone UTF-16 surrogate), one call, and what a
correct outcome is. Used by ``tests/benchmarks/test_reliability.py`` (a bounded number of examples)
and ``benchmarks.reliability`` (more)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from hypothesis import strategies as st

from clients.client import varint
from protos.linkner.v1 import linkner_pb2 as pb

METHODS = ("Recognize", "RecognizeBatch", "RecognizeStream")
# answers a hostile request may get; INTERNAL and UNKNOWN never (they mean a bug)
ACCEPTED = {"OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}
SPECIALS = ["\x00", "\x01", "\x1b", "\x7f", "\u0085", "\u202e", "\u200f", "\u0301", "\u200d", "\ufeff", "\r\n", "\t",
            "\u2028", "\ud800", "\udfff", "\U0001f600", "\u0627\u0644\u0642\u062f\u0633", "e\u0301\u0301", " ", "."]
HUGE_TEXTS = ["", " ", "x" * 100_000, "x" * 100_001, "Paris is nice . " * 6_000, ("John Smith visited Paris . " * 4_000)[:100_000],
              "a " * 50_000, "\u0301" * 50_000, "\n" * 100_000]


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes, message)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def encode_text(text: str) -> bytes:
    """UTF-8, lone surrogates encoded as such (invalid UTF-8, as some clients send them)."""
    return text.encode("utf-8", "surrogatepass")


@dataclass
class Hostile:
    """One request: the method and its wire bytes, plus a short description."""

    method: str
    raw: bytes
    texts: list[str]
    summary: str


def recognize_request(text: str, words: list[bytes], options: pb.Options | None) -> bytes:
    head = pb.RecognizeRequest(words=words, options=options) if options is not None else pb.RecognizeRequest(words=words)
    return head.SerializeToString() + (_field(1, encode_text(text)) if text else b"")


def batch_request(items: list[bytes], options: pb.Options | None) -> bytes:
    tail = _field(2, options.SerializeToString()) if options is not None else b""
    return b"".join(_field(1, item) for item in items) + tail


FLOATS = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([float("nan"), float("inf"), -float("inf"), -0.0, 1.0000001, 1e308]))


@st.composite
def options(draw: Any) -> pb.Options | None:
    if draw(st.booleans()):
        return None
    message = pb.Options(
        estimator=draw(st.one_of(st.just(""), st.just(""), st.sampled_from(["confidence", "entropy", "vibes"]),
                                 st.text(max_size=8))),
        policy=draw(st.one_of(st.just(""), st.just(""), st.sampled_from(["none", "threshold", "budget", "sometimes"]),
                              st.text(max_size=8))),
        return_candidates=draw(st.booleans()), return_words=draw(st.booleans()))
    for name in ("threshold", "budget"):
        value = draw(st.one_of(st.none(), st.none(), FLOATS))
        if value is not None:
            setattr(message, name, value)
    spans = draw(st.one_of(st.none(), st.none(), st.integers(-(2**31), 2**31 - 1)))
    if spans is not None:
        message.max_llm_spans = spans
    return message


TEXT = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=300),  # any code point, surrogates too
    st.lists(st.sampled_from(SPECIALS + list("Paris John Smith")), max_size=200).map("".join),
    st.sampled_from(HUGE_TEXTS),
    st.builds(lambda n: "Anna Berg visited Lima . " * n, st.integers(1, 3_000)),
)
WORDS = st.one_of(st.just([]), st.just([]), st.just([]), st.lists(st.binary(max_size=24), max_size=12),
                  st.lists(st.sampled_from([b"Paris", b"x" * 100_000, b"\xed\xa0\x80", b"\x00", b"a b", b""]), max_size=6))


@st.composite
def hostile_requests(draw: Any) -> Hostile:
    """A request of any method: random or huge texts (and words), options out of range, NaN and infinities,
    empty or huge batches and streams."""
    method = draw(st.sampled_from(METHODS))
    opts = draw(options())
    if method == "Recognize":
        text, words = draw(TEXT), draw(WORDS)
        return Hostile(method, recognize_request(text, words, opts), [text],
                       f"text[{len(text)}] words[{len(words)}]")
    count = draw(st.one_of(st.integers(0, 6), st.sampled_from([256, 257, 1_000])))
    if count > 6:  # a huge batch or stream: short texts (the message stays under gRPC's 4 MB)
        texts = [draw(st.sampled_from(["Anna Berg visited Lima .", "", "\ud800", "x" * 300]))] * count
    else:
        texts = [draw(TEXT) for _ in range(count)]
    return Hostile(method, batch_request([recognize_request(t, [], None) for t in texts], opts), texts,
                   f"{count} items, longest {max(map(len, texts), default=0)}")


def call(channel: grpc.Channel, request: Hostile, timeout_s: float = 120.0) -> tuple[str, list]:
    """Send ``request`` as raw bytes; the status name and the responses that came back."""
    stream = request.method == "RecognizeStream"
    path = f"/linkner.v1.LinkNER/{request.method}"
    parse = (pb.RecognizeBatchResponse if request.method == "RecognizeBatch" else pb.RecognizeResponse).FromString
    method = (channel.unary_stream if stream else channel.unary_unary)(path, request_serializer=None,
                                                                       response_deserializer=parse)
    responses: list = []
    try:
        answer = method(request.raw, timeout=timeout_s)
        if stream:
            responses.extend(answer)
        else:
            responses = list(answer.results) if request.method == "RecognizeBatch" else [answer]
    except grpc.RpcError as error:
        return error.code().name, responses
    return "OK", responses


def wrong_slices(request: Hostile, responses: list) -> list[str]:
    """Entities whose character slice of the request text is not their text."""
    problems = []
    for text, response in zip(request.texts, responses):
        for entity in response.entities:
            if entity.char_start >= 0 and text[entity.char_start : entity.char_end] != entity.text:
                problems.append(f"{entity.text!r} at {entity.char_start}:{entity.char_end}")
    return problems
