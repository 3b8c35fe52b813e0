"""How the embedded LLM answers: accuracy on CoNLL-2003 dev gold entity spans (seeded sample) for
each answer mode (vLLM: option letters scored, greedy constrained choice over names, names
scored) and each kind of demonstrations (none, random 1 per label, 4 retrieved), with the label
of the nearest training span alone (no LLM) as a reference. Prints a table; writes JSON.

    python -m benchmarks.llm_modes [--spans 300]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from typing import Any

from benchmarks.common import DEFAULT_LLM, argument_parser, markdown_table, write_results
from linkner.data.readers import read_dataset
from linkner.llm.demonstrations import build_selector, embeddings_cache_path, training_demonstrations
from linkner.llm.prepare import prepare_llm
from linkner.llm.protocol import SpanQuery
from linkner.llm.vllm_backend import VLLMBackend, VLLMSettings
from linkner.model.predictor import SpanPredictor


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, model=True, data_dir=True, out="llm_modes.json")
    parser.add_argument("--spans", type=int, default=300)
    parser.add_argument("--modes", default="letter,choice,label")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


async def main_async(args: argparse.Namespace) -> int:
    predictor = SpanPredictor.from_checkpoint(args.model)
    train = read_dataset(args.data_dir / "train.txt")
    dev = read_dataset(args.data_dir / "dev.txt")
    spans = [(s, e) for s in dev for e in s.entities]
    random.Random(args.seed).shuffle(spans)
    spans = spans[: args.spans]
    gold = [e.label for _, e in spans]
    refs = [(s.tokens, e.start, e.end) for s, e in spans]
    pool = training_demonstrations(train)
    selectors = {
        "none": build_selector("none", predictor, pool, 0),
        "random (1/label)": build_selector("random", predictor, pool, 1, seed=args.seed),
        "retrieved (4)": build_selector("retrieved", predictor, pool, 4,
                                        cache=embeddings_cache_path(args.model, pool)),
    }
    demos = {name: selector.select(refs) for name, selector in selectors.items()}
    nearest = [d[-1].label if d else None for d in demos["retrieved (4)"]]
    rows = [{"mode": "nearest training span, no LLM", "demonstrations": "-",
             "accuracy": sum(a == b for a, b in zip(nearest, gold)) / len(gold)}]
    print(rows[0], flush=True)
    backend = VLLMBackend(VLLMSettings(model=str(prepare_llm(DEFAULT_LLM))))
    try:
        for mode in [m for m in args.modes.split(",") if m]:
            view = backend.with_mode(mode)  # type: ignore[arg-type]
            for name, chosen in demos.items():
                queries = [SpanQuery(tokens=list(t), start=a, end=b, demonstrations=d)
                           for (t, a, b), d in zip(refs, chosen)]
                started = time.perf_counter()
                answers = await view.classify(queries, predictor.labels)
                seconds = time.perf_counter() - started
                labels = [a.label for a in answers]
                rows.append({"mode": mode, "demonstrations": name,
                             "accuracy": sum(a == b for a, b in zip(labels, gold)) / len(gold),
                             "unparseable_or_errors": sum(not a.ok for a in answers),
                             "answers": dict(Counter(labels)), "ms_per_span": 1000 * seconds / len(queries)})
                print(rows[-1], flush=True)
    finally:
        await backend.close()
    write_results(args.out, rows, markdown(rows, gold))
    return 0


def markdown(rows: list[dict[str, Any]], gold: list[str]) -> str:
    return "\n".join([f"LLM accuracy on {len(gold)} dev gold spans ({dict(Counter(gold))})", "", markdown_table(
        ["answer mode", "demonstrations", "accuracy", "errors", "ms/span", "answers"],
        [(row["mode"], row["demonstrations"], f"{100 * row['accuracy']:.1f}%", row.get("unparseable_or_errors", "-"),
          f"{row.get('ms_per_span', 0):.0f}", row.get("answers", "")) for row in rows])])


if __name__ == "__main__":
    sys.exit(asyncio.run(main_async(parse_args())))
