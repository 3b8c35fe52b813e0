"""Preparing apart from serving: `linkner prepare --config` makes what a Serve config needs, once;
`linkner link-eval --config ... --save-calibration` calibrates exactly the served form, so the
server applies it (and a calibration of another form is stale); a bad config is a clear error."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from linkner.cli import main
from linkner.data.readers import write_conll
from linkner.model.metadata import read_metadata
from linkner.paths import PROJECT_ROOT
from linkner.service.calibration_state import calibration_state, expected_key
from linkner.service.prepare import ServeConfigError, load_app_config
from openai_peer import OpenAIPeer

SHIPPED_CONFIG = PROJECT_ROOT / "serve_config.yaml"


def write_documents(path: Path, sentences: list, size: int = 10) -> None:
    """CoNLL columns in documents of ``size`` sentences, each after a -DOCSTART- line (as CoNLL's)."""
    parts = []
    for first in range(0, len(sentences), size):
        write_conll(path, sentences[first : first + size])
        parts.append("-DOCSTART-\tO\n\n" + path.read_text(encoding="utf-8"))
    path.write_text("".join(parts), encoding="utf-8")


@pytest.fixture
def peer():
    """A real OpenAI-compatible HTTP server on loopback (answers the first offered option)."""
    with OpenAIPeer() as server:
        yield server


@pytest.fixture
def served(tiny_checkpoint, toy_train, toy_dev, peer, tmp_path) -> Path:
    """The shipped serve_config.yaml with its checkpoint a copy of the tiny model and its LLM the
    peer (answer mode, options and demonstrations as shipped); data in ``tmp_path/data``."""
    checkpoint = shutil.copytree(tiny_checkpoint, tmp_path / "model")
    data = tmp_path / "data"
    data.mkdir()
    write_conll(data / "train.txt", toy_train)
    write_documents(data / "dev.txt", toy_dev)
    content = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    args = content["applications"][0]["args"]
    args["ner"]["checkpoint"] = str(checkpoint)
    args["llm_pool"]["llm"].update(backend="openai", model="peer-llm", base_url=peer.base_url)
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(content), encoding="utf-8")
    return path


def linkner(*argv: str) -> subprocess.CompletedProcess:
    """``linkner ARGV`` as a user runs it: a process of its own."""
    return subprocess.run([sys.executable, "-m", "linkner.cli", *argv], capture_output=True, text=True,
                          timeout=300, cwd=PROJECT_ROOT)


@pytest.mark.slow  # 25-90 s on 2 cores: not in the quick subset
def test_the_documented_link_eval_command_writes_a_calibration_the_server_applies(served, peer):
    dev = str(served.parent / "data" / "dev.txt")
    done = linkner("link-eval", "--config", str(served), "--data", dev, "--dev", dev, "--save-calibration")
    assert done.returncode == 0, done.stderr
    config = load_app_config(served)
    assert (config.llm_pool.llm.options, config.router.demonstrations.kind) == ("candidates", "none")  # as shipped
    stored = read_metadata(config.ner.checkpoint)["calibration"]
    assert stored["key"] == expected_key(config).model_dump()
    assert calibration_state(config).status == "applied"
    assert f"calibration status when serving {served}: applied" in done.stderr
    offered = [request["structured_outputs"]["choice"] for request in peer.requests]
    assert offered and max(map(len, offered)) <= 3  # the served form: top-2 labels plus Non-entity

    done = linkner("link-eval", "--config", str(served), "--data", dev, "--dev", dev, "--save-calibration",
                   "--options", "all", "--estimators", "confidence")  # another form: an explicit flag wins
    assert done.returncode == 0, done.stderr
    status = calibration_state(load_app_config(served)).status
    assert status == "stale: llm differs (stored openai:peer-llm, configured openai:peer-llm:top2)"
    assert status in done.stderr


@pytest.mark.slow  # 25-90 s on 2 cores: not in the quick subset
def test_prepare_makes_what_the_config_needs_once(served, capsys):
    config = load_app_config(served)
    checkpoint = Path(config.ner.checkpoint)
    weights = (checkpoint / "model.safetensors").read_bytes()
    command = ["prepare", "--config", str(served), "--data-dir", str(served.parent / "data")]

    assert main(command) == 0
    first = capsys.readouterr().err
    assert "fitting it on dev" in first and "calibrating when to ask the LLM" in first
    assert "calibration status: applied" in first and f"serve run {served}" in first
    assert calibration_state(config).status == "applied"
    assert (checkpoint / "error_detector.json").is_file()
    made = {path.name: path.stat().st_mtime_ns for path in checkpoint.iterdir()}

    assert main(command) == 0
    second = capsys.readouterr().err
    assert "fitting" not in second and "calibrating" not in second and "training" not in second
    assert "calibration status: applied" in second
    assert {path.name: path.stat().st_mtime_ns for path in checkpoint.iterdir()} == made  # nothing rewritten
    assert (checkpoint / "model.safetensors").read_bytes() == weights


@pytest.mark.parametrize("command", ["prepare", "link-eval"])
@pytest.mark.parametrize("content, says", [
    (None, "no such config file"),
    ("applications: [name: x\n", "not valid YAML"),
    ("applications:\n  - name: other\n    import_path: other.app:build\n", "no application with import_path"),
    ("applications:\n  - name: linkner\n    import_path: serve.app:build_app\n    args: {ner: {chekpoint: x}}\n",
     "invalid args of application 'linkner'"),
])
def test_a_bad_config_is_a_clear_error_naming_the_file(command, content, says, tmp_path, capsys):
    path = tmp_path / "serve_config.yaml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    extra = ["--data", str(tmp_path / "dev.txt")] if command == "link-eval" else []
    assert main([command, "--config", str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert f"linkner {command}: error: {path}: {says}" in err and "Traceback" not in err


def test_the_linkner_application_is_found_by_name_with_paths_resolved_as_served(tmp_path):
    app = {"import_path": "serve.app:build_app", "args": {"ner": {"checkpoint": "artifacts/models/mine"}}}
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump({"applications": [{"name": "a", **app}, {"name": "b", **app}]}), encoding="utf-8")
    with pytest.raises(ServeConfigError, match="2 LinkNER applications .*choose one with --app NAME"):
        load_app_config(path)
    with pytest.raises(ServeConfigError, match="no LinkNER application named 'c'"):
        load_app_config(path, "c")
    assert load_app_config(path, "b").ner.checkpoint == str(PROJECT_ROOT / "artifacts" / "models" / "mine")
