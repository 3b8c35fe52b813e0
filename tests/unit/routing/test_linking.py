import asyncio

import numpy as np
import pytest

from linkner.data.spans import Span, make_sentence
from linkner.evaluation.scores import entity_scores
from linkner.evaluation.linking import evaluate_linking
from linkner.evaluation.calibration import calibrate
from linkner.routing.answers import AnswerCache
from linkner.routing.linker import RDCLinker
from linkner.routing.merge import merge
from linkner.routing.policy import Calibration, DetectionPolicy, detect
from linkner.llm.openai_backend import OpenAIBackend, OpenAISettings
from linkner.llm.oracle import OracleBackend
from linkner.llm.protocol import NON_ENTITY, SpanAnswer
from linkner.data.spans import Entity
from linkner.model.predictor import SpanPredictor
from openai_peer import OpenAIPeer, closed_port


def entity(start, end, label, u):
    return Entity(start=start, end=end, label=label, probability=1 - u, uncertainty={"confidence": u})


PREDICTIONS = [[entity(0, 2, "PER", 0.05), entity(3, 4, "LOC", 0.6)], [entity(1, 2, "ORG", 0.3)]]


def test_threshold_budget_and_cap():
    assert detect(PREDICTIONS, DetectionPolicy(kind="threshold", threshold=0.2)) == [(0, 1), (1, 0)]
    assert detect(PREDICTIONS, DetectionPolicy(kind="budget", budget=0.34)) == [(0, 1), (1, 0)]
    assert detect(PREDICTIONS, DetectionPolicy(kind="budget", budget=0.33)) == [(0, 1)]
    assert detect(PREDICTIONS, DetectionPolicy(kind="threshold", threshold=0.0, max_llm_spans=1)) == [(0, 1)]
    assert detect(PREDICTIONS, DetectionPolicy(kind="none")) == []


def test_calibrated_policy_routes_nothing_when_the_llm_did_not_help():
    calibration = Calibration(estimator="confidence", threshold=None, llm_model="m", dev_f1_local=0.9,
                              dev_f1_linked=0.9, routed_share=0.0, max_share=0.3, sentences=10)
    assert detect(PREDICTIONS, DetectionPolicy(kind="calibrated", calibration=calibration)) == []
    routed = DetectionPolicy(kind="calibrated", calibration=calibration.model_copy(update={"threshold": 0.1}))
    assert detect(PREDICTIONS, routed) == [(0, 1), (1, 0)]


def test_policy_validation_errors_are_clear():
    with pytest.raises(ValueError, match="unknown uncertainty estimator 'vibes'"):
        DetectionPolicy(estimator="vibes")
    with pytest.raises(ValueError, match="1.5"):
        DetectionPolicy(threshold=1.5)


def test_missing_calibration_names_a_command_the_cli_accepts():
    import re
    import shlex

    from linkner.cli import build_parser

    with pytest.raises(ValueError) as refused:
        DetectionPolicy(kind="calibrated")
    command = re.search(r"`(linkner [^`]+)`", str(refused.value)).group(1)
    words = shlex.split(command)
    args = build_parser().parse_args(words[1:])  # exits (SystemExit) on an unknown command or option
    assert args.command == "prepare" and str(args.config) == "serve_config.yaml"


def test_merge_replaces_drops_and_degrades():
    answers = [SpanAnswer(label="ORG", score=0.8, model="m", prompt_tokens=10),
               SpanAnswer(label=NON_ENTITY, score=0.9, model="m"),
               SpanAnswer(error="boom", model="m")]
    predictions = PREDICTIONS + [[entity(0, 1, "MISC", 0.9)]]
    linked, stats = merge(predictions, [(0, 1), (1, 0), (2, 0)], answers)
    assert [(e.label, e.source) for e in linked[0]] == [("PER", "local"), ("ORG", "llm")]
    assert linked[0][1].local_label == "LOC" and linked[0][1].llm_score == 0.8
    assert linked[1] == []  # Non-entity dropped the span
    assert linked[2][0].label == "MISC" and linked[2][0].degraded and linked[2][0].source == "local"
    assert stats.degraded and "boom" in stats.degraded_reason
    assert (stats.routed, stats.changed, stats.dropped, stats.llm_errors, stats.prompt_tokens) == (3, 1, 1, 1, 10)


def run(coroutine):
    return asyncio.run(coroutine)


class ErringRecognizer:
    """The tiny model with errors injected where it is least sure of itself: every third entity
    gets a wrong label and a spurious one-word span follows every fourth sentence's first word,
    all with uncertainty 0.99 (so a 30% budget routes them first)."""

    def __init__(self, predictor: SpanPredictor) -> None:
        self.predictor = predictor
        self.labels = predictor.labels

    async def recognize(self, sentences, estimators):
        predictions = self.predictor.predict(sentences, list(estimators))
        count = 0
        for i, entities in enumerate(predictions):
            for entity in entities:
                count += 1
                if count % 3 == 0:
                    entity.label = entity.local_label = next(label for label in self.labels if label != entity.label)
                    entity.uncertainty = {name: 0.99 for name in entity.uncertainty}
            taken = {w for e in entities for w in range(e.start, e.end)}
            if i % 4 == 0 and 0 not in taken:
                entities.insert(0, Entity(start=0, end=1, label=self.labels[0], probability=0.01,
                                          uncertainty={name: 0.99 for name in estimators}))
        return predictions


def test_oracle_linking_can_only_help(tiny_checkpoint, toy_dev):
    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    tokens = [s.tokens for s in toy_dev]
    gold = [s.entities for s in toy_dev]
    gold_labels = {(i, e.start, e.end): e.label for i, s in enumerate(toy_dev) for e in s.entities}
    linker = RDCLinker(ErringRecognizer(predictor), OracleBackend(toy_dev), DetectionPolicy(kind="budget", budget=0.3))
    local = run(linker.link(tokens, DetectionPolicy(kind="none")))
    linked = run(linker.link(tokens))
    f1 = lambda result: entity_scores(gold, [[Span(e.start, e.end, e.label) for e in s] for s in result.sentences]).micro.f1
    assert local.stats.routed == 0 and linked.stats.routed > 0
    assert linked.stats.changed > 0 and linked.stats.dropped > 0
    assert f1(linked) > f1(local) + 0.1  # the oracle repaired what the injected errors broke
    from_llm = [(i, e) for i, s in enumerate(linked.sentences) for e in s if e.source == "llm"]
    assert from_llm and all(e.label == gold_labels[(i, e.start, e.end)] for i, e in from_llm)
    assert any(e.label != e.local_label for _, e in from_llm)
    kept = {(i, e.start, e.end) for i, s in enumerate(linked.sentences) for e in s}
    spurious = {(i, e.start, e.end) for i, s in enumerate(local.sentences) for e in s
                if (i, e.start, e.end) not in gold_labels and e.uncertainty["confidence"] == 0.99}
    assert spurious and not spurious & kept  # the oracle's Non-entity answers dropped them
    assert set(linked.stats.timings_s) == {"recognize", "detect", "classify", "merge"}


def test_unreachable_llm_gives_local_answer_marked_degraded(tiny_checkpoint, toy_dev):
    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    backend = OpenAIBackend(OpenAISettings(base_url=f"http://127.0.0.1:{closed_port()}/v1", model="m",
                                           max_retries=0))
    linker = RDCLinker(predictor, backend, DetectionPolicy(kind="budget", budget=1.0))
    local = run(RDCLinker(predictor, None, DetectionPolicy()).link([s.tokens for s in toy_dev[:5]]))
    result = run(linker.link([s.tokens for s in toy_dev[:5]]))
    assert result.stats.degraded and "LLM failed" in result.stats.degraded_reason
    assert [[(e.start, e.end, e.label) for e in s] for s in result.sentences] == \
           [[(e.start, e.end, e.label) for e in s] for s in local.sentences]
    assert all(e.degraded for s in result.sentences for e in s)


def test_deadline_shorter_than_the_llm_keeps_local_answers(tiny_checkpoint, toy_dev):
    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    with OpenAIPeer(delay_s=3.0) as peer:
        backend = OpenAIBackend(OpenAISettings(base_url=peer.base_url, model="m"))
        linker = RDCLinker(predictor, backend, DetectionPolicy(kind="budget", budget=1.0), llm_timeout_s=0.3)
        result = run(linker.link([s.tokens for s in toy_dev[:3]]))
    assert result.stats.degraded and result.stats.timings_s["classify"] < 2.0
    assert sum(len(s) for s in result.sentences) > 0


class SlowRecognizer:
    """A local model that takes ``delay_s`` and notes whether its call was cancelled."""

    labels = ["PER", "LOC"]

    def __init__(self, delay_s):
        self.delay_s = delay_s
        self.cancelled = False

    async def recognize(self, sentences, estimators):
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return [[] for _ in sentences]


def test_the_local_step_ends_at_the_deadline_and_gives_its_call_back():
    """A local model slower than the caller's deadline: DeadlineExceeded at the deadline (not
    when the model answers), and the pending call is cancelled so its batch slot is freed."""
    import time

    from linkner.routing.linker import DeadlineExceeded

    slow = SlowRecognizer(5.0)
    linker = RDCLinker(slow, None, DetectionPolicy(kind="none"))
    started = time.perf_counter()
    with pytest.raises(DeadlineExceeded, match="before the local model answered"):
        run(linker.link([["a", "b"]], deadline_at=time.time() + 0.2))
    assert 0.15 < time.perf_counter() - started < 1.5 and slow.cancelled
    quick = SlowRecognizer(0.01)
    result = run(RDCLinker(quick, None, DetectionPolicy(kind="none")).link([["a"]], deadline_at=time.time() + 5))
    assert result.sentences == [[]] and not quick.cancelled
    late = RDCLinker(SlowRecognizer(5.0), None, DetectionPolicy(kind="none"))
    with pytest.raises(DeadlineExceeded):  # already past: no wait at all
        run(late.link([["a"]], deadline_at=time.time() - 1))


def synthetic_dev(count, wrong):
    """``count`` one-entity sentences (gold PER); the local model says LOC, very uncertain, on the
    sentences in ``wrong`` and PER, fairly sure, elsewhere (distinct uncertainties, distinct words)."""
    sentences, predictions = [], []
    for i in range(count):
        sentences.append(make_sentence(["s", f"w{i}", "spoke", "."], [Span(1, 2, "PER")]))
        u = 0.9 - 0.001 * i if i in wrong else 0.5 - 0.001 * i
        predictions.append([Entity(1, 2, "LOC" if i in wrong else "PER", 1 - u, {"confidence": u})])
    return sentences, predictions


class Lookup:
    """Answers a label per sentence (by its distinct second word)."""

    def __init__(self, model_id, label_of):
        self.model_id = model_id
        self.label_of = label_of

    async def classify(self, queries, labels, timeout_s=None):
        return [SpanAnswer(label=self.label_of(int(q.tokens[1][1:])), score=1.0, model=self.model_id)
                for q in queries]

    async def close(self):
        return None


def calibrated(sentences, predictions, backend, **options):
    cache = AnswerCache(backend, sentences, predictions, ["LOC", "ORG", "PER"])
    refs = [(i, 0) for i in range(len(sentences))]
    run(cache.ensure(refs, progress=False))
    return calibrate(sentences, predictions, "confidence", cache, max_share=1.0, **options)


def test_calibration_routes_for_the_oracle_with_a_clear_gain():
    sentences, predictions = synthetic_dev(200, wrong=set(range(0, 200, 5)))  # 40 wrong, all most uncertain
    good = calibrated(sentences, predictions, OracleBackend(sentences))
    assert good.dev_f1_local == pytest.approx(0.8)
    assert good.threshold is not None and good.routed_share == pytest.approx(40 / 200)
    assert good.dev_f1_linked == pytest.approx(1.0) and good.dev_f1_linked > good.dev_f1_local
    assert 0 < good.gain_low <= good.gain <= good.gain_high and good.resamples == 1000
    assert len(detect(predictions, DetectionPolicy(kind="calibrated", calibration=good))) == 40
    assert "interval [" in good.summary()
    strict = calibrated(sentences, predictions, OracleBackend(sentences), margin=0.5)  # asks more than the gain
    assert strict.threshold is None and strict.routed_share == 0.0


def test_calibration_routes_nothing_for_an_always_wrong_llm():
    sentences, predictions = synthetic_dev(200, wrong=set(range(0, 200, 5)))
    useless = calibrated(sentences, predictions, Lookup("wrong", lambda i: "ORG"))  # gold is PER, local LOC/PER
    assert useless.threshold is None and useless.routed_share == 0.0
    assert useless.dev_f1_linked == useless.dev_f1_local == pytest.approx(0.8)
    assert useless.gain <= 0
    assert detect(predictions, DetectionPolicy(kind="calibrated", calibration=useless)) == []


def test_calibration_routes_nothing_for_a_gain_on_one_sentence():
    sentences, predictions = synthetic_dev(300, wrong={0})
    helps_once = Lookup("once", lambda i: "PER")  # fixes sentence 0, repeats the local answer elsewhere
    result = calibrated(sentences, predictions, helps_once)
    assert result.gain > 1e-12  # the old rule (any gain above 1e-12) would route
    assert result.gain_low <= 0 < result.gain_high
    assert result.threshold is None and result.routed_share == 0.0 and result.dev_f1_linked == result.dev_f1_local


def test_paired_bootstrap_is_seeded_and_paired():
    from linkner.evaluation.calibration import paired_bootstrap

    local = np.array([[1, 1, 1]] * 50 + [[0, 1, 1]] * 50)
    assert paired_bootstrap(local, local) == (0.0, 0.0)  # paired: identical systems never differ
    better = np.array([[1, 1, 1]] * 100)
    low, high = paired_bootstrap(local, better, seed=3)
    assert (low, high) == paired_bootstrap(local, better, seed=3)
    assert 0.3 < low < 0.5 < high < 0.7  # the gain is 0.5 F1


def test_evaluate_linking_report_and_plot(tiny_checkpoint, toy_dev, tmp_path):
    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    report = run(evaluate_linking(predictor, toy_dev, "toy", [0.1, 0.5, 1.0], ["confidence", "entropy"],
                                  backend=OracleBackend(toy_dev), dev=toy_dev, plot=tmp_path / "sweep.png",
                                  progress=False))
    assert report.oracle_f1_at("confidence", 1.0) >= report.local_f1
    assert report.llm.accuracy_on_asked == 1.0 and report.llm.errors == 0
    assert report.calibrated_f1 >= report.local_f1
    assert (tmp_path / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert "oracle, entropy" in report.markdown()
    assert report.calibration.resamples == 1000 and "% interval [" in report.markdown()


class RefusingBackend:
    """An LLM pool whose queue is full: every call is refused at once (as the deployment handle's
    BackPressureError arrives through :class:`deployments.handles.HandleBackend`)."""

    model_id = "refusing"

    async def classify(self, queries, labels, timeout_s=None):
        from linkner.llm.protocol import LLMOverloaded

        raise LLMOverloaded("1 calls queued, at most 1")


def test_a_refused_llm_call_keeps_the_local_answers_marked_overloaded(tiny_checkpoint, toy_dev):
    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    sentences = [s.tokens for s in toy_dev[:3]]
    local = run(RDCLinker(predictor, None, DetectionPolicy(kind="none")).link(sentences))
    linker = RDCLinker(predictor, RefusingBackend(), DetectionPolicy(kind="budget", budget=1.0), llm_timeout_s=30)
    result = run(linker.link(sentences))
    stats = result.stats
    assert stats.routed > 0 and stats.llm_errors == stats.llm_overloaded == stats.routed and not stats.llm_timeouts
    assert stats.degraded and stats.degraded_kind == "llm_overloaded" and "LLM overloaded" in stats.degraded_reason
    assert [[(e.start, e.end, e.label) for e in s] for s in result.sentences] == \
           [[(e.start, e.end, e.label) for e in s] for s in local.sentences]


def test_merge_tells_failures_apart_by_their_typed_kind_not_their_text():
    answers = [SpanAnswer(error="queue full", failure="overloaded", model="m"),
               SpanAnswer(error="took too long", failure="timeout", model="m"),
               SpanAnswer(error="a deadline-shaped message, but an error", model="m")]
    assert answers[2].failure == "error"  # every error answer gets a kind
    _, stats = merge(PREDICTIONS, [(0, 0), (0, 1), (1, 0)], answers)
    assert (stats.llm_errors, stats.llm_timeouts, stats.llm_overloaded) == (3, 1, 1)
    assert stats.degraded_kind == "llm_overloaded"  # the first failure's kind
    _, stats = merge(PREDICTIONS, [(1, 0)], [SpanAnswer(error="x", failure="timeout", model="m")])
    assert stats.degraded_kind == "llm_timeout"


def test_a_caught_exception_gets_its_kind_where_it_is_caught():
    import asyncio

    from linkner.llm.protocol import LLMOverloaded, error_answer, failure_of

    assert [failure_of(error) for error in (TimeoutError("t"), asyncio.TimeoutError(), LLMOverloaded("full"),
                                            ConnectionError("down"))] == ["timeout", "timeout", "overloaded", "error"]
    answer = error_answer("m", TimeoutError("slow peer"))
    assert (answer.failure, answer.error, answer.ok) == ("timeout", "TimeoutError: slow peer", False)
