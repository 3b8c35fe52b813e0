import json

from linkner.cli import main
from linkner.data.readers import write_conll, write_jsonl


def test_train_evaluate_predict_from_the_command_line(tiny_encoder, toy_train, toy_dev, tmp_path, capsys):
    write_conll(tmp_path / "train.txt", toy_train)
    write_jsonl(tmp_path / "dev.jsonl", toy_dev)
    model = tmp_path / "model"
    code = main(["train", "--train", str(tmp_path / "train.txt"), "--dev", str(tmp_path / "dev.jsonl"),
                 "--output", str(model), "--encoder", str(tiny_encoder), "--epochs", "3", "--batch-size", "16",
                 "--lr-encoder", "0.001", "--lr-head", "0.003", "--max-span-len", "4", "--no-progress"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["epochs_run"] == 3 and result["best_dev_f1"] > 0.3

    code = main(["evaluate", "--model", str(model), "--data", str(tmp_path / "dev.jsonl"),
                 "--json", str(tmp_path / "report.json"), "--plot", str(tmp_path / "rel.png")])
    assert code == 0
    out = capsys.readouterr().out
    assert "| micro |" in out and "| mc_dropout |" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["scores"]["micro"]["f1"] == result["best_dev_f1"]
    assert (tmp_path / "rel.png").read_bytes()[:4] == b"\x89PNG"

    code = main(["predict", "--model", str(model), "--data", str(tmp_path / "dev.jsonl"),
                 "--output", str(tmp_path / "out.jsonl")])
    assert code == 0
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == len(toy_dev) and "uncertainty" in lines[0]


def test_bad_data_file_gives_file_and_line_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("Paris\tB-LOC\nis\tO\tO\n")
    code = main(["train", "--train", str(bad), "--dev", str(bad), "--output", str(tmp_path / "m")])
    assert code == 2
    assert f"{bad}:2: wrong column count" in capsys.readouterr().err


def test_evaluate_refuses_unavailable_estimator(tiny_checkpoint, toy_dev, tmp_path, capsys):
    write_jsonl(tmp_path / "dev.jsonl", toy_dev[:5])
    code = main(["evaluate", "--model", str(tiny_checkpoint), "--data", str(tmp_path / "dev.jsonl"),
                 "--estimators", "evidential"])
    assert code == 2
    assert "not available for this model" in capsys.readouterr().err
