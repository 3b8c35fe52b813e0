"""benchmarks.first_run splits a first run's timed output into its phases: the early model's first
answers, then the rest of training, the finished model's preparation, the roll-over and its answers."""

from __future__ import annotations

from benchmarks.first_run import markdown, split

ANSWER = "  LLM spans {spans}, degraded False, model {model}@abc (default:cross_entropy, int8), LLM -, 40 ms in the service"
LOG = [
    (0.0, "setup: creating .venv"),
    (300.0, "no checkpoint at /x/artifacts/models/default: training the default model (default encoder, ...)"),
    (700.0, "epoch 1/7: 100%|##########| 439/439"),
    (800.0, "epoch 1: loss 0.2626, dev F1 84.43, 500s elapsed"),
    (850.0, "LLM: /x/artifacts/llm/smollm2-135m"),
    (880.0, "error detector: cross-validated dev AUROC 0.870"),
    (1050.0, "calibration status: applied"),
    (1140.0, "LinkNER is up in 89s: gRPC on 127.0.0.1:9000"),
    (1141.0, ANSWER.format(spans=0, model="default-early")),
    (1146.0, ANSWER.format(spans=4, model="default-early")),
    (1600.0, "epoch 2: loss 0.05, dev F1 88.00, 1300s elapsed"),
    (3900.0, "epoch 7: loss 0.02, dev F1 92.50, 3600s elapsed"),
    (3940.0, "error detector: cross-validated dev AUROC 0.871"),
    (4100.0, "calibration status: applied"),
    (4160.0, "rolled over to the finished model /x/artifacts/models/default in 60s"),
    (4161.0, ANSWER.format(spans=0, model="default")),
    (4166.0, ANSWER.format(spans=4, model="default")),
]


def test_a_first_run_is_split_into_the_early_models_phases_and_the_finished_models(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("".join(f"{seconds:.1f} {line}\n" for seconds, line in LOG), encoding="utf-8")
    report = split(log)
    phases = report["phases_s"]
    assert phases["set-up (package installs)"] == 300 and phases["training, first epoch"] == 500
    assert phases["calibration"] == 170 and phases["start-up"] == 90
    assert report["first_answers_after_setup_s"] == 846
    assert phases["training, the other epochs"] == 3900 - 1146  # the last epoch's line ends it
    assert phases["finished model: int8 encoder, error detector, calibration"] == 200
    assert phases["roll-over to the finished model"] == 60
    assert report["finished_model_after_setup_s"] == 4166 - 300
    assert [answer.split("model ")[1].split("@")[0] for answer in report["answers"]] == ["default-early"] * 2 + ["default"] * 2
    assert "**first answers (early model), after set-up** | 846 | 14.1" in markdown(report)


def test_a_run_cut_short_reports_the_phases_it_reached(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("".join(f"{seconds:.1f} {line}\n" for seconds, line in LOG[:10]), encoding="utf-8")
    report = split(log)
    assert report["first_answers_after_setup_s"] == 846 and report["finished_model_after_setup_s"] is None
    assert "finished model answering" not in markdown(report)
