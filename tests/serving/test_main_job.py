"""The README's main job on a first run (``python -m serve --once``, no model yet): the model
trains in the background, the service answers the sample with a snapshot of the first epoch, then
rolls over to the finished model while callers keep calling, and answers the sample again."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from linkner.data.readers import write_conll
from linkner.model.metadata import is_finished_checkpoint
from linkner.paths import PROJECT_ROOT
from openai_peer import OpenAIPeer
from serve.ports import free_port
from tests_helpers import Callers

pytestmark = pytest.mark.slow  # about 4 minutes on 2 cores: training, two start-ups and a roll-over


class TimedOutput:
    """A process's output lines, read in a thread, with the time each arrived."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.lines: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self._thread.start()

    def _read(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def wait_for(self, text: str, process: subprocess.Popen, timeout_s: float) -> float:
        """The time the first line holding ``text`` arrived; fails when the process ends first."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [when for when, line in self.lines if text in line]
            if found:
                return found[0]
            assert process.poll() is None, f"the main job exited ({process.returncode}):\n{self.text()}"
            time.sleep(0.2)
        raise AssertionError(f"no line holding {text!r} within {timeout_s} s:\n{self.text()}")

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines[-80:])


def test_a_first_run_serves_the_first_epoch_then_rolls_over_to_the_finished_model_without_a_failed_call(
        toy_train, toy_dev, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_conll(data / "train.txt", toy_train)
    write_conll(data / "dev.txt", toy_dev)
    model, port = tmp_path / "models" / "default", free_port()
    with OpenAIPeer() as peer:
        content = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text(encoding="utf-8"))
        args = content["applications"][0]["args"]
        args["ner"]["checkpoint"] = str(model)
        args["server"]["port"] = port
        args["llm_pool"]["llm"].update(backend="openai", model="peer-llm", base_url=peer.base_url)
        config = tmp_path / "serve_config.yaml"
        config.write_text(yaml.safe_dump(content), encoding="utf-8")
        process = subprocess.Popen(
            [sys.executable, "-m", "serve", "--once", "--config", str(config), "--data-dir", str(data),
             "--epochs", "3", "--threads", "1", "--metrics-port", str(free_port())],
            cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        output = TimedOutput(process)
        try:
            output.wait_for("LinkNER is up", process, timeout_s=400)
            with Callers(2, f"127.0.0.1:{port}", pause_s=0.2) as callers:
                rolled_over = output.wait_for("rolled over to the finished model", process, timeout_s=400)
                time.sleep(2)
            assert process.wait(timeout=120) == 0, output.text()
        finally:
            if process.poll() is None:
                process.kill()
    log = output.text()
    samples = [line for _, line in output.lines if "LLM spans" in line and "model " in line]
    assert len(samples) == 4, log  # two sample requests with each model
    assert all("default-early@" in line for line in samples[:2]) and all("default@" in line for line in samples[2:]), log
    assert "serving the early model" in log and "after epoch 1 of training" in log
    assert not callers.failures, callers.report()
    names = [answer_model.split("@")[0] for _, _, answer_model, _ in callers.answers]
    assert names[0] == "default-early" and names[-1] == "default", names
    late = [name for (start, _, _, _), name in zip(callers.answers, names) if start > rolled_over]
    assert late and set(late) == {"default"}, late
    assert is_finished_checkpoint(model) and not (tmp_path / "models" / "default-early").exists()
    assert peer.requests  # the LLM path was calibrated and asked with each model
