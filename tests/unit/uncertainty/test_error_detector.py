"""The learned error detector: features, document evidence, calibration, its stored form and its
refusal when stale, and the ``learned`` estimator chosen per request through the in-process service."""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest

from linkner.data.readers import conll_documents, read_conll
from linkner.data.spans import Entity, Span, make_sentence
from linkner.evaluation.perturb import perturb
from linkner.evaluation.scores import calibration_bins
from linkner.llm.oracle import OracleBackend
from linkner.model.decoding import consistent_labels
from linkner.model.predictor import SpanPredictor
from linkner.routing.linker import RDCLinker
from linkner.routing.policy import DetectionPolicy
from protos.protocol import InvalidRequest, RecognizeOptions, RecognizeRequest
from linkner.service.service import LinkNERService
from linkner.uncertainty.detector import DETECTOR_FILE, DetectorError, checkpoint_fingerprint, load_detector
from linkner.uncertainty.features import (DOCUMENT_FEATURES, Lexicon, document_features, document_groups,
                                          feature_matrix, feature_names)
from linkner.uncertainty.fitting import document_chunks, fit_isotonic, fit_on_dev

LABELS = ["LOC", "MISC", "ORG", "PER"]


def entity(start, end, label, probability=0.9):
    rest = (1 - probability) / 4
    alternatives = [(label, probability)] + [(other, rest) for other in ["O", *LABELS] if other != label]
    return Entity(start, end, label, probability, {}, alternatives)


def test_lexicon_counts_labels_and_unlabelled_occurrences():
    train = [make_sentence(["Paris", "is", "big"], [Span(0, 1, "LOC")]),
             make_sentence(["Paris", "Hilton", "sang"], [Span(0, 2, "PER")]),
             make_sentence(["in", "Paris", "."], [Span(1, 2, "ORG")])]
    lexicon = Lexicon.from_sentences(train, LABELS)
    assert lexicon.surfaces["Paris"] == {"LOC": 1, "ORG": 1, "O": 1}  # the unlabelled one inside "Paris Hilton"
    assert lexicon.surfaces["Paris Hilton"] == {"PER": 1}
    assert "hilton" in lexicon.vocabulary
    assert Lexicon.from_json(json.loads(json.dumps(lexicon.to_json()))) == lexicon


def test_document_evidence_sees_disagreeing_labels_unpredicted_mentions_and_related_names():
    sentences = [["Bill", "Clinton", "met", "Jordan", "."], ["Clinton", "and", "Jordan", "left"], ["Jordan", "won"]]
    predictions = [[entity(0, 2, "PER"), entity(3, 4, "LOC")], [entity(0, 1, "ORG"), entity(2, 3, "PER")], []]
    evidence = document_features(sentences, predictions, [0, 1, 2])
    named = {key: dict(zip(DOCUMENT_FEATURES, values)) for key, values in evidence.items()}
    jordan = named[(0, 1)]
    assert jordan["doc_same"] == pytest.approx(np.log1p(1))  # one other "Jordan" prediction...
    assert jordan["doc_same_other_label"] == 1.0  # ...with another label
    assert jordan["doc_unpredicted"] == pytest.approx(np.log1p(1))  # and once not predicted at all
    clinton = named[(1, 0)]
    assert clinton["doc_related"] > 0 and clinton["doc_related_other_label"] == 1.0  # ORG against "Bill Clinton" PER
    # separate documents share no evidence
    apart = document_features(sentences, predictions, [0])
    assert dict(zip(DOCUMENT_FEATURES, apart[(0, 1)]))["doc_same"] == 0.0
    assert document_groups(3, [5, 5, 7]) == [[0, 1], [2]] and document_groups(2, None) == [[0, 1]]


def test_feature_matrix_has_one_named_row_per_prediction():
    lexicon = Lexicon.from_sentences([make_sentence(["Paris"], [Span(0, 1, "LOC")])], LABELS)
    sentences = [["Paris", "AND", "LONDON"], ["Rome"]]
    predictions = [[entity(0, 1, "LOC"), entity(2, 3, "LOC")], [entity(0, 1, "PER")]]
    span_rows = [[[0.9] * 7, [0.8] * 7], [[0.7] * 7]]
    rows = feature_matrix(sentences, predictions, span_rows, lexicon)
    names = feature_names(LABELS)
    assert rows.shape == (3, len(names))
    column = {name: rows[:, i] for i, name in enumerate(names)}
    assert column["train_seen"].tolist() == [1.0, 0.0, 0.0]
    assert column["all_caps"].tolist() == [0.0, 1.0, 0.0]
    assert column["label_PER"].tolist() == [0.0, 0.0, 1.0]


def test_document_chunks_keep_documents_whole():
    assert document_chunks([0, 0, 1, 1, 1, 2, 3], size=3) == [(0, 5), (5, 7)]
    assert document_chunks([], size=3) == []


def test_conll_documents_follow_docstart(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("-DOCSTART- O\n\nA B-PER\n\nB O\n\n-DOCSTART- O\n\nC B-LOC\n", encoding="utf-8")
    assert conll_documents(path) == [0, 0, 1] and len(read_conll(path)) == 3


def test_isotonic_calibration_is_monotone_and_fixes_overconfidence():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 1, 4000)
    wrong = (rng.uniform(0, 1, 4000) < raw ** 3).astype(np.int64)  # the raw score overstates the error rate
    calibration = fit_isotonic(raw, wrong)
    grid = np.linspace(-0.5, 1.5, 401)
    mapped = calibration(grid)
    assert np.all(np.diff(mapped) >= 0) and mapped.min() >= 0 and mapped.max() <= 1
    before, _ = calibration_bins(1 - raw, (wrong == 0).tolist())
    after, _ = calibration_bins(1 - calibration(raw), (wrong == 0).tolist())
    assert after < 0.03 < before


def test_consistent_labels_take_the_documents_majority():
    sentences = [["Jordan", "won"], ["Jordan", "lost"], ["Jordan", "drew"]]
    predictions = [[entity(0, 1, "PER", 0.9)], [entity(0, 1, "PER", 0.8)], [entity(0, 1, "LOC", 0.6)]]
    predictions[2][0].uncertainty["confidence"] = 0.4
    fixed = consistent_labels(sentences, predictions, [[0, 1, 2]])
    assert [e.label for s in fixed for e in s] == ["PER", "PER", "PER"]
    assert fixed[2][0].uncertainty["confidence"] == pytest.approx(1 - fixed[2][0].probability)
    assert predictions[2][0].label == "LOC"  # a copy, the input is unchanged
    assert [e.label for s in consistent_labels(sentences, predictions, [[0, 1], [2]]) for e in s] == ["PER", "PER", "LOC"]


# ------------------------------------------------------------------ a real (tiny) model with a fitted detector


@pytest.fixture(scope="module")
def detector_checkpoint(tiny_checkpoint, toy_train, toy_dev, tmp_path_factory):
    """A copy of the tiny checkpoint with an error detector fitted on its (toy) dev predictions."""
    folder = tmp_path_factory.mktemp("with-detector")
    shutil.copytree(tiny_checkpoint, folder, dirs_exist_ok=True)
    predictor = SpanPredictor.from_checkpoint(folder, device="cpu")
    dev = toy_dev + perturb(toy_dev, "oov", 1, toy_train)  # some errors to learn from
    documents = [index // 10 for index in range(len(dev))]
    fit = fit_on_dev(predictor, folder, toy_train, dev, documents, "trees", folds=3, progress=False)
    assert 0 < fit.wrong.sum() < len(fit.wrong) and len(fit.rows) == len(fit.wrong) == len(fit.out_of_fold)
    assert fit.detector.checkpoint == checkpoint_fingerprint(folder) and fit.detector.report["folds"] == 3
    fit.detector.save(folder)
    return folder


def test_dev_spans_in_too_few_documents_are_a_clear_error_not_a_crash(tiny_checkpoint, toy_train, toy_dev):
    """A model that predicts spans in fewer dev documents than folds (an early or weak one) gets a
    DetectorError saying so (the main job then offers no ``learned`` estimator)."""
    from linkner.uncertainty.detector import DetectorError

    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    with pytest.raises(DetectorError, match="too few to fit an error detector"):
        fit_on_dev(predictor, tiny_checkpoint, toy_train, toy_dev, [0] * len(toy_dev), "trees", folds=3,
                   progress=False)


@pytest.mark.slow  # 25-90 s on 2 cores: not in the quick subset
def test_the_main_job_fits_a_missing_detector_once(tiny_checkpoint, toy_train, toy_dev, tmp_path, capsys):
    """A fresh checkpoint gets its detector from the main job (fitted on dev), and a valid one is kept."""
    from linkner.data.readers import write_conll
    from linkner.service.prepare import ensure_error_detector

    folder = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, folder)
    data = tmp_path / "data"
    data.mkdir()
    write_conll(data / "train.txt", toy_train)
    dev = toy_dev + perturb(toy_dev, "oov", 1, toy_train)
    parts = []
    for first in range(0, len(dev), 10):  # documents of 10 sentences, as CoNLL marks them
        write_conll(tmp_path / "part.txt", dev[first : first + 10])
        parts.append("-DOCSTART-\tO\n\n" + (tmp_path / "part.txt").read_text(encoding="utf-8"))
    (data / "dev.txt").write_text("".join(parts), encoding="utf-8")
    ensure_error_detector(folder, data)
    assert "learned" in SpanPredictor.from_checkpoint(folder, device="cpu").estimators
    written = (folder / "error_detector.json").stat().st_mtime_ns
    ensure_error_detector(folder, data)
    assert (folder / "error_detector.json").stat().st_mtime_ns == written
    assert "fitting it on dev" in capsys.readouterr().err


def test_learned_is_chosen_per_request_through_the_service(detector_checkpoint, toy_dev):
    predictor = SpanPredictor.from_checkpoint(detector_checkpoint, device="cpu")
    assert "learned" in predictor.estimators
    linker = RDCLinker(predictor, OracleBackend(toy_dev), DetectionPolicy(kind="threshold", threshold=0.5))
    service = LinkNERService(linker, predictor.estimators, "tiny")
    assert "learned" in service.describe().estimators
    text = "John Smith visited Paris yesterday .  Google said Mary Jones will move to Tokyo ."

    def answer(**options):
        result, _ = asyncio.run(service.answer(service.prepare(RecognizeRequest(
            text=text, options=RecognizeOptions(**options)))))
        return result

    learned = answer(estimator="learned", budget=0.0)
    default = answer(policy="none")
    assert learned.entities and all(0.0 <= e.uncertainty <= 1.0 for e in learned.entities)
    # the default estimator is confidence (1 - the local probability); learned is the detector's own score
    assert all(e.uncertainty == pytest.approx(1 - e.local_probability) for e in default.entities)
    sentences = [text.split(" .")[0].split() + ["."], text.split(" .  ")[1].split()]
    scored = [e.uncertainty["learned"] for s in predictor.predict(sentences, ["learned"]) for e in s]
    assert [e.uncertainty for e in learned.entities] == pytest.approx(scored)
    # everything routed by the learned ranking goes to the (oracle) LLM
    assert answer(estimator="learned", budget=1.0).llm_spans == len(learned.entities)


def test_served_scores_equal_the_detectors_own_and_see_the_whole_request(detector_checkpoint):
    predictor = SpanPredictor.from_checkpoint(detector_checkpoint, device="cpu")
    sentences = [["John", "Smith", "visited", "Paris", "."], ["Paris", "said", "John", "Smith", "left", "."]]
    served = predictor.predict(sentences, ["confidence", "learned"])
    predictions, span_rows = predictor.predict_with_span_features(sentences, ["confidence"])
    expected = predictor.detector.probability_wrong(predictor.detector.rows(sentences, predictions, span_rows))
    assert [e.uncertainty["learned"] for s in served for e in s] == pytest.approx(expected.tolist())
    apart = predictor.predict(sentences, ["learned"], documents=[0, 1])
    together = predictor.detector.rows(sentences, predictions, span_rows)
    separate = predictor.detector.rows(sentences, predictions, span_rows, [0, 1])
    assert not np.array_equal(together, separate)  # the second sentence's evidence depends on the first
    assert [e.uncertainty["learned"] for s in apart for e in s] == pytest.approx(
        predictor.detector.probability_wrong(separate).tolist())


def test_a_stale_detector_is_refused(detector_checkpoint, tmp_path):
    folder = tmp_path / "stale"
    shutil.copytree(detector_checkpoint, folder)
    data = json.loads((folder / DETECTOR_FILE).read_text())
    data["checkpoint"] = "sha256:" + "0" * 64  # fitted for other weights
    (folder / DETECTOR_FILE).write_text(json.dumps(data))
    with pytest.raises(DetectorError, match="stale"):
        load_detector(folder)
    predictor = SpanPredictor.from_checkpoint(folder, device="cpu")
    assert "learned" not in predictor.estimators and "stale" in predictor.detector_problem
    with pytest.raises(ValueError, match="stale"):
        predictor.predict([["John", "Smith"]], ["learned"])
    service = LinkNERService(RDCLinker(predictor, None, DetectionPolicy()), predictor.estimators, "tiny")
    with pytest.raises(InvalidRequest, match="unknown estimator 'learned'"):
        service.prepare(RecognizeRequest(text="John Smith", options=RecognizeOptions(estimator="learned")))


def test_the_ner_pool_gets_whole_documents_and_their_ids_for_learned():
    from deployments.handles import CoalescingRecognizer

    calls = []

    class NER:
        async def predict(self, sentences, estimators, carrier, documents=None, requests=1):
            calls.append((len(sentences), documents))
            return [[] for _ in sentences]

    recognizer = CoalescingRecognizer(NER(), LABELS, max_words_per_call=4)
    sentences = [[f"s{i}", "a", "b"] for i in range(5)]
    asyncio.run(recognizer.recognize(sentences, ["confidence"]))
    assert calls == [(1, None)] * 5  # chunked, no document ids
    calls.clear()

    async def two_requests():
        return await asyncio.gather(recognizer.recognize(sentences, ["learned"]),
                                    recognizer.recognize(sentences[:2], ["learned"]))

    asyncio.run(two_requests())
    assert [count for count, _ in calls] in ([5, 2], [7])  # one call per document, or both together
    assert all(documents is not None for _, documents in calls)
    if len(calls) == 1:
        assert calls[0][1] == [0] * 5 + [1] * 2  # each request its own document


def test_routing_calibrates_on_the_learned_estimator(detector_checkpoint, toy_dev, toy_train):
    """The calibrated policy can rank by ``learned``: with an oracle LLM on (perturbed) dev it routes
    the spans the detector doubts, and the linked F1 is not below the local one."""
    import asyncio

    from linkner.llm.oracle import OracleBackend
    from linkner.evaluation.calibration import calibrate_on

    predictor = SpanPredictor.from_checkpoint(detector_checkpoint, device="cpu")
    dev = toy_dev + perturb(toy_dev, "oov", 2, toy_train)
    calibration = asyncio.run(calibrate_on(predictor, OracleBackend(dev), dev, "learned", progress=False))
    assert calibration.estimator == "learned"
    assert calibration.dev_f1_linked >= calibration.dev_f1_local
    assert calibration.routed_share > 0
