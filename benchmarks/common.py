"""What the benchmarks share: where their inputs and results live, the options most of them take,
one markdown table and one result writer.

Only the standard library and ``linkner.paths`` are imported here: the GPU scripts
(``scripts/device/``) run ``benchmarks.inprocess`` and ``benchmarks.robust_training`` on machines
that have torch and transformers but not the project's environment.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from linkner.paths import ARTIFACTS, PROJECT_ROOT

RESULTS = PROJECT_ROOT / "benchmarks" / "results"
DEFAULT_MODEL = ARTIFACTS / "models" / "default"
DEFAULT_LLM = ARTIFACTS / "llm" / "smollm2-135m"


def default_data_dir() -> Path:
    """``$LINKNER_CONLL_DIR``, else ``shared/data/conll2003`` beside the checkout (or beside its
    parent, for a worktree)."""
    if os.environ.get("LINKNER_CONLL_DIR"):
        return Path(os.environ["LINKNER_CONLL_DIR"])
    candidates = [base / "shared" / "data" / "conll2003" for base in (PROJECT_ROOT.parent, PROJECT_ROOT.parent.parent)]
    return next((path for path in candidates if path.is_dir()), candidates[0])


def argument_parser(doc: str | None, *, model: bool = False, llm: bool = False, data_dir: bool = False,
                    sentences: int | None = None, out: str | None = None, out_dir: bool = False,
                    quick: str | None = None) -> argparse.ArgumentParser:
    """A benchmark's parser (its module docstring as the description) with the options it shares
    with the others: ``--model`` (checkpoint), ``--llm`` (the embedded LLM's folder),
    ``--data-dir`` (CoNLL-2003), ``--sentences`` (with its default), ``--out`` (the JSON result,
    ``benchmarks/results/OUT`` by default), ``--out-dir`` (its results' folder) and ``--quick``
    (``quick``: what it shortens)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if model:
        parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="checkpoint folder")
    if llm:
        parser.add_argument("--llm", type=Path, default=DEFAULT_LLM, help="the embedded LLM's folder")
    if data_dir:
        parser.add_argument("--data-dir", type=Path, default=default_data_dir(),
                            help="CoNLL-2003 folder (train.txt, dev.txt, test.txt)")
    if sentences is not None:
        parser.add_argument("--sentences", type=int, default=sentences,
                            help="test sentences cycled through by the load")
    if out is not None:
        parser.add_argument("--out", type=Path, default=RESULTS / out, help="JSON result (the table beside it, .md)")
    if out_dir:
        parser.add_argument("--out-dir", type=Path, default=RESULTS, help="folder of the results")
    if quick is not None:
        parser.add_argument("--quick", action="store_true", help=quick)
    return parser


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> str:
    """A markdown table: ``headers``, then one line per row (cells as given, ``str`` of anything
    else; an empty cell is ``| |``). ``align`` has a letter per column, ``l`` (``---``) or ``r``
    (``---:``); left where it is shorter."""

    def line(cells: Iterable[Any]) -> str:
        return "|" + "|".join(f" {cell} " if str(cell) else " " for cell in cells) + "|"

    marks = [("---:" if kind == "r" else "---") for kind in align.ljust(len(headers), "l")]
    return "\n".join([line(headers), "|" + "|".join(marks) + "|", *(line(row) for row in rows)])


def result_paths(out: Path) -> tuple[Path, Path]:
    """The JSON file and the markdown beside it for ``out``: a ``.json`` or ``.md`` path, or a stem
    (a stem's dots stay: ``robust_training-0.3-0.15`` gives ``robust_training-0.3-0.15.json``)."""
    stem = out.with_suffix("") if out.suffix in (".json", ".md") else out
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".md")


def write_results(out: Path, report: Any, table: str | None = None, show: bool = True) -> Path:
    """Write ``report`` as JSON to ``out`` and ``table`` beside it (``.md``, when there is one),
    printing the table first (``show``); returns the JSON file."""
    json_path, markdown_path = result_paths(Path(out))
    if table is not None and show:
        print(table)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    written = str(json_path)
    if table is not None:
        markdown_path.write_text(table.rstrip("\n") + "\n", encoding="utf-8")
        written += f" and {markdown_path}"
    print(f"wrote {written}", file=sys.stderr)
    return json_path
