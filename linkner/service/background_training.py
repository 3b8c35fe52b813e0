"""Training the default model in a child process, so that the main job can serve an early snapshot
of it (the first epoch's checkpoint, copied to ``<model>-early``) while the remaining epochs run.

The main job pauses the child while it prepares and starts the snapshot (calibration asks the LLM
on every core), then lets it go on at the lowest CPU priority, below Ray's workers (which run at nice 15): requests
to the service come first; when it is idle, training has the cores."""

from __future__ import annotations

import atexit
import multiprocessing
import os
import shutil
import signal
import time
from pathlib import Path

from linkner.model.metadata import STATE_FILE, is_checkpoint, read_metadata, write_metadata
from linkner.uncertainty.detector import DETECTOR_FILE

EARLY_SUFFIX = "-early"
NOT_COPIED = (STATE_FILE, DETECTOR_FILE, "demonstrations-")  # the trainer's state; what the weights derive
TRAINING_NICENESS = 19  # the lowest priority: below Ray's workers (nice 15), which serve the calls


def early_snapshot_path(model: str | Path) -> Path:
    """Where the early snapshot of ``model`` is kept: ``<model>-early`` beside it."""
    model = Path(model)
    return model.with_name(model.name + EARLY_SUFFIX)


def write_snapshot(model: Path, snapshot: Path, epoch: int) -> Path:
    """Copy ``model``'s checkpoint (weights, config, tokenizer, metadata; not the trainer's state or
    anything derived from the weights) to ``snapshot``, atomically, marked as a snapshot of
    ``epoch``. It is a finished checkpoint of its own: nothing resumes in it."""
    partial = snapshot.with_name(snapshot.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for path in model.iterdir():
        if path.is_file() and not path.name.startswith(NOT_COPIED):
            shutil.copy2(path, partial / path.name)
    metadata = read_metadata(partial)
    metadata.setdefault("training", {}).update({"completed": True, "stopped": "snapshot"})
    metadata["snapshot"] = {"of": str(model), "epoch": epoch}
    write_metadata(partial, metadata)
    shutil.rmtree(snapshot, ignore_errors=True)
    partial.rename(snapshot)
    return snapshot


def snapshot_epoch(snapshot: Path) -> int | None:
    """The epoch a snapshot was taken after, or None when ``snapshot`` is not one."""
    if not is_checkpoint(snapshot):
        return None
    epoch = read_metadata(snapshot).get("snapshot", {}).get("epoch")
    return int(epoch) if epoch is not None else None


def _train(model: str, data_dir: str, threads: int | None, epochs: int | None, snapshot: str) -> None:
    """The child: lower its priority, train (or resume) ``model``, and write the snapshot after the
    first epoch whose checkpoint exists, unless one is there already."""
    from linkner.service.prepare import ensure_model

    os.nice(TRAINING_NICENESS)  # threads started from here on (torch's) inherit it

    def take_snapshot(epoch: int) -> None:
        if snapshot_epoch(Path(snapshot)) is None and is_checkpoint(model):
            write_snapshot(Path(model), Path(snapshot), epoch)

    ensure_model(Path(model), Path(data_dir), threads, epochs, on_saved=take_snapshot)


class BackgroundTraining:
    """The default model trained in a child process, with an early snapshot to serve meanwhile."""

    def __init__(self, model: Path, data_dir: Path, threads: int | None = None, epochs: int | None = None) -> None:
        self.model, self.snapshot = Path(model), early_snapshot_path(model)
        context = multiprocessing.get_context("spawn")
        self.process = context.Process(target=_train, name="linkner-training", daemon=True,
                                       args=(str(self.model), str(data_dir), threads, epochs, str(self.snapshot)))

    def start(self) -> BackgroundTraining:
        """Start training. A snapshot left from another run of this model is removed unless the
        run resumes (the model's folder holds an unfinished checkpoint)."""
        if not is_checkpoint(self.model):
            shutil.rmtree(self.snapshot, ignore_errors=True)
        self.process.start()
        atexit.register(self.stop)  # before multiprocessing's own exit hook, which would wait on a paused child
        return self

    def wait_for_snapshot(self, poll_s: float = 1.0) -> Path | None:
        """The early snapshot once it exists; None if training ended first (or failed)."""
        while self.process.is_alive():
            if snapshot_epoch(self.snapshot) is not None:
                return self.snapshot
            time.sleep(poll_s)
        return self.snapshot if snapshot_epoch(self.snapshot) is not None and self.process.exitcode == 0 else None

    def pause(self) -> None:
        """Stop the child's CPU use (SIGSTOP) until :meth:`resume`."""
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused child go on (SIGCONT)."""
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGCONT)

    def wait(self) -> None:
        """Wait for training to end; SystemExit when it failed."""
        self.process.join()
        if self.process.exitcode != 0:
            raise SystemExit(f"training {self.model} failed (exit code {self.process.exitcode}); its output is above")

    def stop(self) -> None:
        """Stop training (it resumes after its last finished epoch on the next run)."""
        if self.process.is_alive():
            self.process.terminate()
            self.resume()  # a paused child handles SIGTERM once it runs again
            self.process.join(timeout=30)

    def remove_snapshot(self) -> None:
        """Delete the early snapshot (once the finished model serves)."""
        shutil.rmtree(self.snapshot, ignore_errors=True)


def describe_snapshot(snapshot: Path) -> str:
    """``snapshot`` in words: its epoch and dev F1."""
    training = read_metadata(snapshot).get("training", {})
    dev_f1 = training.get("dev_f1")
    score = f", dev F1 {100 * dev_f1:.2f}" if isinstance(dev_f1, (int, float)) else ""
    return f"{snapshot} (after epoch {snapshot_epoch(snapshot)} of training{score})"
