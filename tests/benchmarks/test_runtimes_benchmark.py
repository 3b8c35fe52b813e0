"""The runtime comparison and the training-speed profile, run small: each runtime scored in a process
of its own, then all timed side by side in one; the training phases of both settings timed on real batches."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.runtimes import SHIPPED, TORCH_INT8, choose_runtime
from linkner.data.readers import write_dataset
from linkner.paths import PROJECT_ROOT


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=900, check=False)


@pytest.mark.slow
def test_the_quick_comparison_scores_and_times_float32_and_the_shipped_int8(tiny_checkpoint, toy_dev, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_dataset(data / "test.txt", toy_dev[:30])
    done = run_module("benchmarks.runtimes", "--model", str(tiny_checkpoint), "--data-dir", str(data), "--quick",
                      "--sentences", "20", "--threads", "1", "--out", str(tmp_path / "runtimes"))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "runtimes.json").read_text())
    rows = report["variants"]
    assert list(rows) == ["float32", SHIPPED] and report["shipped"] == SHIPPED
    for row in rows.values():
        assert row["speed"]["1"] > 0 and row["rss_mb"] > 100 and row["load_s"] > 0
        assert 0.5 < row["test_f1"] <= 1.0 and 0.0 <= row["test_auroc_confidence"] <= 1.0
    table = (tmp_path / "runtimes.md").read_text()
    assert "| float32 |" in table and "**(shipped)**" in table


def test_the_runtime_is_chosen_on_dev_within_the_tolerances_fastest_first():
    def row(speed, f1, auroc):
        return {"speed": {"1": speed}, "dev_f1": f1, "test_auroc_learned": auroc}

    names = [*TORCH_INT8][:2] + [SHIPPED]
    rows = {"float32": row(100, 0.92, 0.90), names[0]: row(180, 0.915, 0.90), names[1]: row(170, 0.919, 0.895),
            names[2]: row(150, 0.92, 0.90)}
    assert choose_runtime(rows, 1) == names[1]  # the fastest (names[0]) loses 0.5 F1 points
    rows[names[1]]["test_auroc_learned"] = 0.88
    assert choose_runtime(rows, 1) == names[2]  # now it loses 0.02 AUROC
    assert choose_runtime({"float32": {"speed": {"1": 1}}}, 1) is None  # no dev scores: no choice
    rows[names[2]]["speed"]["1"] = 90
    assert choose_runtime(rows, 1) is None  # the one left is slower than float32


@pytest.mark.slow
def test_the_training_profile_times_every_phase_of_both_settings(conll_dir, tmp_path):
    done = run_module("benchmarks.training_speed", "--data-dir", str(conll_dir), "--steps", "3", "--rounds", "1",
                      "--threads", "1", "--out", str(tmp_path / "training_speed"))
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "training_speed.json").read_text())
    assert len(report["settings"]) == 3
    for row in report["settings"].values():
        assert row["sentences_per_s"] > 0 and all(row["phases_s"][phase] > 0 for phase in
                                                  ("encode", "forward", "backward", "optimizer"))
    shipped = report["settings"]["shipped"]
    assert shipped["dev_evaluation_s"] > 0 and shipped["augment_epoch_s"] > 0
    assert "| shipped |" in (tmp_path / "training_speed.md").read_text()
