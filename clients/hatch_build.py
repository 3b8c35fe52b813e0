"""Hatch build hook of ``linkner-client`` (clients/pyproject.toml), not part of the client.

The wheel carries this folder's modules as the ``clients`` package and the generated stubs as
``protos``: beside this folder in a clone, inside the folder once it is an sdist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

HOOK_FILE = "hatch_build.py"


def protos_folder(root: Path) -> Path:
    """The ``protos`` package: in the sdist (``root/protos``) or in the clone (``root/../protos``)."""
    for folder in (root / "protos", root.parent / "protos"):
        if (folder / "linkner" / "v1" / "linkner_pb2.py").is_file():
            return folder
    raise FileNotFoundError(f"no protos/linkner/v1/linkner_pb2.py in {root} or {root.parent}")


def wheel_files(root: Path) -> dict[str, str]:
    """Source path -> path in the wheel, for every file the wheel ships."""
    files = {str(module): f"clients/{module.name}" for module in sorted(root.glob("*.py")) if module.name != HOOK_FILE}
    files[str(protos_folder(root))] = "protos"
    return files


class ClientWheelHook(BuildHookInterface):
    """Adds the client's modules and the stubs to a standard (not editable) wheel."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name == "wheel" and version == "standard":
            build_data["force_include"].update(wheel_files(Path(self.root)))
