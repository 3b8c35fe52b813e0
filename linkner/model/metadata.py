"""A checkpoint's metadata JSON (training history, calibration), readable without torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METADATA_FILE = "metadata.json"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "linkner_config.json"


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
