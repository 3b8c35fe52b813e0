from pathlib import Path

import pytest

from linkner.data.spans import Span
from linkner.data.readers import DataFormatError, read_conll, read_dataset, read_jsonl, write_conll, write_jsonl


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_conll_with_docstart_blank_lines_and_extra_columns(tmp_path):
    path = write(tmp_path, "a.txt", "-DOCSTART- -X- O O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\n\n"
                                    "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n")
    sentences = read_conll(path)
    assert [s.tokens for s in sentences] == [("EU", "rejects"), ("Peter", "Blackburn")]
    assert sentences[0].entities == (Span(0, 1, "ORG"),)
    assert sentences[1].entities == (Span(0, 2, "PER"),)


def test_conll_wrong_column_count_names_file_and_line(tmp_path):
    path = write(tmp_path, "bad.txt", "EU\tB-ORG\nrejects\tNNP\tO\n")
    with pytest.raises(DataFormatError) as error:
        read_conll(path)
    assert str(error.value).startswith(f"{path}:2: wrong column count")


def test_conll_single_column_line(tmp_path):
    path = write(tmp_path, "bad.txt", "EU\tB-ORG\n\nlonely\n")
    with pytest.raises(DataFormatError, match=r":3: expected a token and a tag"):
        read_conll(path)


def test_conll_bad_tag_names_its_line(tmp_path):
    path = write(tmp_path, "bad.txt", "EU\tB-ORG\n\nPeter\tB-PER\nBlackburn\tPERSON\n")
    with pytest.raises(DataFormatError, match=r"bad.txt:4: bad tag 'PERSON'"):
        read_conll(path)


def test_conll_strict_mode_reports_inside_without_begin(tmp_path):
    path = write(tmp_path, "iob1.txt", "Peter\tI-PER\nBlackburn\tI-PER\n")
    assert read_conll(path, scheme="iob1")[0].entities == (Span(0, 2, "PER"),)
    with pytest.raises(DataFormatError, match=r"iob1.txt:1: .*I- without B-"):
        read_conll(path, strict=True)


def test_conll_invalid_utf8_names_its_line(tmp_path):
    path = write(tmp_path, "bin.txt", b"EU\tB-ORG\nre\xffjects\tO\n")
    with pytest.raises(DataFormatError, match=r"bin.txt:2: not valid UTF-8"):
        read_conll(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data file"):
        read_dataset(tmp_path / "nope.txt")


def test_jsonl_round_trip_and_conll_round_trip(tmp_path):
    path = write(tmp_path, "a.jsonl", '{"tokens": ["Anna", "Berg", "in", "Lima"], '
                                      '"entities": [{"start": 3, "end": 4, "label": "LOC"}, '
                                      '{"start": 0, "end": 2, "label": "PER"}]}\n\n{"tokens": ["hi"]}\n')
    sentences = read_dataset(path)
    assert sentences[0].entities == (Span(0, 2, "PER"), Span(3, 4, "LOC"))
    assert sentences[1].entities == ()
    write_jsonl(tmp_path / "b.jsonl", sentences)
    assert read_jsonl(tmp_path / "b.jsonl") == sentences
    write_conll(tmp_path / "c.txt", sentences)
    assert read_conll(tmp_path / "c.txt", strict=True) == sentences


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "Invalid JSON"),
        ('{"entities": []}', "tokens: Field required"),
        ('{"tokens": ["a"], "entities": [{"start": 0, "end": 2, "label": "X"}]}', "runs past 1 tokens"),
        ('{"tokens": ["a", "b"], "entities": [{"start": 1, "end": 1, "label": "X"}]}', "must be greater"),
        ('{"tokens": ["a", "b"], "entities": [{"start": 0, "end": 2, "label": "X"}, '
         '{"start": 1, "end": 2, "label": "Y"}]}', "overlap"),
        ('{"tokens": ["a", ""]}', "non-empty"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, line, message):
    path = write(tmp_path, "bad.jsonl", '{"tokens": ["fine"]}\n' + line + "\n")
    with pytest.raises(DataFormatError) as error:
        read_jsonl(path)
    assert str(error.value).startswith(f"{path}:2: ")
    assert message in str(error.value)


def test_real_conll_counts(conll_dir):
    train = read_conll(conll_dir / "train.txt", strict=True)
    assert len(train) == 14041
    assert sum(len(s.entities) for s in train) == 23499
    assert {span.label for s in train for span in s.entities} == {"PER", "LOC", "ORG", "MISC"}
