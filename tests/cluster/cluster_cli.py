"""Helpers of tests/cluster/test_cluster_deploy.py: a user's clone of the project, a Ray cluster started
with the command line (``ray start --head`` and ``ray start --address``, token auth, loopback
only), ``serve deploy`` / ``serve status``, and callers in another language (grpc-js).

Every command runs as a user types it, in the clone; ``Cluster.log`` records each with its time
and exit status (and the output of all but ``serve status`` / ``ray status``), for the docs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from serve.ports import free_port
from tests_helpers import Callers, clock  # noqa: F401 (the cluster tests import them from here)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INTEROP = ROOT / "tests" / "interop"
MARKER = "LINKNER_TEST_CLUSTER"  # in the environment of every process of a test cluster, and of no other


def project_copy(destination: Path, source: Path = ROOT) -> Path:
    """The project as a user's clone has it: the files git tracks or would track (uncommitted work
    included; ignored files such as artifacts/ and .venv/ left out), copied to ``destination``."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=source,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        path = source / name
        if path.is_file():  # a tracked file deleted in the work tree is not there
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination / name)
    return destination


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing listens on ``host:port`` (a bind without SO_REUSEPORT fails when something does)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class Cluster:
    """Ray nodes on loopback started with ``ray start``, one shared auth token, the project at
    ``project`` on every node's PYTHONPATH. :meth:`stop` ends exactly this cluster's processes."""

    def __init__(self, project: Path, temp: Path, extra_env: dict[str, str] | None = None) -> None:
        self.project, self.temp = project, temp
        self.token = secrets.token_hex(32)
        self.env = {**os.environ, "PYTHONPATH": str(project), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
                    MARKER: str(temp), **(extra_env or {})}
        self.env.pop("RAY_ADDRESS", None)
        self.head = "127.0.0.2"
        self.gcs_port = free_port(self.head)
        self.dashboard_port = free_port()
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.log = temp / "commands.log"

    # ---------------------------------------------------------------- commands

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 180,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run a command of the venv (``ray``, ``serve``, ``python``) in the project copy."""
        program = str(BIN / args[0]) if (BIN / args[0]).exists() else args[0]
        env = env or self.env
        started = time.monotonic()
        done = subprocess.run([program, *args[1:]], env=env, cwd=self.project, capture_output=True, text=True,
                              timeout=timeout)
        with self.log.open("a") as log:  # the output only of what failed or changed something
            log.write(f"$ {' '.join(args)}  [{time.monotonic() - started:.1f} s, rc {done.returncode}]\n")
            if done.returncode != 0 or args[:2] not in (("serve", "status"), ("ray", "status")):
                log.write(f"{done.stdout[-3000:]}{done.stderr[-3000:]}\n")
        if check and done.returncode != 0:
            raise AssertionError(f"`{' '.join(args)}` failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                                 f"{done.stderr[-3000:]}")
        return done

    def start(self, workers: int = 1, num_cpus: int = 2) -> None:
        """``ray start --head`` (dashboard on 127.0.0.1) and ``workers`` nodes joining it, each node on
        a loopback address of its own (127.0.0.2, 127.0.0.3, ...): Ray turns the address
        ``127.0.0.1`` given to a joining node into the machine's outward address, so the head must
        not listen on that one. The ports Ray would otherwise take by default (client server,
        dashboard agent) are free ones, so clusters of other tests on the machine do not collide."""
        env = {**self.env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}  # multi-node, on Linux too
        for node in range(workers + 1):
            address = f"127.0.0.{node + 2}"
            common = ["--node-ip-address", address, "--num-cpus", str(num_cpus),
                      "--object-store-memory", "200000000", "--disable-usage-stats",
                      "--dashboard-agent-listen-port", str(free_port(address))]
            if node == 0:
                self.run("ray", "start", "--head", "--port", str(self.gcs_port), "--temp-dir", str(self.temp),
                         "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                         "--dashboard-port", str(self.dashboard_port),
                         "--ray-client-server-port", str(free_port(address)), *common, env=env)
            else:
                self.run("ray", "start", "--address", f"{self.head}:{self.gcs_port}", *common, env=env)

    def alive_nodes(self) -> int:
        """Nodes the cluster counts as alive (``ray status`` through the head)."""
        done = self.run("ray", "status", "--address", f"{self.head}:{self.gcs_port}", check=False, timeout=60)
        lines = done.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return sum(1 for line in lines.splitlines() if line.strip().startswith("1 node_"))

    def deploy(self, config: Path) -> None:
        self.run("serve", "deploy", str(config), "--address", self.dashboard)

    def status(self) -> dict[str, Any]:
        """``serve status`` as a mapping (applications, deployments, replica states)."""
        done = self.run("serve", "status", "--address", self.dashboard, timeout=60)
        return yaml.safe_load(done.stdout) or {}

    def app_status(self, app: str = "linkner") -> dict[str, Any]:
        return (self.status().get("applications") or {}).get(app) or {}

    def wait_running(self, app: str = "linkner", timeout_s: float = 300, replicas: dict[str, int] | None = None,
                     gone: tuple[str, ...] = (), deployed_after: float | None = None) -> dict[str, Any]:
        """Wait until ``app`` is RUNNING with every deployment HEALTHY (and, when given, deployed
        after ``deployed_after``, the ``last_deployed_time_s`` of an earlier status; with the
        RUNNING replica counts of ``replicas``; without the deployments in ``gone``); fail at
        once on DEPLOY_FAILED."""
        deadline = time.monotonic() + timeout_s
        state: dict[str, Any] = {}
        while time.monotonic() < deadline:
            state = self.app_status(app)
            if state.get("status") == "DEPLOY_FAILED":
                raise AssertionError(f"deploy failed:\n{yaml.safe_dump(state)}")
            deployments = state.get("deployments") or {}
            if (state.get("status") == "RUNNING" and deployments
                    and (deployed_after is None or state.get("last_deployed_time_s", 0) > deployed_after)
                    and all(d.get("status") == "HEALTHY" for d in deployments.values())
                    and all(replica_count(state, name) == count for name, count in (replicas or {}).items())
                    and all(sum((d.get("replica_states") or {}).values()) == replica_count(state, name)
                            for name, d in deployments.items())  # none starting or stopping
                    and not set(gone) & set(deployments)):
                return state
            time.sleep(2)
        raise AssertionError(f"{app} not running as wanted within {timeout_s} s:\n{yaml.safe_dump(state)}")

    def last_deployed(self, app: str = "linkner") -> float:
        return float(self.app_status(app).get("last_deployed_time_s") or 0)

    def replica_processes(self, replica: str) -> list:
        """This cluster's live replica processes whose title holds ``replica`` (e.g.
        ``ServeReplica:linkner:ingress``)."""
        found = []
        for process in self.processes():
            try:
                if replica in " ".join(process.cmdline()):
                    found.append(process)
            except Exception:  # gone meanwhile
                pass
        return found

    def replica_nodes(self, replica: str) -> list[str]:
        """The node address of each live replica process ``replica`` (its raylet's ``--node_ip_address``)."""
        nodes = []
        for process in self.replica_processes(replica):
            try:
                flags = [arg for arg in process.parent().cmdline() if arg.startswith("--node_ip_address=")]
            except Exception:
                continue
            nodes.extend(flag.split("=", 1)[1] for flag in flags)
        return sorted(nodes)

    # ---------------------------------------------------------------- teardown

    def processes(self) -> list:
        """This cluster's processes: those whose environment carries this cluster's marker (every
        Ray process it started inherits ``ray start``'s environment)."""
        import psutil

        found = []
        for process in psutil.process_iter():
            try:
                if process.environ().get(MARKER) == str(self.temp) and process.pid != os.getpid():
                    found.append(process)
            except (psutil.Error, OSError):
                pass
        return found

    def stop(self, grace_s: float = 10) -> None:
        """``serve shutdown``, then end this cluster's processes by id: SIGTERM, and SIGKILL what is
        left after ``grace_s`` (``ray stop`` would end every Ray process of the machine, other
        clusters' too)."""
        import psutil

        if self.log.is_file():  # the head started: Serve lets its replicas stop gracefully
            self.run("serve", "shutdown", "-y", "--address", self.dashboard, check=False, timeout=120)
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10), (signal.SIGKILL, 10)):
            processes = self.processes()
            if not processes:
                return
            for process in processes:
                try:
                    process.send_signal(sig)
                except psutil.Error:
                    pass
            psutil.wait_procs(processes, timeout=wait_s)


def replica_count(state: dict[str, Any], deployment: str, replica_state: str = "RUNNING") -> int:
    """Replicas of ``deployment`` in ``replica_state`` in an application's ``serve status``."""
    deployment_state = (state.get("deployments") or {}).get(deployment) or {}
    return int((deployment_state.get("replica_states") or {}).get(replica_state, 0))


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def grpcjs(target: str, calls: list[dict[str, Any]], timeout_s: float = 180,
           env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Run the grpc-js client (tests/interop/client.js) against ``target``; one result per call, by name."""
    assert shutil.which("node") and (INTEROP / "node_modules" / "@grpc" / "grpc-js").is_dir(), \
        "grpc-js is missing: scripts/setup.sh installs it (npm ci --prefix tests/interop)"
    proto = ROOT / "protos" / "linkner" / "v1" / "linkner.proto"
    done = subprocess.run(["node", str(INTEROP / "client.js"), target, str(proto), json.dumps(calls)],
                          capture_output=True, text=True, timeout=timeout_s, env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return {result["name"]: result for result in map(json.loads, done.stdout.splitlines())}


