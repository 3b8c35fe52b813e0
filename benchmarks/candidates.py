"""Every label or only the local model's candidates (filter-then-rerank): the LLM offered all
labels plus Non-entity, against the LLM offered the local model's top-N entity labels plus
Non-entity, on the SAME spans of the first N CoNLL-2003 dev sentences, routed by confidence.

For each option form: the LLM's accuracy on the routed spans (gold label, or Non-entity for a
span that is not a gold entity), how often the gold answer was offered at all, errors, ms/span,
and linked F1 when the most uncertain 5/10/20% of spans go to the LLM. Prints a markdown table;
writes JSON (and the table beside it).

    python -m benchmarks.candidates --model artifacts/models/default --sentences 1000 \
        [--backend vllm|transformers|oracle] [--mode letter] [--candidates 2] [--demonstrations none]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any, Sequence

from benchmarks.common import DEFAULT_LLM, argument_parser, markdown_table, write_results
from linkner.data.spans import Sentence
from linkner.evaluation.calibration import linked_f1
from linkner.evaluation.linking import gold_answer, sweep
from linkner.llm.protocol import NON_ENTITY, LLMBackend
from linkner.routing.answers import AnswerCache
from linkner.routing.linker import backend_candidates, candidate_labels
from linkner.routing.ranking import rank_by_uncertainty, share_count

if TYPE_CHECKING:
    from linkner.llm.demonstrations import DemonstrationSelector

SHARES = (0.05, 0.1, 0.2)


async def compare_forms(predictor: Any, sentences: Sequence[Sentence], forms: dict[str, LLMBackend],
                        shares: Sequence[float] = SHARES, estimator: str = "confidence",
                        selector: "DemonstrationSelector | None" = None, progress: bool = True) -> dict[str, Any]:
    """Predict once, route the most uncertain ``max(shares)`` of spans, ask each form's backend about
    exactly those spans, and score each form: accuracy on them and linked F1 at every share."""
    from linkner.evaluation.assessment import predict_with_progress

    shares = sorted(set(shares))
    predictions = predict_with_progress(predictor, sentences, [estimator], progress)
    ranked = rank_by_uncertainty(predictions, estimator)
    routed = ranked[: share_count(max(shares), len(ranked))]
    gold = [gold_answer(sentences[i], predictions[i][j]) for i, j in routed]
    result: dict[str, Any] = {
        "sentences": len(sentences), "spans": len(ranked), "routed": len(routed), "estimator": estimator,
        "shares": shares, "local_f1": linked_f1(sentences, predictions, estimator, [], []), "forms": {},
    }
    for name, backend in forms.items():
        cache = AnswerCache(backend, sentences, predictions, predictor.labels, selector)
        await cache.ensure(routed, progress=progress)
        answers = cache.for_refs(routed)
        count = backend_candidates(backend)
        offered = [None if count is None else candidate_labels(predictions[i][j], count) for i, j in routed]
        result["forms"][name] = {
            "model": backend.model_id,
            "accuracy": sum(a.label == g for a, g in zip(answers, gold)) / max(1, len(gold)),
            "gold_offered": sum(o is None or g == NON_ENTITY or g in o for o, g in zip(offered, gold)) / max(1, len(gold)),
            "errors": sum(not a.ok for a in answers),
            "ms_per_span": 1000 * cache.seconds / max(1, len(routed)),
            "prompt_tokens_per_span": sum(a.prompt_tokens for a in answers) / max(1, len(routed)),
            "f1": {f"{p.share:g}": p.f1 for p in sweep(sentences, predictions, estimator, shares, cache)},
        }
    return result


def markdown(result: dict[str, Any]) -> str:
    """One row per option form: accuracy on the routed spans and linked F1 at each share."""
    shares = result["shares"]
    rows = [(name, form["model"], f"{100 * form['accuracy']:.1f}%", f"{100 * form['gold_offered']:.1f}%",
             form["errors"], f"{form['ms_per_span']:.0f}", *(f"{100 * form['f1'][f'{s:g}']:.2f}" for s in shares))
            for name, form in result["forms"].items()]
    return "\n".join([
        f"{result['sentences']} dev sentences, {result['spans']} predicted spans, {result['routed']} routed "
        f"(most uncertain by {result['estimator']}); local-only F1 {100 * result['local_f1']:.2f}", "",
        markdown_table(["options", "model", "accuracy on routed", "gold offered", "errors", "ms/span",
                        *(f"F1 @ {100 * s:g}%" for s in shares)], rows)])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argument_parser(__doc__, model=True, data_dir=True, out="candidates.json")
    parser.add_argument("--sentences", type=int, default=1000, help="the first N dev sentences")
    parser.add_argument("--backend", choices=["auto", "vllm", "transformers", "oracle"], default="auto")
    parser.add_argument("--mode", choices=["letter", "label", "choice"], default="letter")
    parser.add_argument("--candidates", type=int, default=2, help="top-N entity labels of the candidates form")
    parser.add_argument("--demonstrations", choices=["none", "random", "retrieved"], default="none")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--shares", default=",".join(f"{s:g}" for s in SHARES))
    parser.add_argument("--estimator", default="confidence")
    parser.add_argument("--threads", type=int, default=None)
    return parser.parse_args(argv)


def build_forms(args: argparse.Namespace, sentences: Sequence[Sentence]) -> dict[str, LLMBackend]:
    """The "all" and "candidates" backends, sharing one model (one vLLM engine) where possible."""
    from linkner.llm.factory import LLMConfig, build_backend, vllm_available

    if args.backend == "oracle":
        from linkner.llm.oracle import OracleBackend

        return {"all": OracleBackend(sentences)}
    backend_name = args.backend if args.backend != "auto" else ("vllm" if vllm_available() else "transformers")
    from linkner.llm.prepare import prepare_llm

    folder = prepare_llm(DEFAULT_LLM)
    backend = build_backend(LLMConfig(backend=backend_name, model=str(folder), mode=args.mode, threads=args.threads))
    return {"all": backend, f"candidates (top {args.candidates})": backend.with_candidates(args.candidates)}


async def main_async(args: argparse.Namespace) -> int:
    from linkner.data.readers import read_dataset
    from linkner.llm.demonstrations import build_selector, embeddings_cache_path, training_demonstrations
    from linkner.model.predictor import SpanPredictor

    predictor = SpanPredictor.from_checkpoint(args.model)
    dev = read_dataset(args.data_dir / "dev.txt")[: args.sentences]
    selector = None
    if args.demonstrations != "none":
        pool = training_demonstrations(read_dataset(args.data_dir / "train.txt"))
        selector = build_selector(args.demonstrations, predictor, pool, args.k,
                                  cache=embeddings_cache_path(args.model, pool))
    forms = build_forms(args, dev)
    try:
        result = await compare_forms(predictor, dev, forms, [float(s) for s in args.shares.split(",")],
                                     args.estimator, selector)
    finally:
        for backend in {id(b): b for b in forms.values()}.values():
            await backend.close()
    result["demonstrations"] = args.demonstrations if args.demonstrations == "none" else f"{args.demonstrations} (k={args.k})"
    write_results(args.out, result, markdown(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
