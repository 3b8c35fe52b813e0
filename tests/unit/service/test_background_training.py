"""Training in the background: a snapshot of the first epoch is a finished checkpoint of its own,
taken while the child process (at a lower CPU priority) goes on to finish the model."""

from __future__ import annotations

import os
import shutil

import pytest

from linkner.data.readers import write_conll
from linkner.model.metadata import STATE_FILE, is_finished_checkpoint, read_metadata, unfinished_training
from linkner.service.background_training import (TRAINING_NICENESS, BackgroundTraining, early_snapshot_path,
                                                  snapshot_epoch, write_snapshot)


def test_a_snapshot_is_a_finished_copy_without_the_trainers_state_or_what_the_weights_derive(tiny_checkpoint,
                                                                                              tmp_path):
    model = shutil.copytree(tiny_checkpoint, tmp_path / "model")
    (model / STATE_FILE).write_bytes(b"state")
    (model / "error_detector.json").write_text("{}")
    (model / "demonstrations-0123456789abcdef-0123456789abcdef.pt").write_bytes(b"derived")
    (model / "runtime").mkdir(exist_ok=True)  # other tests may have exported the shared checkpoint's encoder
    (model / "runtime" / "encoder.onnx").write_bytes(b"derived")
    snapshot = early_snapshot_path(model)
    assert snapshot == tmp_path / "model-early"

    write_snapshot(model, snapshot, epoch=1)
    derived = (STATE_FILE, "error_detector.json", "runtime", "demonstrations-")  # other tests may have left more
    assert sorted(path.name for path in snapshot.iterdir()) == sorted(
        path.name for path in model.iterdir() if not path.name.startswith(derived))
    assert {"model.safetensors", "metadata.json", "tokenizer.json"} <= {path.name for path in snapshot.iterdir()}
    assert (snapshot / "model.safetensors").read_bytes() == (model / "model.safetensors").read_bytes()
    assert is_finished_checkpoint(snapshot) and unfinished_training(snapshot) is None
    assert snapshot_epoch(snapshot) == 1 and read_metadata(snapshot)["snapshot"]["of"] == str(model)
    assert snapshot_epoch(model) is None  # the model itself is not a snapshot
    assert not (tmp_path / "model-early.partial").exists()


@pytest.mark.slow  # about 30 s on 2 cores: the default encoder trained on a toy corpus in a child process
def test_the_model_trains_in_a_child_at_lower_priority_with_a_snapshot_of_its_first_epoch(toy_train, toy_dev,
                                                                                        tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_conll(data / "train.txt", toy_train[:64])
    write_conll(data / "dev.txt", toy_dev[:24])
    model = tmp_path / "models" / "default"
    stale = early_snapshot_path(model)
    stale.mkdir(parents=True)  # another run's leftover: removed when training starts from scratch
    (stale / "model.safetensors").write_bytes(b"old")

    training = BackgroundTraining(model, data, threads=1, epochs=4).start()
    snapshot = training.wait_for_snapshot(poll_s=0.1)
    assert snapshot == stale and snapshot_epoch(snapshot) == 1
    assert training.process.is_alive()  # the rest of the epochs go on meanwhile
    lowered = min(19, os.getpriority(os.PRIO_PROCESS, 0) + TRAINING_NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, training.process.pid) == lowered
    training.pause()
    assert process_state(training.process.pid) == "T"  # stopped: no CPU while the snapshot is prepared
    training.resume()
    assert process_state(training.process.pid) != "T"
    training.wait()
    assert is_finished_checkpoint(model) and read_metadata(model)["training"]["last_epoch"] >= 2
    assert snapshot_epoch(snapshot) == 1  # taken once, not replaced by later epochs
    training.remove_snapshot()
    assert not snapshot.exists()


def process_state(pid: int) -> str:
    """The state letter of a process (R, S, T for stopped, ...) from /proc."""
    stat = open(f"/proc/{pid}/stat", encoding="utf-8").read()
    return stat[stat.rindex(")") + 2]


def test_a_paused_training_is_stopped_when_the_main_job_exits(tmp_path):
    """A paused child still ends with stop() (the main job's exit hook), not left stopped forever."""
    training = BackgroundTraining(tmp_path / "model", tmp_path / "no-data", epochs=2).start()
    training.pause()
    training.stop()
    assert not training.process.is_alive()


def test_a_training_that_fails_is_an_error_naming_the_model(tmp_path):
    training = BackgroundTraining(tmp_path / "model", tmp_path / "no-data", epochs=2).start()
    assert training.wait_for_snapshot(poll_s=0.1) is None
    with pytest.raises(SystemExit, match="training .*model failed"):
        training.wait()
