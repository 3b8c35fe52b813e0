"""benchmarks.robust_training end to end on the tiny encoder and the toy corpus."""

from __future__ import annotations

import json

import pytest

from benchmarks import robust_training
from linkner.data.readers import write_dataset
from linkner.model.predictor import SpanPredictor

pytestmark = pytest.mark.slow  # minutes, or the network: not in ./run.sh test --fast


def test_baseline_and_robust_side_by_side_in_two_processes(tiny_encoder, toy_train, toy_dev, tmp_path) -> None:
    for name, data in (("train", toy_train), ("dev", toy_dev[:30]), ("test", toy_dev[30:])):
        write_dataset(tmp_path / f"{name}.txt", data)
    out = tmp_path / "results" / "robust_training"
    argv = ["--train", str(tmp_path / "train.txt"), "--dev", str(tmp_path / "dev.txt"), "--test",
            str(tmp_path / "test.txt"), "--encoder", str(tiny_encoder), "--device", "cpu", "--epochs", "1",
            "--threads", "1", "--no-progress", "--out", str(out), "--save-robust", str(tmp_path / "robust"),
            "--mention-replacement", "0.5", "--typo-rate", "0.2", "--parallel"]
    assert robust_training.main(argv) == 0
    results = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
    models = results["models"]
    assert set(models) == {"baseline", "robust"}
    assert models["baseline"]["config"]["mention_replacement"] == 0.0 == models["baseline"]["config"]["typo_rate"]
    assert models["robust"]["config"]["mention_replacement"] == 0.5 and models["robust"]["config"]["typo_rate"] == 0.2
    for model in models.values():
        assert set(model["scores"]) == {"dev", "test", "test-typo", "test-oov", "test-oov-real"}
        assert model["epochs_run"] == 1
        assert model["config"]["seed"] == 13 and model["config"]["time_budget_s"] is None
    delta = results["robust_minus_baseline"]
    f1 = {name: model["scores"]["test-oov"]["f1"] for name, model in models.items()}
    assert delta["test-oov"] == f1["robust"] - f1["baseline"]
    table = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "| robust - baseline |" in table and "Targets:" in table
    saved = tmp_path / "robust"
    assert not (saved / "train_state.pt").exists() and SpanPredictor.from_checkpoint(saved, "cpu").labels

    # --score: the saved checkpoint scored again, nothing trained: the same F1 on every set
    rescored = tmp_path / "results" / "rescored"
    argv = argv[: argv.index("--out")] + ["--no-progress", "--out", str(rescored), "--score", f"robust={saved}",
                                          "--score", f"baseline={saved}"]
    assert robust_training.main(argv) == 0
    again = json.loads(rescored.with_suffix(".json").read_text(encoding="utf-8"))["models"]
    for name in ("baseline", "robust"):
        assert again[name]["scored_only"] and again[name]["config"]["mention_replacement"] == 0.5
        assert {k: v["f1"] for k, v in again[name]["scores"].items()} == {
            k: v["f1"] for k, v in models["robust"]["scores"].items()}
    assert "scored (not trained by this run)" in rescored.with_suffix(".md").read_text(encoding="utf-8")


def test_results_of_other_settings_are_not_merged(tmp_path) -> None:
    args = robust_training.parse_args(["--out", str(tmp_path / "r"), "--epochs", "2"])
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"settings": robust_training.settings(args), "models": {"baseline": {"x": 1}}}))
    assert robust_training.load_existing(path, robust_training.settings(args)) == {"baseline": {"x": 1}}
    other = robust_training.parse_args(["--out", str(tmp_path / "r"), "--epochs", "3"])
    assert robust_training.load_existing(path, robust_training.settings(other)) == {}
