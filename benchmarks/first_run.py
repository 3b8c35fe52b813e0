"""A new user's first run, timed: clone the project into a fresh folder (with ``../shared`` beside
it), run ``./run.sh --once`` there, and split the wall time into set-up (package installs), the
first epoch of training, the int8 encoder and the embedded LLM's conversion, the error detector,
calibration, start-up and the first answers (the early model); then the rest of training, the
finished model's preparation, the roll-over and its answers, from the time each line of its output
arrived. About an hour on 2 cores.

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

SAMPLE_ANSWER = re.compile(r"^\s+LLM spans \d+, degraded")
EPOCH = re.compile(r"^epoch \d+: loss .*dev F1")
# (phase, the line that ends it, whether its last such line does); each phase starts where the one
# before ended. The first answers are those of the early model (a snapshot of the first epoch).
PHASES = (
    ("set-up (package installs)", re.compile(r"no checkpoint at .*: training the default model"), False),
    ("training, first epoch", EPOCH, False),
    ("int8 encoder, embedded LLM conversion", re.compile(r"^LLM: "), False),
    ("error detector", re.compile(r"^error detector: .*(cross-validated|not offered)"), False),
    ("calibration", re.compile(r"^calibration status: "), False),
    ("start-up", re.compile(r"^LinkNER is up in "), False),
    ("sample answer, local", SAMPLE_ANSWER, False),
    ("sample answer, every span to the LLM", SAMPLE_ANSWER, False),
    ("training, the other epochs", EPOCH, True),
    ("finished model: int8 encoder, error detector, calibration", re.compile(r"^calibration status: "), False),
    ("roll-over to the finished model", re.compile(r"^rolled over to the finished model"), False),
    ("finished model's sample answers", SAMPLE_ANSWER, False),
    ("finished model's sample answers, every span to the LLM", SAMPLE_ANSWER, False),
)
FIRST_ANSWERS = "sample answer, every span to the LLM"
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
    """Seconds per phase of a timed log, the times to the first answers and to the finished model's,
    the epochs' and the samples' lines."""
    lines = [(float(match[1]), match[2]) for match in map(STAMPED.match, log.read_text(errors="replace").splitlines())
             if match]
    ends: dict[str, float] = {}
    position = 0
    for phase, marker, last in PHASES:
        found = [index for index in range(position, len(lines)) if marker.search(lines[index][1])]
        if not found:
            break
        index = found[-1] if last else found[0]
        ends[phase], position = lines[index][0], index + 1
    phases, previous = {}, 0.0
    for phase, end in ends.items():
        phases[phase] = end - previous
        previous = end
    setup = ends.get(PHASES[0][0], 0.0)
    first = ends.get(FIRST_ANSWERS)
    epochs = [line for _, line in lines if EPOCH.match(line)]
    answers = [line.strip() for _, line in lines if SAMPLE_ANSWER.match(line)]
    return {"phases_s": phases, "first_answers_s": first, "first_answers_after_setup_s": first and first - setup,
            "finished_model_after_setup_s": previous - setup if len(ends) == len(PHASES) else None,
            "epochs": epochs, "answers": answers}


def markdown(report: dict[str, Any]) -> str:
    rows = [[phase, f"{seconds:.0f}", f"{seconds / 60:.1f}"] for phase, seconds in report["phases_s"].items()]
    for label, key in (("**first answers (early model), after set-up**", "first_answers_after_setup_s"),
                       ("**finished model answering, after set-up**", "finished_model_after_setup_s")):
        if report[key] is not None:
            rows.append([label, f"{report[key]:.0f}", f"{report[key] / 60:.1f}"])
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
