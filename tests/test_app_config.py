"""The app builder refuses bad args at start-up with a message saying what to do."""

from pathlib import Path

import pytest

from serve.app import ConfigError, validate_config


def test_missing_checkpoint_says_how_to_train(tmp_path):
    with pytest.raises(ConfigError, match=r"no trained model at ner.checkpoint=.*linkner train"):
        validate_config({"ner": {"checkpoint": str(tmp_path / "nope")}})


def test_unknown_keys_and_bad_values_are_reported(tiny_checkpoint):
    with pytest.raises(ConfigError, match="ner.max_batch_sise"):
        validate_config({"ner": {"checkpoint": str(tiny_checkpoint), "max_batch_sise": 4}})
    with pytest.raises(ConfigError, match="must be at least max_batch_size"):
        validate_config({"ner": {"checkpoint": str(tiny_checkpoint), "max_batch_size": 8, "max_ongoing_requests": 4}})
    with pytest.raises(ConfigError, match="unknown uncertainty estimator"):
        validate_config({"ner": {"checkpoint": str(tiny_checkpoint)},
                         "router": {"policy": {"estimator": "vibes"}}})


def test_missing_llm_folder_says_prepare_llm(tiny_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="linkner prepare-llm"):
        validate_config({"ner": {"checkpoint": str(tiny_checkpoint)},
                         "llm_pool": {"llm": {"backend": "vllm", "model": str(tmp_path / "none")}}})


def test_relative_paths_resolve_against_the_project_root(tiny_checkpoint):
    config = validate_config({"ner": {"checkpoint": str(tiny_checkpoint)}, "llm_pool": {"enabled": False},
                              "telemetry": {"exporter": "jsonl", "jsonl_path": "artifacts/traces.jsonl"}})
    project = Path(__file__).resolve().parent.parent
    assert config.telemetry.jsonl_path == str(project / "artifacts" / "traces.jsonl")
    assert config.ner.max_ongoing_requests == 4 * config.ner.max_batch_size  # the batch queue fills a batch


def test_the_default_checkpoint_is_in_the_projects_artifacts():
    from linkner.service.config import DEFAULT_CHECKPOINT

    assert DEFAULT_CHECKPOINT == Path(__file__).resolve().parent.parent / "artifacts" / "models" / "default"


def test_the_shipped_config_files_validate(tiny_checkpoint):
    import yaml

    from serve.main_job import ROOT

    for name in ("serve_config.yaml", "serve_config.gpu.yaml"):
        args = yaml.safe_load((ROOT / name).read_text())["applications"][0]["args"]
        args["ner"]["checkpoint"] = str(tiny_checkpoint)
        args["llm_pool"]["enabled"] = False
        assert validate_config(args).ner.checkpoint == str(tiny_checkpoint)


def test_demonstrations_need_their_training_data(tiny_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="need `train`"):
        validate_config({"ner": {"checkpoint": str(tiny_checkpoint)}, "llm_pool": {"enabled": False},
                         "router": {"demonstrations": {"kind": "retrieved"}}})
    with pytest.raises(ConfigError, match="no such data file"):
        validate_config({"ner": {"checkpoint": str(tiny_checkpoint)}, "llm_pool": {"enabled": False},
                         "router": {"demonstrations": {"kind": "random", "train": str(tmp_path / "x.txt")}}})


def test_an_embedded_model_binds_no_ner_pool_and_the_ingress_reserves_its_cpus(tiny_checkpoint):
    from serve.app import build_app

    def ingress(placement):
        return build_app({"ner": {"checkpoint": str(tiny_checkpoint), "placement": placement,
                                  "resources": {"num_cpus": 1}}, "llm_pool": {"enabled": False}})._bound_deployment

    embedded, pooled = ingress("embedded"), ingress("pool")
    assert embedded.init_args[0] is None and embedded.ray_actor_options["num_cpus"] == 1.0
    assert pooled.init_args[0]._bound_deployment.name == "ner" and pooled.ray_actor_options["num_cpus"] == 0.0


def test_the_llm_pool_queue_is_bounded_and_a_zero_queue_is_refused(tiny_checkpoint):
    from serve.app import build_app

    args = {"ner": {"checkpoint": str(tiny_checkpoint)},
            "llm_pool": {"llm": {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1"},
                         "max_queued_requests": 3}}
    llm = build_app(args)._bound_deployment.init_args[1]._bound_deployment
    assert llm.name == "llm" and llm._deployment_config.max_queued_requests == 3
    for section in ("ner", "router", "llm_pool"):
        zero = {"ner": {"checkpoint": str(tiny_checkpoint)}, "llm_pool": {"enabled": False}, "router": {}}
        zero[section]["max_queued_requests"] = 0
        with pytest.raises(ConfigError, match=f"(?s){section}.max_queued_requests.*at least 1"):
            validate_config(zero)
