"""What a stored calibration was measured with (LLM and answer mode, demonstrations, estimator,
checkpoint and its encoder runtime), so that one made for another setting is recognised as stale instead of applied."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from linkner.model.metadata import WEIGHTS_FILE, file_sha256

_FIELDS = ("llm", "estimator", "demonstrations", "checkpoint", "runtime")


class CalibrationKey(BaseModel):
    """The identity of what a calibration measured; any difference makes it stale."""

    llm: str  # the backend's model_id: LLM, answer mode and answer options
    estimator: str
    demonstrations: str  # "none", or "random k=4 seed=0 train=sha256:..."
    checkpoint: str  # "sha256:..." of the checkpoint's weights
    runtime: str = "eager"  # how the local model's encoder ran (ner.runtime): its uncertainties are what is routed

    def differences(self, configured: "CalibrationKey") -> list[str]:
        """``"<field> differs (stored X, configured Y)"`` for each field that differs."""
        return [f"{name} differs (stored {getattr(self, name)}, configured {getattr(configured, name)})"
                for name in _FIELDS if getattr(self, name) != getattr(configured, name)]


def file_digest(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's content."""
    return f"sha256:{file_sha256(path)}"


def checkpoint_identity(checkpoint: str | Path) -> str:
    """The checkpoint's weights by content (a retrained model differs; a copied one does not)."""
    weights = Path(checkpoint) / WEIGHTS_FILE
    return file_digest(weights) if weights.is_file() else f"missing:{weights}"


def demonstrations_identity(kind: str, k: int, seed: int, train: str | Path | None) -> str:
    """Demonstration settings and the content of their training file."""
    if kind == "none":
        return "none"
    source = file_digest(train) if train and Path(train).is_file() else f"missing:{train}"
    return f"{kind} k={k} seed={seed} train={source}"


def calibration_key(llm: str, estimator: str, demonstrations: str, checkpoint: str | Path,
                    runtime: str = "eager") -> CalibrationKey:
    """The key of a calibration made (or to be applied) with these settings."""
    return CalibrationKey(llm=llm, estimator=estimator, demonstrations=demonstrations,
                          checkpoint=checkpoint_identity(checkpoint), runtime=runtime)
