"""Configuration shapes of the served application (validated by the app builder, shared by the
deployments). Everything has a CPU default that works on a fresh machine."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from linkner.routing.policy import DetectionPolicy
from linkner.llm.factory import LLMConfig
from linkner.model.runtime import DEFAULT_RUNTIME, Runtime
from linkner.paths import ARTIFACTS
from linkner.service.limits import ServiceLimits
from linkner.telemetry import TelemetryConfig

Method = Literal["Recognize", "RecognizeBatch", "RecognizeStream"]
DEFAULT_CHECKPOINT = ARTIFACTS / "models" / "default"


def _queue_limit(value: int) -> int:
    if value == 0:
        raise ValueError("must be -1 (unbounded) or at least 1: with 0 Ray Serve refuses every call")
    return value


QueueLimit = Annotated[int, Field(ge=-1), AfterValidator(_queue_limit)]
"""A deployment's ``max_queued_requests``: -1 or at least 1."""


DeploymentOptions = dict[str, Any]
"""Ray Serve deployment options, as in a Serve config file's ``deployments`` entries:
``num_replicas``, ``autoscaling_config``, ``max_ongoing_requests``, ``max_queued_requests``,
``ray_actor_options`` (``num_cpus``, ``num_gpus``, ``resources``, ...), ``max_replicas_per_node``, ...
Passed to Ray as written, over the component's defaults (``ray_actor_options`` merged key by key);
serve/app.py checks them against Ray Serve's own deployment schema."""


def with_defaults(defaults: DeploymentOptions, given: DeploymentOptions | None) -> DeploymentOptions:
    """``given`` over ``defaults``; ``ray_actor_options`` merged key by key, so ``{num_replicas: 2}``
    keeps the default CPUs."""
    given = dict(given or {})
    actor = {**defaults.get("ray_actor_options", {}), **given.pop("ray_actor_options", {})}
    return {**defaults, **given, "ray_actor_options": actor}


def deployment_field(component: str, defaults: DeploymentOptions) -> Any:
    return Field(default_factory=lambda: with_defaults(defaults, None),
                 description=f"Ray Serve deployment options of {component}, in Ray's own names "
                 "(merged over the defaults)")


NER_DEPLOYMENT: DeploymentOptions = {"ray_actor_options": {"num_cpus": 1}, "max_ongoing_requests": 8,
                                     "max_queued_requests": 64}
LLM_DEPLOYMENT: DeploymentOptions = {"ray_actor_options": {"num_cpus": 1}, "max_ongoing_requests": 4,
                                     "max_queued_requests": 4}
INGRESS_DEPLOYMENT: DeploymentOptions = {"ray_actor_options": {"num_cpus": 0}}


class _Deployed(BaseModel):
    """A component with Ray Serve deployment options (``deployment``) merged over its defaults."""

    DEPLOYMENT_DEFAULTS: ClassVar[DeploymentOptions] = {}

    @model_validator(mode="before")
    @classmethod
    def _merge_deployment(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("deployment"), dict):
            data = {**data, "deployment": with_defaults(cls.DEPLOYMENT_DEFAULTS, data["deployment"])}
        return data


class NERConfig(_Deployed):
    """The local model: embedded in each ingress replica (CPU) or a pool of NER replicas (GPU)."""

    model_config = ConfigDict(extra="forbid")
    DEPLOYMENT_DEFAULTS: ClassVar[DeploymentOptions] = NER_DEPLOYMENT
    checkpoint: str = str(DEFAULT_CHECKPOINT)
    placement: Literal["embedded", "pool"] = Field(
        "embedded", description="embedded: each ingress replica runs the model in worker processes of its own, "
        "one forward pass per core (cores / threads; one on a GPU), scaled with router.deployment; pool: NER "
        "replicas of their own, one pass at a time each, scaled and given GPUs with ner.deployment apart from "
        "the ingress (serve_config.gpu.yaml)")
    device: str = "auto"
    threads: int = Field(1, ge=1, description="torch threads per forward pass")
    runtime: Runtime = Field(DEFAULT_RUNTIME, description="how the encoder runs: int8, exported to ONNX and "
                             "quantized by ONNX Runtime (CPU only; made by `linkner prepare`, cached beside the "
                             "checkpoint and remade for new weights; on a GPU the model runs float32), or eager, "
                             "float32 PyTorch as trained (docs/performance.md compares them)")
    mc_samples: int = Field(8, ge=2)
    pack_tokens: int | None = Field(None, ge=0, description="sub-words per packed encoder row: a forward pass "
                                    "reads its sentences end to end, no padding; 0: padded batches; default: 128 "
                                    "on a CPU, 512 on a GPU")
    document_consistency: bool = Field(False, description="give every mention of a surface form in a request the "
                                       "label its mentions' summed probabilities favour (docs/quality.md)")
    deployment: DeploymentOptions = deployment_field(
        "the NER pool (placement: pool; a replica runs one pass at a time, max_ongoing_requests hold, "
        "max_queued_requests wait, more are refused with RESOURCE_EXHAUSTED). With placement: embedded only "
        "ray_actor_options apply, added to each ingress replica's", NER_DEPLOYMENT)


class LLMPoolConfig(_Deployed):
    """The LLM replica pool; ``enabled: false`` serves the local model alone."""

    model_config = ConfigDict(extra="forbid")
    DEPLOYMENT_DEFAULTS: ClassVar[DeploymentOptions] = LLM_DEPLOYMENT
    enabled: bool = True
    llm: LLMConfig = Field(default_factory=LLMConfig)
    deployment: DeploymentOptions = deployment_field(
        "the LLM pool: a replica takes max_ongoing_requests LLM calls at once and max_queued_requests wait per "
        "ingress replica; more are refused at once and their requests answered with the local labels, marked "
        "degraded (llm_overloaded), instead of waiting out their deadline in the queue", LLM_DEPLOYMENT)


class DemonstrationsConfig(BaseModel):
    """Examples in the LLM prompt: none, random k per label, or the k nearest training spans."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["none", "random", "retrieved"] = "none"
    k: int = Field(4, ge=1, le=16)
    train: str | None = Field(None, description="labelled data the examples come from (CoNLL or .jsonl)")
    seed: int = 0

    @model_validator(mode="after")
    def _needs_data(self) -> "DemonstrationsConfig":
        if self.kind != "none" and not self.train:
            raise ValueError(f"demonstrations '{self.kind}' need `train`: the labelled data to draw them from")
        return self


class RouterConfig(_Deployed):
    """The ingress: gRPC methods and RDC routing in one deployment."""

    model_config = ConfigDict(extra="forbid")
    DEPLOYMENT_DEFAULTS: ClassVar[DeploymentOptions] = INGRESS_DEPLOYMENT
    demonstrations: DemonstrationsConfig = Field(default_factory=DemonstrationsConfig)
    policy: DetectionPolicy = Field(default_factory=lambda: DetectionPolicy(kind="threshold", threshold=0.5),
                                    description="used when the checkpoint has no calibration made for this "
                                                "configuration (LLM and mode, demonstrations, estimator, checkpoint)")
    use_calibration: bool = Field(True, description="use the checkpoint's calibration when its key matches")
    llm_timeout_s: float = Field(10.0, gt=0, description="longest one LLM step may take, whatever the deadline")
    answer_budget_s: dict[Method, float] = Field(
        default_factory=lambda: {"Recognize": 10.0, "RecognizeBatch": 60.0, "RecognizeStream": 300.0},
        description="per method: the answer comes by then even when the caller sets no (or a later) deadline; "
                    "the LLM step ends before it and the local answer is kept, marked degraded")
    batch_parallelism: int = Field(8, ge=1, description="items of one RecognizeBatch / RecognizeStream in flight")
    max_words_per_ner_call: int = Field(256, ge=1, description="most words in one call to the NER pool: concurrent "
                                        "requests are coalesced up to it, and a document is sent in chunks of "
                                        "whole sentences of about this many words")
    ner_calls_in_flight: int = Field(4, ge=1, description="NER calls outstanding from one ingress replica; requests "
                                     "arriving meanwhile go together in the next call")
    limits: ServiceLimits = Field(default_factory=ServiceLimits)
    max_ongoing_requests: int = Field(128, ge=1, description="calls one ingress replica holds at once (waiting "
                                      "for the NER pool costs it nothing)")
    max_queued_requests: QueueLimit = Field(128, description="calls waiting beyond max_ongoing_requests "
                                     "per replica; more are refused at once (RESOURCE_EXHAUSTED); -1: unbounded")
    deployment: DeploymentOptions = deployment_field(
        "the ingress replicas (scale them here: num_replicas or autoscaling_config; with ner.placement: "
        "embedded each also runs the model). Its calls are admitted by max_ongoing_requests and "
        "max_queued_requests above, not Ray's", INGRESS_DEPLOYMENT)

    @model_validator(mode="after")
    def _every_method_has_a_budget(self) -> "RouterConfig":
        self.answer_budget_s = {**{"Recognize": 10.0, "RecognizeBatch": 60.0, "RecognizeStream": 300.0},
                                **self.answer_budget_s}
        if any(value <= 0 for value in self.answer_budget_s.values()):
            raise ValueError("answer_budget_s values must be positive seconds")
        return self


AUTH_TOKEN_ENV = "LINKNER_AUTH_TOKEN"
"""Environment variable holding the bearer token callers must send (read in each ingress replica)."""


class ServerConfig(BaseModel):
    """The gRPC server each ingress replica runs on ``host:port``: callers dial it directly. Several ingress replicas on one node share the port (SO_REUSEPORT:
    the kernel spreads connections), so give each application a port of its own."""

    model_config = ConfigDict(extra="forbid")
    host: str = Field("127.0.0.1", description="address to listen on: 127.0.0.1 for this machine only, 0.0.0.0 "
                      "(or the node's address) to let other machines call")
    port: int = Field(9000, ge=0, le=65535, description="port callers dial (0: any free port, for tests)")
    tls_cert: str | None = Field(None, description="PEM server certificate (chain): with tls_key, the port "
                                 "speaks TLS only")
    tls_key: str | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: str | None = Field(None, description="PEM CA bundle: callers must present a client "
                                      "certificate it signed (mutual TLS)")
    auth_token_file: str | None = Field(None, description="file holding the bearer token callers must send as "
                                        f"`authorization: Bearer <token>`; the {AUTH_TOKEN_ENV} environment "
                                        "variable of the replica wins. Neither set: no token needed")
    max_receive_message_bytes: int | None = Field(None, ge=1024, description="largest request message read; "
                                                  "larger ones are refused with RESOURCE_EXHAUSTED before they "
                                                  "are buffered. Default: derived from router.limits")
    reflection: bool = Field(True, description="gRPC server reflection (grpcurl needs no .proto); behind the "
                             "token when one is set")
    drain_s: float = Field(2.0, ge=0, description="a stopping replica refuses new calls and gives the ones "
                           "in flight this long to finish")

    @model_validator(mode="after")
    def _tls_pairs(self) -> "ServerConfig":
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("server.tls_cert and server.tls_key go together: give both or neither")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("server.tls_client_ca (mutual TLS) needs server.tls_cert and server.tls_key")
        return self


class AppConfig(BaseModel):
    """The ``args`` of ``serve.app:build_app`` (``serve_config.yaml``)."""

    model_config = ConfigDict(extra="forbid")
    server: ServerConfig = Field(default_factory=ServerConfig)
    ner: NERConfig = Field(default_factory=NERConfig)
    llm_pool: LLMPoolConfig = Field(default_factory=LLMPoolConfig)
    router: RouterConfig = Field(default_factory=RouterConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
