"""Application builder: ``serve run serve_config.yaml`` imports ``serve.app:build_app``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from linkner.model.metadata import checkpoint_labels, is_checkpoint
from linkner.service.config import AppConfig
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
    check_deployments(config)
    try:  # the standard OTEL_* variables of the deploying process win over the file; replicas get the result
        config.telemetry = with_environment(config.telemetry, os.environ)
    except ValueError as error:
        raise ConfigError(f"telemetry: {error}") from None
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
        if not (Path(config.llm_pool.llm.model) / "config.json").is_file():
            raise ConfigError(f"no LLM model folder at llm_pool.llm.model={config.llm_pool.llm.model}: "
                              "run `linkner prepare-llm` (embedded SmolLM2) or set llm_pool.enabled: false")
    return config


def checked_deployment(key: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (the ``deployment`` section at ``key``) checked against Ray Serve's own deployment
    schema, which also ignores unknown names: those are refused here, naming the key."""
    from ray.serve.schema import DeploymentSchema, RayActorOptionsSchema

    allowed = set(DeploymentSchema.model_fields) - {"name"}  # the name is the component's
    unknown = sorted(set(options) - allowed)
    unknown += sorted(f"ray_actor_options.{name}" for name in
                      set(options.get("ray_actor_options") or {}) - set(RayActorOptionsSchema.model_fields))
    if unknown:
        raise ConfigError(f"{key}: {', '.join(unknown)} is not a Ray Serve deployment option (Ray's names: "
                          "num_replicas, autoscaling_config, max_ongoing_requests, max_queued_requests, "
                          "ray_actor_options: {num_cpus, num_gpus, resources, ...}, ...)")
    try:
        DeploymentSchema(name=key, **options)
    except ValidationError as error:
        raise ConfigError(f"{key}: {error}") from None
    return dict(options)


def check_deployments(config: AppConfig) -> None:
    """Every ``deployment`` section checked (:func:`checked_deployment`); the ingress's call limits
    are ``router.max_ongoing_requests`` / ``max_queued_requests``, not Ray's."""
    for key, options in (("ner.deployment", config.ner.deployment), ("llm_pool.deployment", config.llm_pool.deployment),
                         ("router.deployment", config.router.deployment)):
        checked_deployment(key, options)
    for name in ("max_ongoing_requests", "max_queued_requests"):
        if name in config.router.deployment:
            raise ConfigError(f"router.deployment.{name}: the ingress's own server admits its calls; set "
                              f"router.{name} instead")


def embedded_ingress_options(config: AppConfig) -> dict[str, Any]:
    """With ``ner.placement: embedded`` each ingress replica runs the model: it reserves the CPUs,
    GPUs and custom resources of ``ner.deployment.ray_actor_options`` on top of its own. Replicas
    come from ``router.deployment``: set in ``ner.deployment`` they would be ignored, so they are
    refused."""
    ingress, ner = dict(config.router.deployment), config.ner.deployment
    misplaced = sorted(set(ner) - {"ray_actor_options", "max_ongoing_requests", "max_queued_requests"})
    if misplaced:
        raise ConfigError(f"ner.deployment: {', '.join(misplaced)} applies to ner.placement: pool; with "
                          "placement: embedded the model runs in each ingress replica: set it in "
                          "router.deployment instead")
    actor, model = dict(ingress.get("ray_actor_options") or {}), ner.get("ray_actor_options") or {}
    for amount in ("num_cpus", "num_gpus"):
        if amount in model:
            actor[amount] = actor.get(amount, 0) + model[amount]
    custom = dict(actor.get("resources") or {})
    for name, amount in (model.get("resources") or {}).items():
        custom[name] = custom.get(name, 0.0) + amount
    if custom:
        actor["resources"] = custom
    return {**ingress, "ray_actor_options": actor}


def build_app(args: dict[str, Any] | AppConfig | None = None) -> Any:
    """Bind the NER replicas (unless ``ner.placement`` is ``embedded``: then each ingress replica
    runs the model), the LLM pool and the gRPC ingress (which also routes) into one application."""
    from deployments.autoscaling import POLICY as AUTOSCALING_POLICY
    from deployments.ingress import LinkNERIngress
    from deployments.llm_pool import LLMPool
    from deployments.ner import NERReplica

    config = validate_config(args)
    ner = None
    if config.ner.placement == "pool":
        ner = NERReplica.options(name="ner", **config.ner.deployment).bind(config.ner, config.telemetry)
        ingress = dict(config.router.deployment)
    else:  # embedded: each ingress replica reserves what the model's replica would have
        ingress = embedded_ingress_options(config)
    llm = None
    if config.llm_pool.enabled:
        llm = LLMPool.options(name="llm", **config.llm_pool.deployment).bind(
            config.llm_pool, config.telemetry, checkpoint_labels(config.ner.checkpoint))  # to warm its prefix cache
    # the ingress's own server admits calls (router.max_ongoing_requests): Ray's limit only needs to let them in
    ingress.update(max_ongoing_requests=config.router.max_ongoing_requests,
                   max_queued_requests=config.router.max_queued_requests)
    if "autoscaling_config" in ingress:
        # Ray does not see the calls the ingress's own gRPC server answers: scale on what it reports
        ingress["autoscaling_config"] = {"policy": {"policy_function": AUTOSCALING_POLICY},
                                         **ingress["autoscaling_config"]}
    return LinkNERIngress.options(name="ingress", **ingress).bind(ner, llm, config)
