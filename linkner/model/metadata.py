"""A checkpoint's metadata JSON (training history, calibration), readable without torch."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from linkner.model.config import SpanModelConfig

METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "linkner_config.json"
STATE_FILE = "train_state.pt"  # the trainer's resumable state, beside the checkpoint


def read_metadata(folder: str | Path) -> dict[str, Any]:
    """The checkpoint's metadata, or ``{}``."""
    path = Path(folder) / METADATA_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def write_metadata(folder: str | Path, metadata: dict[str, Any]) -> None:
    """Replace the checkpoint's free-form metadata JSON."""
    (Path(folder) / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True), encoding="utf-8")


def is_checkpoint(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file()


def unfinished_training(folder: str | Path) -> dict[str, Any] | None:
    """The ``training`` metadata of a checkpoint whose training run was interrupted and can resume,
    else None. A run that ended by its own rules (epochs, early stopping, time budget) records
    ``completed: true``; a checkpoint without that flag is unfinished only when the trainer's
    ``train_state.pt`` lies beside it (without it there is nothing to resume from, e.g. a
    checkpoint copied from elsewhere or written before the flag existed)."""
    folder = Path(folder)
    training = read_metadata(folder).get("training")
    if not isinstance(training, dict) or training.get("completed") is True:
        return None
    return training if (folder / STATE_FILE).is_file() else None


def is_finished_checkpoint(folder: str | Path) -> bool:
    """A checkpoint whose training run is not waiting to be resumed."""
    return is_checkpoint(folder) and unfinished_training(folder) is None


def read_model_config(folder: str | Path) -> SpanModelConfig:
    """The model config (``linkner_config.json``) of the checkpoint at ``folder``, without torch."""
    return SpanModelConfig.model_validate_json((Path(folder) / CONFIG_FILE).read_text(encoding="utf-8"))


def checkpoint_labels(folder: str | Path) -> list[str] | None:
    """The entity labels of the checkpoint at ``folder`` (None without a config there)."""
    return read_model_config(folder).labels if (Path(folder) / CONFIG_FILE).is_file() else None


def weights_fingerprint(folder: str | Path) -> str:
    """SHA-256 of the checkpoint's weights file (``"no-weights"`` without one)."""
    path = Path(folder) / WEIGHTS_FILE
    return file_sha256(path) if path.is_file() else "no-weights"


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's content, computed once per process for each version of the file
    (path, inode, size, modification and change times): the one file hash of the project."""
    stat = Path(path).stat()
    return _file_sha256(str(Path(path).resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, inode: int, size: int, mtime_ns: int, ctime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
