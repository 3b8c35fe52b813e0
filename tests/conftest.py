"""Shared fixtures: real CoNLL paths (skipped when absent), a tiny random encoder, a toy corpus."""

from __future__ import annotations

import os
import random

# Ray reads this when it is imported: keep every Ray node of the tests on loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# The tests start Ray nodes (fork + exec) from a process with gRPC calls in flight (the load of the
# reliability tests): gRPC's own fork handlers are for a child that goes on using gRPC, and with calls
# in flight a node's child once crashed (SIGSEGV) in CI. gRPC's advice for fork + exec: switch them off.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
from pathlib import Path

import pytest

from linkner.data.spans import Sentence, Span, make_sentence

ROOT = Path(__file__).resolve().parent.parent
CONLL_DIR = Path(os.environ.get("LINKNER_CONLL_DIR", ROOT.parent / "shared" / "data" / "conll2003"))

PEOPLE = ["John Smith", "Mary Jones", "Ali Khan", "Anna Berg", "Peter Blackburn", "Li Wei", "Carlos Ruiz"]
PLACES = ["Paris", "London", "New York", "Berlin", "Tokyo", "Cairo", "Lima"]
ORGS = ["Reuters", "Acme Corp", "United Nations", "Bayern Munich", "Google", "Toyota"]
TEMPLATES = [
    "{PER} visited {LOC} yesterday .",
    "{ORG} said {PER} will move to {LOC} .",
    "in {LOC} , {ORG} opened a new office .",
    "the talks between {ORG} and {PER} ended .",
    "{PER} left {ORG} last week .",
    "nothing happened today .",
]


# ---------------------------------------------------------------- CI=true: a skipped test fails the run

_SKIPPED: list[tuple[str, str]] = []  # (test id, reason) of this session's skips


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_sessionstart(session: pytest.Session) -> None:
    _SKIPPED.clear()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record skipped tests (an expected failure is not a skip)."""
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append((report.nodeid, _skip_reason(report)))


def pytest_deselected(items: list[pytest.Item]) -> None:
    """Record deselected tests (``-k``, ``--deselect``): under CI they fail the run like skips."""
    _SKIPPED.extend((item.nodeid, "deselected") for item in items)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """Record modules skipped while collecting (``pytest.skip(allow_module_level=True)``, importorskip)."""
    if report.skipped:
        _SKIPPED.append((report.nodeid, _skip_reason(report)))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under ``CI=true`` a run with skipped tests fails: CI must run every test."""
    if _SKIPPED and _in_ci() and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: "pytest.TerminalReporter") -> None:
    if _SKIPPED and _in_ci():
        terminalreporter.section("CI=true: skipped tests fail the run", sep="=", red=True, bold=True)
        for nodeid, reason in _SKIPPED:
            terminalreporter.line(f"SKIPPED {nodeid}: {reason}", red=True)


@pytest.fixture(scope="session")
def conll_dir() -> Path:
    """The CoNLL-2003 folder beside the project; tests needing it skip when it is absent."""
    if not (CONLL_DIR / "dev.txt").is_file():
        pytest.skip(f"CoNLL-2003 data not found at {CONLL_DIR} (set LINKNER_CONLL_DIR)")
    return CONLL_DIR


def toy_sentence(rng: random.Random) -> Sentence:
    """One sentence from the templates with entity spans filled in."""
    template = rng.choice(TEMPLATES)
    tokens: list[str] = []
    spans: list[Span] = []
    for piece in template.split():
        if piece.startswith("{"):
            label = piece.strip("{}")
            words = rng.choice({"PER": PEOPLE, "LOC": PLACES, "ORG": ORGS}[label]).split()
            spans.append(Span(len(tokens), len(tokens) + len(words), label))
            tokens.extend(words)
        else:
            tokens.append(piece)
    return make_sentence(tokens, spans)


def toy_corpus(count: int, seed: int) -> list[Sentence]:
    rng = random.Random(seed)
    return [toy_sentence(rng) for _ in range(count)]


@pytest.fixture(scope="session")
def toy_train() -> list[Sentence]:
    return toy_corpus(240, seed=1)


@pytest.fixture(scope="session")
def toy_dev() -> list[Sentence]:
    return toy_corpus(60, seed=2)


def _vocabulary() -> list[str]:
    words = set()
    for text in PEOPLE + PLACES + ORGS + TEMPLATES:
        words.update(word.lower() for word in text.split() if not word.startswith("{"))
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,-'")
    pieces = letters + ["##" + letter for letter in letters]
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(words), *pieces]


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer, 32-wide uncased BERT with its own small vocabulary."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(_vocabulary())}, do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_encoder: Path, toy_train, toy_dev, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny span model trained on the toy corpus (a few seconds on 2 cores)."""
    from tests_helpers import train_tiny_span_model

    return train_tiny_span_model(tiny_encoder, toy_train, toy_dev, tmp_path_factory.mktemp("tiny-model"))


import sys as _sys

_sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helpers (openai_peer, tests_helpers)


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The embedded SmolLM2-135M, converted once from its GGUF into artifacts/llm (about 40 s)."""
    from linkner.llm.factory import DEFAULT_LLM_FOLDER
    from linkner.llm.prepare import embedded_gguf_path, prepare_llm

    try:
        embedded_gguf_path()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    return prepare_llm(DEFAULT_LLM_FOLDER)


LLM_QUERIES_SENTENCES = [
    (["Peter", "Blackburn", "spoke", "in", "Brussels", "."], 0, 2),
    (["Peter", "Blackburn", "spoke", "in", "Brussels", "."], 4, 5),
    (["Shares", "of", "Reuters", "rose", "."], 2, 3),
]
