"""Draw one request's trace as a PNG waterfall from exported spans (JSON lines, as written by
``tests/otlp_receiver.py --out`` or the ``jsonl`` exporter): one bar per span, indented under its
parent, placed at its start time, labelled with its duration.

    python scripts/trace_waterfall.py spans.jsonl --trace TRACE_ID --out waterfall.png
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any


def load_spans(path: Path, trace_id: str | None = None) -> list[dict[str, Any]]:
    """The spans of ``trace_id`` in ``path`` (default: the trace with the most spans)."""
    spans = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if trace_id is None:
        trace_id = Counter(span["trace_id"] for span in spans).most_common(1)[0][0]
    return [span for span in spans if span["trace_id"] == trace_id]


def ordered(spans: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """``(depth, span)`` depth-first from the roots, children by start time (a span whose parent is
    not in the trace, e.g. the caller's, is a root)."""
    ids = {span["span_id"] for span in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        parent = span["parent_id"] if span["parent_id"] in ids else None
        children.setdefault(parent, []).append(span)
    rows: list[tuple[int, dict[str, Any]]] = []

    def visit(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s["start_ns"]):
            rows.append((depth, span))
            visit(span["span_id"], depth + 1)

    visit(None, 0)
    return rows


def draw(spans: list[dict[str, Any]], out: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = ordered(spans)
    origin = min(span["start_ns"] for span in spans)
    end = max(span["end_ns"] for span in spans)
    total_ms = (end - origin) / 1e6
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(rows) + 1.4))
    colours = {"linkner.llm": "#d62728", "linkner.ner": "#1f77b4", "linkner.v1": "#7f7f7f"}
    for row, (depth, span) in enumerate(rows):
        start_ms, length_ms = (span["start_ns"] - origin) / 1e6, (span["end_ns"] - span["start_ns"]) / 1e6
        colour = next((c for prefix, c in colours.items() if span["name"].startswith(prefix)), "#2ca02c")
        ax.barh(row, max(length_ms, total_ms / 400), left=start_ms, color=colour, height=0.6)
        ax.text(start_ms + max(length_ms, 0) + total_ms / 150, row, f"{length_ms:.1f} ms", va="center", fontsize=8)
        service = span.get("resource", {}).get("linkner.component", "")
        label = span["name"] + (f"  [{service}]" if service else "")
        ax.text(-0.55 + 0.025 * depth, row, label, va="center", ha="left", fontsize=8, family="monospace",
                transform=ax.get_yaxis_transform())
    ax.set_yticks([])
    ax.invert_yaxis()
    ax.set_xlim(0, total_ms * 1.12)
    ax.set_xlabel("ms since the request's first span")
    ax.set_title(title or f"trace {spans[0]['trace_id']}: {total_ms:.0f} ms, {len(spans)} spans", fontsize=10)
    fig.subplots_adjust(left=0.36, right=0.98)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spans", type=Path, help="JSON-lines file of exported spans")
    parser.add_argument("--trace", default=None, help="trace id (default: the trace with the most spans)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/trace-waterfall.png"))
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    print(draw(load_spans(args.spans, args.trace), args.out, args.title))


if __name__ == "__main__":
    main()
