"""Raw-text benchmark: CoNLL-2003 documents detokenised into plain text, sent through the service's
own path (``prepare_document`` then ``SpanPredictor.predict``), scored by exact character spans
against the gold entities; beside it the same checkpoint on the gold pre-tokenized sentences.
Prints a markdown table; writes JSON and markdown under benchmarks/results/.

    python -m benchmarks.raw_text [--model artifacts/models/default] [--data test.txt] [--limit N] [--quick]
"""

from __future__ import annotations

import argparse
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence
from unittest import mock

from tqdm import tqdm

from benchmarks.common import argument_parser, default_data_dir, markdown_table, write_results
from linkner.data.readers import DOCSTART
from linkner.data.spans import Sentence, Span, make_sentence
from linkner.data.tags import tags_to_spans
from linkner.evaluation.scores import entity_scores
from linkner.service import documents as service_documents
from linkner.service.limits import ServiceLimits
from linkner.text.segment import Token
from protos.protocol import RecognizeRequest

DEFAULT_DATA = default_data_dir() / "test.txt"
GENEROUS_LIMITS = ServiceLimits(max_chars=10_000_000, max_words=10_000_000, max_word_chars=100_000)

_NO_SPACE_BEFORE = {".", ",", ";", ":", "!", "?", ")", "]", "}", "%", "...", "'s", "'S", "n't", "N'T", "'m", "'re",
                    "'ve", "'ll", "'d"}
_NO_SPACE_AFTER = {"(", "[", "{", "$"}


# --------------------------------------------------------------------------- data


@dataclass
class RawDocument:
    """A CoNLL document as plain text, its gold sentences and gold entities as character spans."""

    text: str
    sentences: list[Sentence]
    token_offsets: list[list[tuple[int, int]]]  # per sentence, per token: (start, end) in ``text``
    entities: list[Span]  # character offsets, end exclusive


def read_documents(path: str | Path) -> list[list[Sentence]]:
    """The sentences of a CoNLL IOB2 file grouped by ``-DOCSTART-`` document."""
    documents: list[list[Sentence]] = [[]]
    block: list[tuple[str, str]] = []

    def flush() -> None:
        if block:
            documents[-1].append(make_sentence([t for t, _ in block], tags_to_spans([g for _, g in block])))
            block.clear()

    for line in Path(path).read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if fields and fields[0] == DOCSTART:
            flush()
            documents.append([])
        elif not fields:
            flush()
        else:
            block.append((fields[0], fields[-1]))
    flush()
    return [document for document in documents if document]


def detokenize(sentences: Sequence[Sequence[str]], separator: str = " ") -> tuple[str, list[list[tuple[int, int]]]]:
    """Plain text from tokenised sentences and each token's ``(start, end)`` in it.

    No space before closing punctuation (``. , ; : ! ? ) ] } %``, ``'s``, ``n't``...) or after
    opening brackets; straight double quotes alternate between opening and closing; sentences are
    joined by ``separator``."""
    pieces: list[str] = []
    offsets: list[list[tuple[int, int]]] = []
    length = 0
    for number, sentence in enumerate(sentences):
        if number:
            pieces.append(separator)
            length += len(separator)
        quote_open = False
        sentence_offsets = []
        previous = None
        for token in sentence:
            if token == '"':  # a closing quote sticks to the word before it
                glue = previous is None or quote_open or previous in _NO_SPACE_AFTER
                quote_open = not quote_open
            else:  # ... and an opening quote to the word after it
                glue = (previous is None or token in _NO_SPACE_BEFORE or previous in _NO_SPACE_AFTER
                        or (previous == '"' and quote_open))
            if not glue:
                pieces.append(" ")
                length += 1
            sentence_offsets.append((length, length + len(token)))
            pieces.append(token)
            length += len(token)
            previous = token
        offsets.append(sentence_offsets)
    return "".join(pieces), offsets


def raw_document(sentences: list[Sentence], separator: str = " ") -> RawDocument:
    """Detokenise one document and move its gold entities to character spans."""
    text, offsets = detokenize([s.tokens for s in sentences], separator)
    entities = [Span(offsets[i][span.start][0], offsets[i][span.end - 1][1], span.label)
                for i, sentence in enumerate(sentences) for span in sentence.entities]
    return RawDocument(text, sentences, offsets, entities)


# --------------------------------------------------------------------------- the old splitter, for comparison


_OLD_TOKEN = re.compile(r"(?:[A-Za-z]\.){2,}|\d+(?:[.,:/-]\d+)*|\w+(?:[-'’]\w+)*|[^\w\s]", re.UNICODE)
_OLD_CLOSERS = {'"', "'", ")", "]", "»", "”", "’"}


def regex_split_sentences(text: str) -> list[list[Token]]:
    """The hand-written regex splitter the project used before syntok (breaks at every ``.``)."""
    sentences: list[list[Token]] = []
    current: list[Token] = []
    tokens = [Token(m.group(), m.start(), m.end()) for m in _OLD_TOKEN.finditer(text)]
    for index, token in enumerate(tokens):
        if current and "\n\n" in text[current[-1].end : token.start].replace("\r", ""):
            sentences.append(current)
            current = []
        current.append(token)
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        ends = token.text in {".", "!", "?"} or (token.text in _OLD_CLOSERS and len(current) > 1
                                                 and current[-2].text in {".", "!", "?"})
        if ends and (following is None or following.text not in _OLD_CLOSERS):
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


SPLITTERS: dict[str, Callable[[str], list[list[Token]]] | None] = {
    "syntok + CoNLL conventions (linkner)": None,  # the service's own splitter
    "regex (old)": regex_split_sentences,
}


@contextmanager
def service_splitter(splitter: Callable[[str], list[list[Token]]] | None) -> Iterator[None]:
    """Run ``prepare_document`` with another splitter (None: the service's own)."""
    if splitter is None:
        yield
        return
    with mock.patch.object(service_documents, "split_sentences", splitter):
        yield


# --------------------------------------------------------------------------- scoring


def raw_text_entities(predictor, document: RawDocument) -> tuple[list[Span], int]:
    """Entities the service path finds in the document's text, as character spans; and its sentence count."""
    prepared = service_documents.prepare_document(RecognizeRequest(text=document.text), GENEROUS_LIMITS)
    found = []
    for number, entities in enumerate(predictor.predict(prepared.sentences)):
        first = prepared.first_word[number]
        for entity in entities:
            words = prepared.words[first + entity.start], prepared.words[first + entity.end - 1]
            found.append(Span(words[0].char_start, words[1].char_end, entity.label))
    return found, len(prepared.sentences)


def evaluate(predictor, documents: list[RawDocument], splitters: Sequence[str] = tuple(SPLITTERS),
             progress: bool = True) -> dict:
    """Raw-text F1 for each splitter and the pre-tokenized F1, with timings."""
    started = time.perf_counter()
    gold_sentences = [sentence for document in documents for sentence in document.sentences]
    predicted = predictor.predict([s.tokens for s in tqdm(gold_sentences, desc="pre-tokenized", disable=not progress)])
    pre_scores = entity_scores([s.entities for s in gold_sentences], [[e.span for e in p] for p in predicted])
    pre_seconds = time.perf_counter() - started
    rows = []
    for name in splitters:
        started = time.perf_counter()
        found, sentence_count = [], 0
        with service_splitter(SPLITTERS[name]):
            for document in tqdm(documents, desc=name, disable=not progress):
                entities, count = raw_text_entities(predictor, document)
                found.append(entities)
                sentence_count += count
        scores = entity_scores([d.entities for d in documents], found)
        rows.append({"segmenter": name, "sentences": sentence_count, "raw_text_f1": scores.micro.f1,
                     "pre_tokenized_f1": pre_scores.micro.f1, "difference": scores.micro.f1 - pre_scores.micro.f1,
                     "seconds": time.perf_counter() - started, "raw_text_scores": scores.model_dump()})
    return {"documents": len(documents), "gold_sentences": len(gold_sentences),
            "gold_entities": sum(len(d.entities) for d in documents), "characters": sum(len(d.text) for d in documents),
            "pre_tokenized_f1": pre_scores.micro.f1, "pre_tokenized_seconds": pre_seconds,
            "pre_tokenized_scores": pre_scores.model_dump(), "rows": rows}


def markdown(report: dict) -> str:
    return "\n".join([
        f"{report['documents']} documents, {report['gold_sentences']} gold sentences, "
        f"{report['gold_entities']} gold entities, {report['characters']} characters "
        f"(pre-tokenized pass: {report['pre_tokenized_seconds']:.1f} s)", "",
        markdown_table(["segmenter", "sentences", "raw-text F1", "pre-tokenized F1", "difference", "seconds"],
                       [(row["segmenter"], row["sentences"], f"{100 * row['raw_text_f1']:.2f}",
                         f"{100 * row['pre_tokenized_f1']:.2f}", f"{100 * row['difference']:+.2f}",
                         f"{row['seconds']:.1f}") for row in report["rows"]])])


def load_documents(path: Path, limit: int | None, separator: str = " ") -> list[RawDocument]:
    documents = read_documents(path)
    return [raw_document(d, separator) for d in (documents[:limit] if limit else documents)]


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, model=True, out_dir=True, quick="the first 20 documents (unless --limit)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CoNLL IOB2 file with -DOCSTART- lines")
    parser.add_argument("--limit", type=int, default=None, help="first N documents only")
    parser.add_argument("--separator", choices=["newline", "space", "both"], default="both",
                        help="what joins a document's CoNLL lines in the raw text: a line break (the newswire's "
                             "own layout: headline, dateline, table rows on lines of their own), a space "
                             "(everything run together), or both, one after the other")
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    import torch

    from linkner.model.predictor import SpanPredictor

    if args.threads:
        torch.set_num_threads(args.threads)
    limit = args.limit or (20 if args.quick else None)
    predictor = SpanPredictor.from_checkpoint(args.model)
    separators = ["newline", "space"] if args.separator == "both" else [args.separator]
    report: dict = {"model": str(args.model), "data": str(args.data), "separators": separators}
    for separator in separators:
        documents = load_documents(args.data, limit, " " if separator == "space" else "\n")
        report[separator] = evaluate(predictor, documents)
    table = "\n\n".join(f"Lines joined by a {separator}:\n\n{markdown(report[separator])}" for separator in separators)
    write_results(args.out_dir / "raw_text.json", report, table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
