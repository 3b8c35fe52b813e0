"""``linkner-client`` installs alone: its wheel (clients/pyproject.toml) goes into a fresh virtual
environment with grpcio, protobuf and pydantic only (no torch, no Ray), and from there both the
Python API and the ``linkner-client`` command get entities from a running LinkNER service.

Needs a package index for the build backend (hatchling) and the three dependencies (pip's cache
and this machine's local wheels serve them when they can).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

from serve.ports import free_port

pytestmark = pytest.mark.slow  # minutes, or the network: not in ./run.sh test --fast

ROOT = Path(__file__).resolve().parents[2]
TEXT = "John Smith visited Paris yesterday ."
READY_TIMEOUT_S = 180
API_SCRIPT = """
import asyncio, json, sys
from clients.client import AsyncLinkNERClient, LinkNERClient

async def main(target, text):
    async with AsyncLinkNERClient(target, timeout_s=60) as client:
        return await client.recognize(text)

target, text = sys.argv[1:]
with LinkNERClient(target, timeout_s=60) as client:
    result = client.recognize(text)
print(json.dumps({"sync": result.model_dump(), "async": asyncio.run(main(target, text)).model_dump()}))
"""


def clean_env() -> dict[str, str]:
    """This process's environment without what would reach into the project or its venv."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "LINKNER_AUTH_TOKEN", "PYTHONHOME"}
    return {key: value for key, value in os.environ.items() if key not in drop}


def run(command: list[str], cwd: Path, timeout_s: float = 240) -> subprocess.CompletedProcess:
    """Run a command to completion; fail the test with its output when it fails."""
    completed = subprocess.run([str(part) for part in command], cwd=cwd, env=clean_env(), capture_output=True,
                               text=True, timeout=timeout_s)
    errors = [line for line in completed.stderr.splitlines() if not line.startswith("WARNING: Location")]
    assert completed.returncode == 0, f"{command[:4]} failed:\n" + "\n".join(errors[-30:])
    return completed


def build_wheel(folder: Path) -> Path:
    """``pip wheel ./clients``: the standalone distribution, built as a user would from a clone."""
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", folder, ROOT / "clients"], cwd=ROOT)
    (wheel,) = folder.glob("linkner_client-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("client-dist"))


@pytest.fixture(scope="module")
def client_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding the wheel and its dependencies, nothing of the project."""
    venv = tmp_path_factory.mktemp("client-venv") / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=venv.parent)
    run([venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel], cwd=venv.parent)
    return venv


def wait_ready(process: subprocess.Popen, timeout_s: float) -> str:
    """The first line the service prints (READY once it answers), or "" after ``timeout_s``."""
    ready, _, _ = select.select([process.stdout], [], [], timeout_s)
    return process.stdout.readline().strip() if ready else ""


@pytest.fixture(scope="module")
def service(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real ingress with the tiny model embedded, no LLM and no Ray, on a plain ``grpc.aio``
    server in a child process (``benchmarks/ingress_without_ray.py``); yields its ``host:port``."""
    port = free_port()
    app_args = {"ner": {"checkpoint": str(tiny_checkpoint), "placement": "embedded"}, "llm_pool": {"enabled": False}}
    log = tmp_path_factory.mktemp("service") / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "ingress_without_ray.py"), "--port", str(port),
             "--app-args", json.dumps(app_args)], cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True,
            env={**clean_env(), "PYTHONPATH": str(ROOT)})
    try:
        line = wait_ready(process, READY_TIMEOUT_S)
        assert line == "READY", f"the service did not start ({line!r}):\n{log.read_text()[-3000:]}"
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def test_the_wheel_holds_the_client_and_the_stubs_and_needs_three_packages(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(name for name in names if name.endswith(".dist-info/METADATA"))).decode()
        entry_points = archive.read(next(name for name in names if name.endswith("entry_points.txt"))).decode()
    assert {name.split("/")[0] for name in names} == {"clients", "protos", "linkner_client-0.1.0.dist-info"}
    assert {"clients/client.py", "clients/cli.py", "protos/linkner/v1/linkner_pb2_grpc.py"} <= set(names)
    assert not any(name.endswith("hatch_build.py") for name in names)
    required = {line.split()[1].split(">")[0].split("<")[0] for line in metadata.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line}
    assert required == {"grpcio", "protobuf", "pydantic"}
    assert "linkner-client = clients.cli:main" in entry_points


def test_the_client_alone_has_neither_torch_nor_ray(client_venv, tmp_path):
    python = client_venv / "bin" / "python"
    for module in ("torch", "ray", "linkner", "serve"):
        probe = subprocess.run([python, "-c", f"import {module}"], cwd=tmp_path, env=clean_env(),
                               capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, module
    where = run([python, "-c", "import clients.client, protos.linkner.v1.linkner_pb2 as pb; "
                 "print(clients.client.__file__); print(pb.__file__)"], cwd=tmp_path).stdout.split()
    assert all(Path(path).is_relative_to(client_venv) for path in where)


def test_the_python_api_gets_entities(client_venv, service, tmp_path):
    script = tmp_path / "call.py"
    script.write_text(API_SCRIPT)
    results = json.loads(run([client_venv / "bin" / "python", script, service, TEXT], cwd=tmp_path).stdout)
    for result in results.values():
        assert result["entities"] and result["model"], result
        assert all(entity["text"] in TEXT and entity["label"] for entity in result["entities"])


def test_the_console_script_gets_entities(client_venv, service, tmp_path):
    command = [client_venv / "bin" / "linkner-client", "--target", service]
    completed = run([*command, "recognize", TEXT], cwd=tmp_path)
    rows = [line.split("\t") for line in completed.stdout.splitlines()]
    assert rows and all(len(row) == 4 and row[0] in TEXT for row in rows), completed.stdout
    (tmp_path / "docs.txt").write_text(f"{TEXT}\n{TEXT}\n")  # a file, without tqdm's progress bar here
    run([*command, "file", tmp_path / "docs.txt", "--out", tmp_path / "out.jsonl"], cwd=tmp_path)
    results = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [result["line"] for result in results] == [1, 2] and all(result["entities"] for result in results)
