"""The app builder refuses bad args at start-up with a message saying what to do."""

from pathlib import Path

import pytest

from serve.app import ConfigError, validate_config


def test_missing_checkpoint_says_how_to_train(tmp_path):
    with pytest.raises(ConfigError, match=r"no trained model at ner.checkpoint=.*linkner train"):
        validate_config({"ner": {"checkpoint": str(tmp_path / "nope")}})


def test_unknown_keys_and_bad_values_are_reported(tiny_checkpoint):
    with pytest.raises(ConfigError, match="ner.max_ongoing_request"):
        validate_config({"ner": {"checkpoint": str(tiny_checkpoint), "max_ongoing_request": 4}})
    with pytest.raises(ConfigError, match="ner.concurrent_passes"):  # derived from the cores now, not set
        validate_config({"ner": {"checkpoint": str(tiny_checkpoint), "concurrent_passes": 2}})
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
    project = Path(__file__).resolve().parents[2]
    assert config.telemetry.jsonl_path == str(project / "artifacts" / "traces.jsonl")


def test_the_default_checkpoint_is_in_the_projects_artifacts():
    from linkner.service.config import DEFAULT_CHECKPOINT

    assert DEFAULT_CHECKPOINT == Path(__file__).resolve().parents[2] / "artifacts" / "models" / "default"


def test_the_code_defaults_are_the_shipped_cpu_profile():
    """serve_config.yaml sets only what a user changes: where the model and LLM are, the port, and
    what each replica reserves; everything else it serves is the code's default."""
    import yaml

    from linkner.service.config import AppConfig
    from serve.main_job import ROOT

    args = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][0]["args"]
    shipped, default = AppConfig.model_validate(args), AppConfig()
    assert shipped.ner.model_dump(exclude={"checkpoint"}) == default.ner.model_dump(exclude={"checkpoint"})
    assert shipped.llm_pool.model_dump(exclude={"llm": {"model"}}) == default.llm_pool.model_dump(exclude={"llm": {"model"}})
    assert shipped.router.model_dump(exclude={"deployment"}) == default.router.model_dump(exclude={"deployment"})
    assert shipped.router.deployment == {**default.router.deployment, "num_replicas": 1}
    assert shipped.server == default.server and shipped.telemetry == default.telemetry


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
        return build_app({"ner": {"checkpoint": str(tiny_checkpoint), "placement": placement},
                          "llm_pool": {"enabled": False}})._bound_deployment

    embedded, pooled = ingress("embedded"), ingress("pool")
    assert embedded.init_args[0] is None and embedded.ray_actor_options["num_cpus"] == 1.0
    assert pooled.init_args[0]._bound_deployment.name == "ner" and pooled.ray_actor_options["num_cpus"] == 0.0


def test_an_embedded_model_takes_its_custom_resources_to_the_ingress_and_refuses_its_own_scaling(tiny_checkpoint):
    from serve.app import ConfigError, build_app

    args = {"ner": {"checkpoint": str(tiny_checkpoint), "placement": "embedded",
                    "deployment": {"ray_actor_options": {"resources": {"ner_slot": 1}}}},
            "router": {"deployment": {"ray_actor_options": {"resources": {"ner_slot": 0.5, "head": 1}}}},
            "llm_pool": {"enabled": False}}
    ingress = build_app(args)._bound_deployment
    assert ingress.ray_actor_options["resources"] == {"ner_slot": 1.5, "head": 1}
    assert ingress.ray_actor_options["num_cpus"] == 1  # the model's default CPU, on the ingress's 0
    for scaling in ({"num_replicas": 2}, {"autoscaling_config": {"min_replicas": 1, "max_replicas": 2}}):
        args["ner"]["deployment"] = scaling
        with pytest.raises(ConfigError, match="set it in router.deployment"):
            build_app(args)


def test_deployment_options_are_rays_own_and_misspelt_ones_are_refused(tiny_checkpoint):
    """Ray Serve's schema ignores names it does not know: a typo would be dropped silently."""
    from serve.app import ConfigError, build_app

    base = {"ner": {"checkpoint": str(tiny_checkpoint), "placement": "pool"}, "llm_pool": {"enabled": False}}
    ner = build_app({**base, "ner": {**base["ner"], "deployment": {
        "num_replicas": 3, "max_replicas_per_node": 1, "ray_actor_options": {"num_gpus": 0.25}}}})
    pool = ner._bound_deployment.init_args[0]._bound_deployment
    assert pool._deployment_config.num_replicas == 3 and pool._replica_config.max_replicas_per_node == 1
    assert pool.ray_actor_options["num_gpus"] == 0.25 and pool.ray_actor_options["num_cpus"] == 1  # merged
    for bad, message in (({"num_replica": 2}, "ner.deployment: num_replica is not a Ray Serve deployment option"),
                         ({"ray_actor_options": {"num_cpu": 1}}, "ray_actor_options.num_cpu is not"),
                         ({"max_queued_requests": 0}, "max_queued_requests must be -1")):
        with pytest.raises(ConfigError, match=message):
            build_app({**base, "ner": {**base["ner"], "deployment": bad}})
    with pytest.raises(ConfigError, match="set router.max_ongoing_requests instead"):
        build_app({**base, "router": {"deployment": {"max_ongoing_requests": 4}}})


def test_ingress_autoscaling_counts_the_calls_of_its_own_server(tiny_checkpoint):
    from deployments.autoscaling import POLICY
    from serve.app import build_app

    autoscaling = {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 4}
    ingress = build_app({"ner": {"checkpoint": str(tiny_checkpoint), "placement": "embedded"},
                         "router": {"deployment": {"autoscaling_config": autoscaling}},
                         "llm_pool": {"enabled": False}})._bound_deployment
    config = ingress._deployment_config.autoscaling_config
    assert config.policy.policy_function == POLICY and config.max_replicas == 3


def test_the_ongoing_calls_policy_wants_calls_over_target_replicas():
    from types import SimpleNamespace

    from deployments.autoscaling import ongoing_calls_policy

    def context(calls: list[float], replicas: int = 2):
        return SimpleNamespace(current_num_replicas=replicas, target_num_replicas=replicas,
                               aggregated_metrics={"ongoing_calls": dict(enumerate(calls))},
                               config=SimpleNamespace(get_target_ongoing_requests=lambda: 4))

    assert ongoing_calls_policy(context([8.0, 8.0]))[0] == 4.0  # 16 calls, 4 a replica
    assert ongoing_calls_policy(context([0.0, 1.0]))[0] == 0.25  # Ray rounds and applies min_replicas
    assert ongoing_calls_policy(context([], replicas=0))[0] == 0


def test_the_llm_pool_queue_is_bounded_and_a_zero_queue_is_refused(tiny_checkpoint):
    from serve.app import build_app

    args = {"ner": {"checkpoint": str(tiny_checkpoint)},
            "llm_pool": {"llm": {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:1/v1"},
                         "deployment": {"max_queued_requests": 3}}}
    llm = build_app(args)._bound_deployment.init_args[1]._bound_deployment
    assert llm.name == "llm" and llm._deployment_config.max_queued_requests == 3
    assert llm._deployment_config.max_ongoing_requests == 4  # the default, kept beside the override
    with pytest.raises(ConfigError, match="(?s)router.max_queued_requests.*at least 1"):
        validate_config({"ner": {"checkpoint": str(tiny_checkpoint)}, "router": {"max_queued_requests": 0}})
    for section in ("ner", "llm_pool"):  # Ray's own rule, through its schema
        zero = {"ner": {"checkpoint": str(tiny_checkpoint)}, "llm_pool": {"enabled": False}}
        zero[section]["deployment"] = {"max_queued_requests": 0}
        with pytest.raises(ConfigError, match=f"(?s){section}.deployment.*max_queued_requests must be -1"):
            validate_config(zero)
