"""A real multi-node Ray cluster on one machine, the application deployed to it as a user would,
a closed-loop gRPC load, and the faults to inject while it runs.

Used by ``tests/benchmarks/test_reliability.py`` (short runs) and ``python -m benchmarks.reliability``
(long runs); the load is :class:`benchmarks.load.ClosedLoad`.
The nodes are separate raylets on loopback (Ray's own ``ray.cluster_utils.Cluster``): a head
holding the Serve controller, the ingress and the LLM pool (custom resource ``head``), and
worker nodes offering ``ner_slot``, so one replica of the NER pool lands on each.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from benchmarks.load import ClosedLoad
from linkner.paths import PROJECT_ROOT
from serve.ports import free_port

MIB = 1024 * 1024
APP = "linkner"
HEAD_RESOURCE, NER_RESOURCE = "head", "ner_slot"


def _loopback_env() -> None:
    """Every Ray process stays on loopback and can import the project (set before Ray starts)."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")  # nodes start by fork + exec under gRPC load
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(PROJECT_ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *[p for p in paths if p]])


class MultiNodeCluster:
    """A head and ``workers`` worker nodes, each its own raylet; the driver (this process) is
    connected to the head."""

    def __init__(self, workers: int = 2, worker_cpus: float = 1, object_store_mib: int = 128,
                 worker_resources: dict[str, float] | None = None) -> None:
        _loopback_env()
        import ray
        from ray.cluster_utils import Cluster

        self.temp_dir = tempfile.mkdtemp(prefix="lnrc", dir="/tmp")  # Ray's socket paths stay short
        self.worker_args = {"num_cpus": worker_cpus, "node_ip_address": "127.0.0.1",
                            "object_store_memory": object_store_mib * MIB,
                            "resources": worker_resources or {NER_RESOURCE: 1}}
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": object_store_mib * MIB,
            "include_dashboard": False, "temp_dir": self.temp_dir,
            "resources": {HEAD_RESOURCE: 100}})
        self.workers = [self.add_worker() for _ in range(workers)]
        ray.init(address=self.cluster.address, log_to_driver=False)

    def add_worker(self) -> Any:
        return self.cluster.add_node(**self.worker_args)

    def worker_of(self, node_id: str) -> Any:
        """The worker node object whose Ray node id is ``node_id``."""
        return next(node for node in self.cluster.worker_nodes if node.node_id == node_id)

    def kill_worker(self, node: Any) -> None:
        """The node dies at once: its raylet and every process on it are killed (SIGKILL)."""
        self.cluster.remove_node(node, allow_graceful=False)
        if node in self.workers:
            self.workers.remove(node)

    def shutdown(self) -> None:
        import ray
        from ray import serve

        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            self.cluster.shutdown()
            shutil.rmtree(self.temp_dir, ignore_errors=True)


@dataclass
class Served:
    """The application served on the cluster: gRPC target and application name."""

    target: str
    app: str = APP


def deploy(args: dict[str, Any], app: str = APP) -> Served:
    """``serve.run`` of ``build_app(args)`` on the connected cluster; callers dial the ingress
    replicas' own gRPC server, on a free port."""
    from ray import serve

    from serve.app import build_app

    port = free_port()
    serve.start(proxy_location="Disabled")
    serve.run(build_app({**args, "server": {"port": port}}), name=app, route_prefix=f"/{app}")
    return Served(f"127.0.0.1:{port}", app)


def app_args(checkpoint: str | Path, llm_base_url: str | None = None, ner_replicas: int = 2,
             **router: Any) -> dict[str, Any]:
    """The application's args for the cluster: NER replicas on ``ner_slot`` nodes, the ingress and the
    LLM pool (the OpenAI-compatible backend, when ``llm_base_url`` is given) on the head."""
    on_head = {HEAD_RESOURCE: 1}
    args: dict[str, Any] = {
        "ner": {"checkpoint": str(checkpoint), "threads": 1, "placement": "pool",
                "deployment": {"num_replicas": ner_replicas,
                               "ray_actor_options": {"num_cpus": 0.1, "resources": {NER_RESOURCE: 1}}}},
        "llm_pool": {"enabled": False},
        "router": {"deployment": {"ray_actor_options": {"resources": on_head}}, **router},
    }
    if llm_base_url:
        args["llm_pool"] = {"llm": {"backend": "openai", "model": "peer", "base_url": llm_base_url,
                                    "max_retries": 0, "options": "all", "request_timeout_s": 5.0},
                            "deployment": {"ray_actor_options": {"num_cpus": 0.1, "resources": on_head}}}
    return args


# ---------------------------------------------------------------------------------------- replicas

def replicas(deployment: str, app: str = APP) -> list[dict[str, Any]]:
    """The live replica actors of ``deployment``: actor id, name, node id, pid (from Ray's actor table)."""
    import ray

    name = f"ServeReplica:{app}:{deployment}"
    return [{"actor_id": info["ActorID"], "name": info["Name"], "node_id": info["Address"]["NodeID"],
             "pid": info["Pid"]}
            for info in ray._private.state.actors().values()
            if info["ActorClassName"] == name and info["State"] == "ALIVE"]


def running_replicas(deployment: str, app: str = APP) -> int:
    """Replicas of ``deployment`` Serve reports RUNNING."""
    from ray import serve

    status = serve.status().applications.get(app)
    if status is None or deployment not in status.deployments:
        return 0
    return status.deployments[deployment].replica_states.get("RUNNING", 0)


def wait_for(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.25) -> float:
    """Seconds until ``predicate()`` holds; raises TimeoutError after ``timeout_s``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"not true after {timeout_s:.0f}s")
        time.sleep(poll_s)
    return time.monotonic() - started


def kill_replica_actor(replica: dict[str, Any]) -> None:
    """``ray.kill`` the replica's actor (Serve's controller replaces it)."""
    import ray

    ray.kill(ray.get_actor(replica["name"], namespace="serve"), no_restart=True)


def health(served: Served, service: str = "", timeout_s: float = 5.0) -> str:
    """``grpc.health.v1`` Check of ``service``: the serving status's name, or the call's status name."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(served.target) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                               timeout=timeout_s)
        except grpc.RpcError as error:
            return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)


def rss_mib(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / MIB


# ---------------------------------------------------------------------------------------- faults

@dataclass
class FaultReport:
    """One fault under load: requests sent, lost (failed for the caller), retried; seconds until
    Serve had the replicas back and until throughput was back to 80% of the pre-fault rate."""

    fault: str
    sent: int
    failed: int
    retried: int
    failed_attempts_by_status: dict[str, int]
    failed_by_status: dict[str, int]
    invalid: int
    degraded: int
    max_latency_ms: float
    rate_before: float
    rate_after: float
    replica_back_s: float | None
    recovery_s: float | None

    def row(self) -> dict[str, Any]:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def under_load(served: Served, fault: str, inject: Callable[[], None], replicas_back: Callable[[], bool],
               clients: int = 8, before_s: float = 5.0, after_s: float = 6.0, back_timeout_s: float = 90.0,
               **options: Any) -> FaultReport:
    """Run a closed load, ``inject`` the fault after ``before_s``, wait until ``replicas_back()``,
    keep the load ``after_s`` more, and report."""
    with ClosedLoad(served, clients, **options) as load:
        time.sleep(before_s)
        fault_at = time.monotonic()
        rate_before = load.stats.rate(fault_at - before_s + 1.0, fault_at)
        inject()
        back: float | None
        try:
            wait_for(replicas_back, back_timeout_s, poll_s=0.5)
            back = time.monotonic() - fault_at
        except TimeoutError:
            back = None
        settled = time.monotonic()
        time.sleep(after_s)
        stats = load.stop()
    rate_after = stats.rate(settled + 1.0, settled + after_s)
    summary = stats.summary()
    return FaultReport(fault, stats.sent, summary["failed"], stats.retried, dict(stats.attempt_failures),
                       dict(stats.failed), len(stats.invalid), summary["degraded"],
                       1000 * max(stats.latencies_s, default=0.0), rate_before, rate_after, back,
                       stats.recovered_after(fault_at, rate_before))
