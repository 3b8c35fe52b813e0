"""The stored calibration is tied to what it measured: a calibration made for another LLM, answer
mode, demonstrations, estimator or checkpoint is refused (logged, shown by Describe), the main job
recalibrates then, and the configured max_llm_spans survives a calibration."""

import logging
import shutil

import pytest

from linkner.llm.factory import LLMConfig, model_id_for
from linkner.model.metadata import read_metadata, write_metadata
from linkner.routing.policy import Calibration
from linkner.service.calibration_state import calibration_state, expected_key
from linkner.service.config import AppConfig


def fake_checkpoint(folder, weights=b"weights-1"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "linkner_config.json").write_text("{}")
    return folder


def config_for(checkpoint, mode="letter", estimator="confidence", demonstrations=None, options="all", **policy):
    return AppConfig.model_validate({
        "ner": {"checkpoint": str(checkpoint)},
        "llm_pool": {"llm": {"backend": "vllm", "model": "/models/smollm2-135m", "mode": mode, "options": options}},
        "router": {"policy": {"kind": "threshold", "threshold": 0.5, "estimator": estimator, **policy},
                   "demonstrations": demonstrations or {"kind": "none"}},
    })


def store(checkpoint, key, threshold=0.25, estimator="confidence"):
    calibration = Calibration(estimator=estimator, threshold=threshold, llm_model=key.llm if key else "m",
                              dev_f1_local=0.8, dev_f1_linked=0.85, routed_share=0.1, max_share=0.3, sentences=600,
                              key=key)
    write_metadata(checkpoint, {"calibration": calibration.model_dump()})
    return calibration


def test_a_matching_calibration_is_applied_and_keeps_the_configured_cap(tmp_path):
    checkpoint = fake_checkpoint(tmp_path / "model")
    config = config_for(checkpoint, max_llm_spans=3)
    store(checkpoint, expected_key(config))
    state = calibration_state(config)
    assert state.status == "applied"
    policy = state.policy
    assert (policy.kind, policy.calibration.threshold, policy.estimator) == ("calibrated", 0.25, "confidence")
    assert policy.max_llm_spans == 3  # the server's configured cap is not lost under calibration


def test_no_calibration_uses_the_configured_policy(tmp_path):
    config = config_for(fake_checkpoint(tmp_path / "model"))
    state = calibration_state(config)
    assert state.status == "none" and state.policy == config.router.policy


@pytest.mark.parametrize("change, differs", [
    ({"mode": "label"}, "llm differs (stored vllm:smollm2-135m:letter, configured vllm:smollm2-135m:label)"),
    ({"estimator": "entropy"}, "estimator differs (stored confidence, configured entropy)"),
    ({"options": "candidates"}, "llm differs (stored vllm:smollm2-135m:letter, configured vllm:smollm2-135m:letter:top2)"),
])
def test_a_calibration_for_another_setting_is_stale(tmp_path, caplog, change, differs):
    checkpoint = fake_checkpoint(tmp_path / "model")
    store(checkpoint, expected_key(config_for(checkpoint)))
    config = config_for(checkpoint, **change)
    with caplog.at_level(logging.WARNING):
        state = calibration_state(config)
    assert state.status == f"stale: {differs}"
    assert state.policy == config.router.policy and state.policy.kind == "threshold"
    assert differs in caplog.text and "not applied" in caplog.text


def test_retrained_weights_or_other_demonstrations_make_it_stale(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"tokens": ["a"], "entities": []}\n')
    demos = {"kind": "random", "k": 2, "train": str(train)}
    checkpoint = fake_checkpoint(tmp_path / "model")
    store(checkpoint, expected_key(config_for(checkpoint, demonstrations=demos)))
    assert calibration_state(config_for(checkpoint, demonstrations=demos)).status == "applied"
    assert calibration_state(config_for(checkpoint, demonstrations={**demos, "k": 3})).status.startswith(
        "stale: demonstrations differs (stored random k=2 seed=0")
    train.write_text('{"tokens": ["b"], "entities": []}\n')
    assert calibration_state(config_for(checkpoint, demonstrations=demos)).status.startswith(
        "stale: demonstrations differs")
    train.write_text('{"tokens": ["a"], "entities": []}\n')
    fake_checkpoint(checkpoint, weights=b"weights-2")  # retrained
    assert calibration_state(config_for(checkpoint, demonstrations=demos)).status.startswith(
        "stale: checkpoint differs (stored sha256:")
    copy = shutil.copytree(checkpoint, tmp_path / "copy")  # a copy is the same model
    fake_checkpoint(checkpoint, weights=b"weights-1")
    shutil.copy2(checkpoint / "model.safetensors", copy / "model.safetensors")
    assert calibration_state(config_for(copy, demonstrations=demos)).status == "applied"


def test_an_unkeyed_or_disabled_calibration_is_not_applied(tmp_path):
    checkpoint = fake_checkpoint(tmp_path / "model")
    store(checkpoint, None)
    assert calibration_state(config_for(checkpoint)).status.startswith("stale: no key recorded")
    config = config_for(checkpoint)
    config.router.use_calibration = False
    store(checkpoint, expected_key(config))
    state = calibration_state(config)
    assert state.status.startswith("disabled") and state.policy.kind == "threshold"


def test_the_model_id_for_is_what_the_backend_reports(tmp_path):
    from linkner.llm.factory import build_backend

    folder = tmp_path / "smollm2-135m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    for options in ("all", "candidates"):
        for mode in ("letter", "label", "choice"):
            config = LLMConfig(backend="vllm", model=str(folder), mode=mode, options=options)
            backend = build_backend(config)  # the engine starts lazily: not here
            assert backend.model_id == model_id_for(config)
            assert backend.with_mode("label").model_id == model_id_for(config.model_copy(update={"mode": "label"}))
        served = LLMConfig(backend="openai", model="served", base_url="http://127.0.0.1:1/v1", options=options)
        assert build_backend(served).model_id == model_id_for(served)
    assert model_id_for(LLMConfig(model=str(folder))) == "vllm:smollm2-135m:letter:top2"  # the default form


def test_the_model_id_for_matches_the_transformers_backend(smollm2):
    from linkner.llm.factory import build_backend

    for mode in ("letter", "choice"):
        config = LLMConfig(backend="transformers", model=str(smollm2), mode=mode)
        assert build_backend(config).model_id == model_id_for(config)


def test_main_job_recalibrates_only_when_the_key_changes(tiny_checkpoint, toy_dev, tmp_path, monkeypatch):
    """The real calibration (the checkpoint predicts dev, the LLM is asked about the most uncertain
    spans, the threshold is swept and bootstrapped) with the oracle backend as the LLM: it answers
    the gold label, so asking it can only help. Only the configured backend's construction is
    replaced (the factory builds no oracle); what it was asked to build is recorded."""
    from linkner.data.readers import write_dataset
    from linkner.data.spans import Span
    from linkner.evaluation.scores import entity_scores
    from linkner.llm import factory
    from linkner.llm.oracle import OracleBackend
    from linkner.model.predictor import SpanPredictor
    from linkner.routing.ranking import share_count
    from linkner.service.prepare import ensure_calibration

    checkpoint = shutil.copytree(tiny_checkpoint, tmp_path / "model")
    data = tmp_path / "data"
    data.mkdir()
    write_dataset(data / "dev.txt", toy_dev)
    dev = toy_dev[:20]
    built, asked = [], []

    class AskedOracle(OracleBackend):
        async def classify(self, queries, labels, timeout_s=None):
            asked.append([(tuple(q.tokens), q.start, q.end) for q in queries])
            return await super().classify(queries, labels, timeout_s)

    def build_backend(config):
        built.append(config)
        return AskedOracle(toy_dev)

    monkeypatch.setattr(factory, "build_backend", build_backend)

    def served(model):
        return AppConfig.model_validate({
            "ner": {"checkpoint": str(checkpoint)},
            "llm_pool": {"llm": {"backend": "openai", "model": model, "base_url": "http://127.0.0.1:1/v1"}}})

    ensure_calibration(served("small"), data, 20, margin=0.01)
    assert [config.model for config in built] == ["small"]
    stored = Calibration.model_validate(read_metadata(checkpoint)["calibration"])
    # what the checkpoint itself gets on these 20 sentences, without any LLM
    predicted = SpanPredictor.from_checkpoint(checkpoint, device="cpu").predict([s.tokens for s in dev])
    local_f1 = entity_scores([s.entities for s in dev],
                             [[Span(e.start, e.end, e.label) for e in sentence] for sentence in predicted]).micro.f1
    spans = sum(map(len, predicted))
    assert (stored.sentences, stored.estimator, stored.margin, stored.max_share) == (20, "confidence", 0.01, 0.3)
    assert stored.llm_model == "oracle" and stored.key == expected_key(served("small"))
    assert stored.dev_f1_local == pytest.approx(local_f1) and stored.dev_f1_linked >= stored.dev_f1_local
    # the oracle was asked about the most uncertain 30% of the predicted spans, in these 20 sentences only
    questions = {question for call in asked for question in call}
    assert len(questions) == share_count(0.3, spans) > 0
    assert {tokens for tokens, _, _ in questions} <= {s.tokens for s in dev}
    # the oracle corrects what it is asked about: the best candidate share never loses F1, and was bootstrapped
    assert stored.gain is not None and stored.gain >= 0 and stored.candidate_share > 0 and stored.resamples == 1000
    assert 0.0 <= stored.routed_share <= stored.max_share
    if stored.threshold is not None:  # routing kept: the gain's interval is above the margin
        assert stored.gain_low > 0.01 and stored.dev_f1_linked > stored.dev_f1_local
    else:
        assert stored.routed_share == 0.0 and stored.dev_f1_linked == stored.dev_f1_local
    assert calibration_state(served("small")).status == "applied"
    ensure_calibration(served("small"), data, 20)  # fresh: nothing to do
    assert len(built) == 1 and read_metadata(checkpoint)["calibration"] == stored.model_dump(mode="json")
    assert calibration_state(served("large")).status == \
        "stale: llm differs (stored openai:small:top2, configured openai:large:top2)"
    ensure_calibration(served("large"), data, 20)  # a stronger LLM: recalibrated
    assert [config.model for config in built] == ["small", "large"]
    assert read_metadata(checkpoint)["calibration"]["key"]["llm"] == "openai:large:top2"
    assert calibration_state(served("large")).status == "applied"


def test_describe_shows_policy_and_calibration_status(tiny_checkpoint, toy_dev):
    import json

    from protos.convert import description_from_proto, description_to_proto
    from linkner.llm.oracle import OracleBackend
    from linkner.model.predictor import SpanPredictor
    from linkner.routing.linker import RDCLinker
    from linkner.routing.policy import DetectionPolicy
    from linkner.service.limits import ServiceLimits
    from linkner.service.service import LinkNERService

    calibration = Calibration(estimator="confidence", threshold=0.25, llm_model="oracle", dev_f1_local=0.8,
                              dev_f1_linked=0.85, routed_share=0.1, max_share=0.3, sentences=600)
    predictor = SpanPredictor.from_checkpoint(tiny_checkpoint, device="cpu")
    linker = RDCLinker(predictor, OracleBackend(toy_dev), DetectionPolicy(kind="calibrated", calibration=calibration))
    service = LinkNERService(linker, ["confidence", "entropy"], "tiny", ServiceLimits(max_llm_spans_per_request=7),
                             "applied", calibration.model_dump(mode="json"))
    description = service.describe()
    assert (description.model, description.llm_backend, description.calibration_status) == ("tiny", "oracle", "applied")
    assert description.labels == predictor.labels and description.estimators == ["confidence", "entropy"]
    assert description.policy == "calibrated: confidence > 0.2500, at most 7 spans per request"
    client_side = description_from_proto(description_to_proto(description))
    assert client_side.calibration["threshold"] == 0.25 and client_side.max_llm_spans_per_request == 7
    assert client_side.model_dump(exclude={"calibration"}) == description.model_dump(exclude={"calibration"})
    assert description.calibration == client_side.calibration == calibration.model_dump(mode="json")
