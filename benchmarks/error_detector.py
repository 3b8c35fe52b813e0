"""Finding the errors: fit the ``learned`` error detector on CoNLL-2003 dev predictions (document
folds, never test), calibrate it (isotonic, on its out-of-fold dev scores) and measure every
estimator side by side: AUROC on dev (the learned one cross-validated) and test, the oracle gain
at a 10% LLM share, ECE before and after calibration, the perturbed test sets (typo, oov), the
learned estimator's added time per sentence, and document-level label consistency as a decoding
option (F1 with and without). Writes JSON, markdown and a reliability PNG to benchmarks/results/.

    python -m benchmarks.error_detector --model artifacts/models/default [--save]

``--save`` writes ``error_detector.json`` beside the checkpoint (it never changes other files).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import numpy as np

from benchmarks.common import argument_parser, markdown_table, write_results
from linkner.data.readers import conll_documents, read_dataset
from linkner.evaluation.linking import sweep
from linkner.evaluation.perturb import perturb
from linkner.evaluation.scores import UncertaintyQuality, entity_scores, reliability_plot, uncertainty_quality
from linkner.llm.oracle import OracleBackend
from linkner.model.decoding import consistent_labels
from linkner.model.predictor import SpanPredictor
from linkner.paths import PROJECT_ROOT
from linkner.routing.answers import AnswerCache
from linkner.routing.ranking import rank_by_uncertainty, share_count
from linkner.uncertainty.detector import TIE_BREAK, load_detector
from linkner.uncertainty.features import document_groups, feature_matrix
from linkner.uncertainty.fitting import BASE_ESTIMATORS, collect, fit_isotonic, fit_on_dev, wrong_labels

BASE = list(BASE_ESTIMATORS)
SHARES = [0.02, 0.05, 0.1, 0.2]


def parse_args() -> argparse.Namespace:
    parser = argument_parser(__doc__, model=True, data_dir=True, out_dir=True)
    parser.add_argument("--kind", choices=["trees", "logistic"], default="trees")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--speed-sentences", type=int, default=1000)
    parser.add_argument("--speed-repeats", type=int, default=3)
    parser.add_argument("--save", action="store_true", help="write error_detector.json beside the checkpoint")
    return parser.parse_args()


def quality(name: str, uncertainty: np.ndarray, wrong: np.ndarray) -> UncertaintyQuality:
    return uncertainty_quality(name, uncertainty.tolist(), (wrong == 0).tolist())


def oracle_points(data, predictions, estimators: list[str]) -> dict[str, dict[str, float]]:
    """Oracle-linked F1 at each share for each estimator."""
    cache = AnswerCache(OracleBackend(data), data, predictions, ["LOC", "MISC", "ORG", "PER"])

    async def run() -> dict[str, dict[str, float]]:
        out = {}
        for estimator in estimators:
            ranked = rank_by_uncertainty(predictions, estimator)
            await cache.ensure(ranked[: share_count(max(SHARES), len(ranked))], progress=False)
            out[estimator] = {f"{share:g}": p.f1 for share, p in
                              zip(SHARES, sweep(data, predictions, estimator, SHARES, cache))}
        return out

    return asyncio.run(run())


def f1(data, predictions) -> float:
    return entity_scores([s.entities for s in data], [[e.span for e in sent] for sent in predictions]).micro.f1


def timing(predictor: SpanPredictor, tokens: list, repeats: int) -> dict[str, float]:
    """Seconds per sentence of the in-process predictor with confidence alone and with learned too,
    interleaved (the best of ``repeats`` each, so other load on the machine counts least)."""
    predictor.predict(tokens[:64], ["confidence", "learned"])
    best = {"confidence": float("inf"), "confidence+learned": float("inf")}
    for _ in range(repeats):
        for name, estimators in (("confidence", ["confidence"]), ("confidence+learned", ["confidence", "learned"])):
            started = time.perf_counter()
            predictor.predict(tokens, estimators)
            best[name] = min(best[name], (time.perf_counter() - started) / len(tokens))
    return best


def main() -> int:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    predictor = SpanPredictor.from_checkpoint(args.model, device="cpu")
    labels = predictor.labels
    train = read_dataset(args.data_dir / "train.txt")
    sets = {name: (read_dataset(args.data_dir / f"{name}.txt"), conll_documents(args.data_dir / f"{name}.txt"))
            for name in ("dev", "test")}
    test, test_documents = sets["test"]
    sets["test-typo"] = (perturb(test, "typo", 0, train), test_documents)
    sets["test-oov"] = (perturb(test, "oov", 0, train), test_documents)
    sets["test-oov-real"] = (perturb(test, "oov-real", 0, train), test_documents)
    # fit on dev only: document folds, out-of-fold scores for the dev numbers and the calibration
    dev, dev_documents = sets["dev"]
    fit = fit_on_dev(predictor, args.model, train, dev, dev_documents, args.kind, args.folds)
    detector, out_of_fold, dev_predictions = fit.detector, fit.out_of_fold, fit.predictions
    lexicon = detector.lexicon
    collected = {"dev": (dev, dev_documents, dev_predictions, fit.rows, fit.wrong)}
    for name, (data, documents) in sets.items():
        if name == "dev":
            continue
        predictions, span_rows = collect(predictor, data, documents, BASE, mc_samples=0)
        rows = feature_matrix([s.tokens for s in data], predictions, span_rows, lexicon, documents)
        collected[name] = (data, documents, predictions, rows, wrong_labels(data, predictions))
    for name, entry in collected.items():
        print(f"{name}: {len(entry[3])} predicted spans, {int(entry[4].sum())} wrong", file=sys.stderr)
    confidence_calibration = fit_isotonic(np.array([e.uncertainty["confidence"] for s in dev_predictions for e in s]),
                                          fit.wrong)

    results: dict = {"model": str(args.model.name), "kind": args.kind, "folds": args.folds, "sets": {}}
    qualities_for_plot: list[UncertaintyQuality] = []
    for name, (data, documents, predictions, rows, wrong) in collected.items():
        raw = out_of_fold if name == "dev" else detector.raw(rows)
        calibrated = detector.calibrate(raw)
        flat = [e for s in predictions for e in s]
        for entity, value in zip(flat, calibrated.tolist()):
            entity.uncertainty["learned"] = value
        values = {estimator: np.array([e.uncertainty[estimator] for e in flat]) for estimator in BASE}
        confidence = values["confidence"]
        rows_quality = [quality(estimator, values[estimator], wrong) for estimator in BASE]
        rows_quality += [quality("confidence + isotonic",
                                 (1 - TIE_BREAK) * confidence_calibration(confidence) + TIE_BREAK * confidence, wrong),
                         quality("learned (uncalibrated)", raw, wrong), quality("learned", calibrated, wrong)]
        consistent = consistent_labels([s.tokens for s in data], predictions,
                                       document_groups(len(data), documents))
        entry = {"sentences": len(data), "spans": len(flat), "wrong": int(wrong.sum()),
                 "f1": f1(data, predictions), "f1_consistent": f1(data, consistent),
                 "quality": [q.model_dump() for q in rows_quality]}
        entry["oracle"] = oracle_points(data, predictions, [*BASE, "learned"])  # dev: out-of-fold learned scores
        results["sets"][name] = entry
        if name == "test":
            qualities_for_plot = [q for q in rows_quality if q.estimator in
                                  ("confidence", "confidence + isotonic", "learned (uncalibrated)", "learned")]
        print(f"{name}: " + ", ".join(f"{q.estimator} AUROC {q.auroc:.4f} ECE {q.ece:.4f}" for q in rows_quality),
              file=sys.stderr)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    plot = reliability_plot(qualities_for_plot, args.out_dir / "reliability-learned.png",
                            f"{args.model.name}: reliability on CoNLL-2003 test")
    results["reliability_plot"] = str(plot.relative_to(PROJECT_ROOT) if plot.is_relative_to(PROJECT_ROOT) else plot)

    if args.save:
        path = detector.save(args.model)
        print(f"wrote {path}", file=sys.stderr)
        served = SpanPredictor.from_checkpoint(args.model, device="cpu")
    else:
        served = SpanPredictor(predictor.model, predictor.batcher, predictor.device, detector=detector)
    if args.save:
        load_detector(args.model, labels)  # the saved file reads back and matches the weights
    # the served path scores what the benchmark scored (same documents, same features)
    first, end = 0, next(i for i, d in enumerate(dev_documents) if d != dev_documents[0])
    check = served.predict([s.tokens for s in dev[first:end]], ["learned"])
    expected = detector.probability_wrong(fit.rows[: sum(map(len, check))])
    got = np.array([e.uncertainty["learned"] for s in check for e in s])
    results["served_max_difference"] = float(np.abs(got - expected).max()) if len(got) else 0.0
    tokens = [s.tokens for s in test[: args.speed_sentences]]
    seconds = timing(served, tokens, args.speed_repeats)
    results["seconds_per_sentence"] = seconds
    results["learned_added_share"] = seconds["confidence+learned"] / seconds["confidence"] - 1.0
    results["threads"] = torch.get_num_threads()
    write_results(args.out_dir / "error_detector.json", results, markdown(results))
    return 0


def markdown(results: dict) -> str:
    sets = results["sets"]
    names = [q["estimator"] for q in sets["test"]["quality"]]
    local = sets["test"]["f1"]
    estimators = []
    for name in names:
        q = {s: next(x for x in sets[s]["quality"] if x["estimator"] == name) for s in sets}
        oracle_key = {"learned (uncalibrated)": "learned", "confidence + isotonic": "confidence"}.get(name, name)
        at10 = sets["test"]["oracle"].get(oracle_key, {}).get("0.1")
        oracle = "same ranking as above" if name in ("learned (uncalibrated)", "confidence + isotonic") else (
            f"{100 * at10:.2f} ({100 * (at10 - local):+.2f})" if at10 is not None else "")
        aurocs = (f"{q[s]['auroc']:.3f}" for s in ("dev", "test", "test-typo", "test-oov", "test-oov-real"))
        estimators.append((name, *aurocs, f"{q['dev']['ece']:.3f}", f"{q['test']['ece']:.3f}", oracle))
    lines = [markdown_table(["estimator", "dev AUROC", "test AUROC", "test-typo AUROC", "test-oov AUROC",
                             "test-oov-real AUROC", "dev ECE", "test ECE", "test oracle F1 at 10% (gain)"], estimators),
             "", markdown_table(
                 ["set", "spans", "wrong", "local F1", "oracle F1 at 10%: confidence", "learned",
                  "F1 with document label consistency"],
                 [(name, entry["spans"], entry["wrong"], f"{100 * entry['f1']:.2f}",
                   *(f"{100 * entry['oracle'][estimator]['0.1']:.2f}" for estimator in ("confidence", "learned")),
                   f"{100 * entry['f1_consistent']:.2f}") for name, entry in sets.items()])]
    seconds = results["seconds_per_sentence"]
    lines += ["", f"In-process predictor, {results['threads']} thread(s): {1000 * seconds['confidence']:.2f} ms/sentence "
              f"with confidence, {1000 * seconds['confidence+learned']:.2f} ms with learned too "
              f"({100 * results['learned_added_share']:+.1f}%). Dev numbers of the learned estimator are out-of-fold "
              f"({results['folds']} document folds); its calibration is isotonic on those dev scores."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
