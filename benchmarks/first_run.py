"""A new user's first run, timed: clone the project into a fresh folder (with ``../shared`` beside
it), run ``./run.sh --once`` there, and split the wall time into set-up (package installs),
training, the embedded LLM's conversion, the error detector, calibration, start-up and the first
answers, from the time each line of its output arrived. About an hour on 2 cores.

    python -m benchmarks.first_run                    # clone HEAD into a temporary folder and run it
    python -m benchmarks.first_run --log FILE         # split an earlier run's timed log instead

The log is written as ``<seconds since start> <line>`` (``--log`` reads that format back).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import argument_parser, markdown_table, write_results
from linkner.paths import PROJECT_ROOT

# (phase, the line that ends it); each phase starts where the one before ended
PHASES = (
    ("set-up (package installs)", re.compile(r"no checkpoint at .*: training the default model")),
    ("training", re.compile(r"^epoch \d+: loss .*dev F1")),  # the last such line
    ("embedded LLM conversion", re.compile(r"^LLM: ")),
    ("error detector", re.compile(r"^error detector: (cross-validated|no train)")),
    ("calibration", re.compile(r"^calibration status: ")),
    ("start-up", re.compile(r"^LinkNER is up in ")),
    ("sample answer, local", re.compile(r"^\s+LLM spans \d+, degraded")),
    ("sample answer, every span to the LLM", re.compile(r"^\s+LLM spans \d+, degraded")),
)
STAMPED = re.compile(r"^\s*(\d+(?:\.\d+)?) (.*)$")


def parse_args():
    parser = argument_parser(__doc__, out="first_run")
    parser.add_argument("--log", type=Path, help="the timed log of an earlier run (split it, run nothing)")
    parser.add_argument("--keep", action="store_true", help="keep the fresh clone")
    return parser.parse_args()


def timed_run(log: Path, keep: bool) -> Path:
    """Clone HEAD beside a link to ``../shared`` and run ``./run.sh --once`` there, each output line
    written to ``log`` after the seconds since the start."""
    base = Path(tempfile.mkdtemp(prefix="linkner-first-run-"))
    (base / "shared").symlink_to(PROJECT_ROOT.parent / "shared")
    clone = base / "linkner"
    subprocess.run(["git", "clone", "-q", str(PROJECT_ROOT), str(clone)], check=True)
    started = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(["./run.sh", "--once"], cwd=clone, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)
        for line in process.stdout:
            for part in line.replace("\r", "\n").splitlines():
                out.write(f"{time.monotonic() - started:.1f} {part}\n")
                out.flush()
        code = process.wait()
    print(f"./run.sh --once exited with {code}; log {log}; clone {clone if keep else 'removed'}", file=sys.stderr)
    if not keep:
        subprocess.run(["rm", "-rf", str(base)], check=False)
    return log


def split(log: Path) -> dict[str, Any]:
    """Seconds per phase of a timed log, the total to the first answer and the sample's lines."""
    lines = [(float(match[1]), match[2]) for match in map(STAMPED.match, log.read_text(errors="replace").splitlines())
             if match]
    ends: dict[str, float] = {}
    position = 0
    for phase, marker in PHASES:
        found = [index for index in range(position, len(lines)) if marker.search(lines[index][1])]
        if not found:
            break
        index = found[-1] if phase == "training" else found[0]
        ends[phase], position = lines[index][0], index + 1
    phases, previous = {}, 0.0
    for phase, end in ends.items():
        phases[phase] = end - previous
        previous = end
    epochs = [line for _, line in lines if re.match(r"^epoch \d+: loss", line)]
    answers = [line.strip() for _, line in lines if re.match(r"^\s+LLM spans \d+, degraded", line)]
    return {"phases_s": phases, "total_s": previous, "after_setup_s": previous - phases.get(PHASES[0][0], 0.0),
            "epochs": epochs, "answers": answers}


def markdown(report: dict[str, Any]) -> str:
    rows = [[phase, f"{seconds:.0f}", f"{seconds / 60:.1f}"] for phase, seconds in report["phases_s"].items()]
    rows.append(["**first answers, from the clone**", f"{report['total_s']:.0f}", f"{report['total_s'] / 60:.1f}"])
    rows.append(["**first answers, after set-up**", f"{report['after_setup_s']:.0f}",
                 f"{report['after_setup_s'] / 60:.1f}"])
    table = markdown_table(["phase", "s", "min"], rows, "lrr")
    return table + "\n\n" + "\n".join(f"- {line}" for line in report["epochs"] + report["answers"]) + "\n"


def main() -> int:
    args = parse_args()
    log = args.log or timed_run(Path(tempfile.mkdtemp(prefix="linkner-first-run-log-")) / "run.log", args.keep)
    report = {"log": str(log), **split(log)}
    write_results(args.out, report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
