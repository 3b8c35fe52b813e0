"""Segmenter comparison: sentence and word accuracy on the hard cases of
tests/data/segmentation_cases.jsonl, recovery of gold sentence boundaries and tokens on CoNLL-2003
detokenised to raw text (see ``benchmarks.raw_text``), and speed. Prints a markdown table; writes JSON and
markdown under benchmarks/results/.

    python -m benchmarks.segmenters [--data test.txt] [--limit N] [--quick]
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from benchmarks.common import argument_parser, markdown_table, write_results
from benchmarks.raw_text import DEFAULT_DATA, _OLD_TOKEN, RawDocument, load_documents, regex_split_sentences
from linkner.paths import PROJECT_ROOT

Sentences = list[list[tuple[str, int, int]]]  # per sentence: (text, start, end)
CASES = PROJECT_ROOT / "tests" / "data" / "segmentation_cases.jsonl"


def linkner_splitter(text: str) -> Sentences:
    from linkner.text.segment import split_sentences

    return [[(t.text, t.start, t.end) for t in sentence] for sentence in split_sentences(text)]


def regex_splitter(text: str) -> Sentences:
    return [[(t.text, t.start, t.end) for t in sentence] for sentence in regex_split_sentences(text)]


def syntok_splitter(text: str) -> Sentences:
    """syntok as it comes (offsets kept, n't not replaced)."""
    from syntok.segmenter import analyze

    return [[(t.value, t.offset, t.offset + len(t.value)) for t in sentence if t.value]
            for paragraph in analyze(text) for sentence in paragraph]


_pysbd = None


def pysbd_splitter(text: str) -> Sentences:
    """pysbd sentences, tokenised inside with the old regex (pysbd has no tokenizer)."""
    global _pysbd
    import pysbd

    _pysbd = _pysbd or pysbd.Segmenter(language="en", clean=False, char_span=True)
    sentences = []
    for span in _pysbd.segment(text):
        tokens = [(m.group(), span.start + m.start(), span.start + m.end())
                  for m in _OLD_TOKEN.finditer(text[span.start : span.end])]
        if tokens:
            sentences.append(tokens)
    return sentences


_spacy = None


def spacy_splitter(text: str) -> Sentences:
    """spaCy's rule-based English tokenizer (``spacy.blank("en")``) and its sentencizer."""
    global _spacy
    import spacy

    if _spacy is None:
        _spacy = spacy.blank("en")
        _spacy.add_pipe("sentencizer")
    sentences = [[(t.text, t.idx, t.idx + len(t.text)) for t in sentence if not t.is_space]
                 for sentence in _spacy(text).sents]
    return [sentence for sentence in sentences if sentence]


SEGMENTERS: dict[str, Callable[[str], Sentences]] = {
    "regex (old)": regex_splitter,
    "pysbd 0.3 + regex tokens": pysbd_splitter,
    "spaCy 3.8 blank en + sentencizer": spacy_splitter,
    "syntok 1.4 as is": syntok_splitter,
    "syntok 1.4 + CoNLL conventions (linkner)": linkner_splitter,
}


def hard_case_scores(splitter: Callable[[str], Sentences], cases: list[dict]) -> dict:
    """Share of cases with every sentence exact, and with the words exact (boundaries ignored)."""
    sentences_exact = words_exact = 0
    failed = []
    for case in cases:
        got = [[word for word, _, _ in sentence] for sentence in splitter(case["text"])]
        sentences_exact += got == case["sentences"]
        words_exact += sum(got, []) == sum(case["sentences"], [])
        if got != case["sentences"]:
            failed.append(case["note"])
    return {"sentences_exact": sentences_exact / len(cases), "words_exact": words_exact / len(cases),
            "failed": failed}


def conll_scores(splitter: Callable[[str], Sentences], documents: list[RawDocument], name: str) -> dict:
    """Shares of gold sentences (first to last character) and gold tokens found exactly; chars/s."""
    sentences_found = tokens_found = sentence_total = token_total = characters = 0
    seconds = 0.0
    for document in tqdm(documents, desc=name, leave=False):
        started = time.perf_counter()
        predicted = splitter(document.text)
        seconds += time.perf_counter() - started
        characters += len(document.text)
        spans = {(s[0][1], s[-1][2]) for s in predicted}
        tokens = {(start, end) for s in predicted for _, start, end in s}
        for offsets in document.token_offsets:
            sentence_total += 1
            sentences_found += (offsets[0][0], offsets[-1][1]) in spans
            token_total += len(offsets)
            tokens_found += sum(offset in tokens for offset in offsets)
    return {"conll_sentences_recovered": sentences_found / sentence_total,
            "conll_tokens_recovered": tokens_found / token_total, "chars_per_second": characters / seconds}


def markdown(rows: list[dict], cases: int, documents: int) -> str:
    return "\n".join([
        f"{cases} hard cases; CoNLL-2003 test, {documents} documents detokenised (sentences joined by a space)", "",
        markdown_table(["segmenter", "hard cases: sentences exact", "hard cases: words exact",
                        "CoNLL sentences recovered", "CoNLL tokens recovered", "chars/s"],
                       [(row["segmenter"], f"{100 * row['sentences_exact']:.0f}%", f"{100 * row['words_exact']:.0f}%",
                         f"{100 * row['conll_sentences_recovered']:.1f}%",
                         f"{100 * row['conll_tokens_recovered']:.1f}%", f"{row['chars_per_second']:,.0f}")
                        for row in rows])])


def main() -> int:
    parser = argument_parser(__doc__, out_dir=True, quick="the first 20 documents (unless --limit)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None, help="first N documents only")
    args = parser.parse_args()
    cases = [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines() if line.strip()]
    documents = load_documents(args.data, args.limit or (20 if args.quick else None))
    rows = []
    for name, splitter in SEGMENTERS.items():
        splitter("Warm up. Mr. Smith.")
        rows.append({"segmenter": name, **hard_case_scores(splitter, cases), **conll_scores(splitter, documents, name)})
    write_results(args.out_dir / "segmenters.json", {"cases": len(cases), "documents": len(documents), "rows": rows},
                  markdown(rows, len(cases), len(documents)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
