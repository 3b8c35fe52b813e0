"""Readers and writers for CoNLL-style column files and JSON lines.

Every problem in an input file raises :class:`DataFormatError`, whose message names the
file, the 1-based line and what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from linkner.data.spans import Sentence, Span, make_sentence
from linkner.data.tags import TagError, TagScheme, spans_to_tags, tags_to_spans

DOCSTART = "-DOCSTART-"


class DataFormatError(ValueError):
    """Malformed input: ``path:line: message``."""

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = str(path)
        self.line = line
        self.message = message


# --------------------------------------------------------------------------- CoNLL


def read_conll(
    path: str | Path, scheme: TagScheme = "iob2", strict: bool = False
) -> list[Sentence]:
    """Read a column file: token in the first column, tag in the last, blank lines between
    sentences, ``-DOCSTART-`` lines ignored. All data lines must have the same column count."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    sentences: list[Sentence] = []
    for block in _conll_blocks(path):
        tokens = [token for _, token, _ in block]
        tags = [tag for _, _, tag in block]
        try:
            spans = tags_to_spans(tags, scheme=scheme, strict=strict)
        except TagError as error:
            raise DataFormatError(path, block[error.index][0], error.message) from None
        sentences.append(make_sentence(tokens, spans))
    return sentences


def conll_documents(path: str | Path) -> list[int]:
    """The document index (0, 1, ...) of each sentence :func:`read_conll` reads from ``path``: a
    ``-DOCSTART-`` line starts a new document (a file without any is one document)."""
    documents: list[int] = []
    document, inside = 0, False
    for _, raw in _numbered_lines(Path(path)):
        fields = raw.split()
        if fields and fields[0] == DOCSTART:
            document += 1 if documents else 0
            inside = False
        elif not fields:
            inside = False
        elif not inside:
            documents.append(document)
            inside = True
    return documents


def _conll_blocks(path: Path) -> Iterator[list[tuple[int, str, str]]]:
    """Yield sentences as lists of ``(line number, token, tag)``."""
    columns: int | None = None
    block: list[tuple[int, str, str]] = []
    for number, raw in _numbered_lines(path):
        fields = raw.split()
        if not fields or fields[0] == DOCSTART:
            if block:
                yield block
            block = []
            continue
        if len(fields) < 2:
            raise DataFormatError(path, number, f"expected a token and a tag, found {len(fields)} column")
        if columns is None:
            columns = len(fields)
        elif len(fields) != columns:
            raise DataFormatError(
                path, number, f"wrong column count: {len(fields)} columns, the file started with {columns}"
            )
        block.append((number, fields[0], fields[-1]))
    if block:
        yield block


def _numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(1-based line number, text)``, naming the line of any invalid UTF-8."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataFormatError(path, number, f"not valid UTF-8 ({error.reason})") from None


def write_conll(path: str | Path, sentences: Iterable[Sentence], scheme: TagScheme = "iob2") -> None:
    """Write ``token<TAB>tag`` lines with a blank line after each sentence."""
    with Path(path).open("w", encoding="utf-8") as handle:
        for sentence in sentences:
            for token, tag in zip(sentence.tokens, spans_to_tags(len(sentence), sentence.entities, scheme)):
                if not token or any(character.isspace() for character in token):
                    raise ValueError(f"token {token!r} cannot be written to a column file")
                handle.write(f"{token}\t{tag}\n")
            handle.write("\n")


# --------------------------------------------------------------------------- JSON lines


class JsonEntity(BaseModel):
    """One entity of a JSON-lines record; ``end`` is exclusive."""

    model_config = ConfigDict(extra="ignore")
    start: int = Field(ge=0)
    end: int = Field(gt=0)
    label: str = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> "JsonEntity":
        if self.end <= self.start:
            raise ValueError(f"entity end {self.end} must be greater than start {self.start}")
        return self


class JsonSentence(BaseModel):
    """A JSON-lines record: ``{"tokens": [...], "entities": [{"start", "end", "label"}]}``."""

    model_config = ConfigDict(extra="ignore")
    tokens: list[str] = Field(min_length=1)
    entities: list[JsonEntity] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> "JsonSentence":
        if any(not token for token in self.tokens):
            raise ValueError("tokens must be non-empty strings")
        ordered = sorted(self.entities, key=lambda entity: (entity.start, entity.end))
        for entity in ordered:
            if entity.end > len(self.tokens):
                raise ValueError(f"entity [{entity.start}, {entity.end}) runs past {len(self.tokens)} tokens")
        for first, second in zip(ordered, ordered[1:]):
            if second.start < first.end:
                raise ValueError(f"entities [{first.start}, {first.end}) and [{second.start}, {second.end}) overlap")
        return self


def read_jsonl(path: str | Path) -> list[Sentence]:
    """Read one JSON object per line (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    return [
        _parse_json_sentence(path, number, raw) for number, raw in _numbered_lines(path) if raw.strip()
    ]


def _parse_json_sentence(path: Path, number: int, raw: str) -> Sentence:
    try:
        record = JsonSentence.model_validate_json(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "record"
        message = first["msg"].removeprefix("Value error, ")
        raise DataFormatError(path, number, f"{where}: {message}") from None
    spans = [Span(entity.start, entity.end, entity.label) for entity in record.entities]
    return make_sentence(record.tokens, spans)


def write_jsonl(path: str | Path, sentences: Iterable[Sentence]) -> None:
    """Write sentences as JSON lines."""
    with Path(path).open("w", encoding="utf-8") as handle:
        for sentence in sentences:
            record = {
                "tokens": list(sentence.tokens),
                "entities": [{"start": s.start, "end": s.end, "label": s.label} for s in sentence.entities],
            }
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- dispatch

JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


def read_dataset(path: str | Path, scheme: TagScheme = "iob2", strict: bool = False) -> list[Sentence]:
    """Read a data file, choosing the format from its suffix (JSON lines or column file)."""
    path = Path(path)
    if path.suffix.lower() in JSONL_SUFFIXES:
        return read_jsonl(path)
    return read_conll(path, scheme=scheme, strict=strict)


def write_dataset(path: str | Path, sentences: Iterable[Sentence]) -> None:
    """Write a data file in the format its suffix names."""
    if Path(path).suffix.lower() in JSONL_SUFFIXES:
        write_jsonl(path, sentences)
    else:
        write_conll(path, sentences)
