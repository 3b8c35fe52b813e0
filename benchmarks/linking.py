"""Linking benchmark on CoNLL-2003: local-only F1, oracle-linked F1 against LLM share for each
uncertainty estimator (full dev and test), and the embedded LLM (SmolLM2-135M, vLLM when
installed, else transformers) with retrieved demonstrations on the first N sentences of test
and of its perturbed copies (typos, out-of-vocabulary names), its threshold calibrated on dev.
Prints markdown tables; writes JSON, markdown and PNG sweeps to benchmarks/results/.

    python -m benchmarks.linking --model artifacts/models/default [--llm-sentences 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from benchmarks.common import DEFAULT_LLM, argument_parser, write_results
from linkner.data.readers import read_dataset
from linkner.evaluation.assessment import estimator_names
from linkner.evaluation.linking import evaluate_linking
from linkner.evaluation.perturb import perturb
from linkner.llm.demonstrations import build_selector, embeddings_cache_path, training_demonstrations
from linkner.llm.factory import LLMConfig, build_backend, vllm_available
from linkner.llm.prepare import prepare_llm
from linkner.model.predictor import SpanPredictor

SHARES = [0.02, 0.05, 0.1, 0.15, 0.2, 0.3]


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, model=True, data_dir=True, out_dir=True)
    parser.add_argument("--backend", choices=["auto", "vllm", "transformers", "none"], default="auto")
    parser.add_argument("--mode", choices=["letter", "label", "choice"], default="letter")
    parser.add_argument("--demonstrations", choices=["none", "random", "retrieved"], default="retrieved")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--llm-estimator", default="confidence")
    parser.add_argument("--llm-sentences", type=int, default=1000, help="sentences per set the LLM sees")
    parser.add_argument("--max-share", type=float, default=0.3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-oracle", action="store_true", help="skip the full-set oracle sweeps")
    parser.add_argument("--name", default="linking", help="output file stem in --out-dir")
    return parser.parse_args()


async def main_async(args: argparse.Namespace) -> int:
    predictor = SpanPredictor.from_checkpoint(args.model)
    estimators = estimator_names("all", predictor)
    train = read_dataset(args.data_dir / "train.txt")
    dev = read_dataset(args.data_dir / "dev.txt")
    test = read_dataset(args.data_dir / "test.txt")
    sets = {"test": test, "test-typo": perturb(test, "typo", 0, train), "test-oov": perturb(test, "oov", 0, train)}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results: dict = {"oracle": {}, "llm": {}}
    markdown = ["## Oracle linking (full sets)", ""]
    for name, data in [] if args.no_oracle else [("dev", dev), *sets.items()]:
        report = await evaluate_linking(predictor, data, name, SHARES, estimators,
                                        plot=args.out_dir / f"sweep-oracle-{name}.png")
        results["oracle"][name] = report.model_dump()
        markdown += [report.markdown(), ""]
        print(report.markdown(), "\n", flush=True)

    backend_name = args.backend
    if backend_name == "auto":
        backend_name = "vllm" if vllm_available() else "transformers"
    if backend_name != "none":
        llm_folder = prepare_llm(DEFAULT_LLM)
        backend = build_backend(LLMConfig(backend=backend_name, model=str(llm_folder), mode=args.mode,
                                          threads=args.threads))
        pool = training_demonstrations(train)
        selector = build_selector(args.demonstrations, predictor, pool, args.k,
                                  cache=embeddings_cache_path(args.model, pool))
        n = args.llm_sentences
        markdown += [f"## {backend.model_id}, {args.demonstrations} demonstrations (k={args.k}), first {n} sentences", ""]
        calibration = None
        try:
            for name, data in sets.items():
                report = await evaluate_linking(
                    predictor, data[:n], f"{name}[:{n}]", SHARES, [args.llm_estimator], backend, args.llm_estimator,
                    dev=dev[:n], selector=selector, max_share_calibration=args.max_share,
                    plot=args.out_dir / f"sweep-llm-{args.mode}-{name}.png", calibration=calibration)
                calibration = report.calibration
                results["llm"][name] = report.model_dump()
                markdown += [report.markdown(), ""]
                print(report.markdown(), "\n", flush=True)
        finally:
            await backend.close()
    write_results(args.out_dir / f"{args.name}.json", results, "\n".join(markdown), show=False)  # printed as it went
    return 0


def main() -> int:
    args = parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
