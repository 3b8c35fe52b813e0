"""The production path on one machine: a Ray cluster started with ``ray start --head`` (dashboard
on, loopback only), the config deployed with ``serve deploy``, checked with ``serve status``,
and answered over gRPC."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from serve.ports import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def head_node():
    if shutil.which("ray", path=str(BIN)) is None:
        pytest.skip("the ray command line is not installed")
    # token authentication, as Ray wants for clusters: one shared secret for the cluster and the CLI
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": str(ROOT),
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    dashboard = free_port()
    temp = tempfile.mkdtemp(prefix="lnr", dir="/tmp")  # Ray's socket paths must stay under 108 bytes
    started = run(str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(free_port()),
                  "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
                  "--num-cpus", "4", "--object-store-memory", str(200 * 1024 * 1024),
                  "--temp-dir", temp, env=env)
    assert started.returncode == 0, started.stderr[-2000:]
    try:
        yield env, f"http://127.0.0.1:{dashboard}", Path(temp)
    finally:
        run(str(BIN / "ray"), "stop", "--force", env=env)
        shutil.rmtree(temp, ignore_errors=True)


def test_serve_deploy_to_a_running_cluster(head_node, tiny_checkpoint, tmp_path):
    env, dashboard, temp = head_node
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    grpc_port = free_port()
    config["grpc_options"]["port"] = grpc_port
    config["http_options"]["port"] = free_port()
    args = config["applications"][0]["args"]
    args["ner"]["checkpoint"] = str(tiny_checkpoint)
    args["llm_pool"]["enabled"] = False
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))

    deployed = run(str(BIN / "serve"), "deploy", str(path), "--address", dashboard, env=env)
    assert deployed.returncode == 0, deployed.stderr[-2000:]
    status = ""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status = run(str(BIN / "serve"), "status", "--address", dashboard, env=env).stdout
        if "status: RUNNING" in status and "DEPLOY_FAILED" not in status and "DEPLOYING" not in status:
            break
        assert "DEPLOY_FAILED" not in status, status
        time.sleep(3)
    assert "linkner" in status and "status: RUNNING" in status, status

    from clients.client import LinkNERClient

    with LinkNERClient(f"127.0.0.1:{grpc_port}", "linkner", timeout_s=60) as client:
        result = client.recognize("John Smith visited Paris yesterday .")
    assert {(e.text, e.label) for e in result.entities} >= {("John Smith", "PER")}
    assert result.llm_spans == 0 and not result.degraded
    # the shipped logging_config turns Ray Serve's per-request access log off: the replicas' logs have
    # no "CALL linkner OK 13.4ms" line (Ray's access log of a gRPC call) for the call just answered
    replica_logs = list((temp / "session_latest" / "logs" / "serve").glob("replica_linkner_*.log"))
    assert replica_logs
    access_lines = [line for log in replica_logs for line in log.read_text(errors="replace").splitlines()
                    if re.search(r" -- \S+ linkner OK \d+\.\dms$", line)]
    assert not access_lines, access_lines[:3]
