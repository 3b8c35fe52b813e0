import pytest

from clients.cli import InputError, main, read_documents


def test_text_and_jsonl_inputs(tmp_path):
    text = tmp_path / "docs.txt"
    text.write_text("first doc\n\nsecond doc\n")
    assert [d["text"] for d in read_documents(text)] == ["first doc", "second doc"]
    lines = tmp_path / "docs.jsonl"
    lines.write_text('{"text": "a"}\n{"words": ["b", "c"]}\n')
    assert [d["line"] for d in read_documents(lines)] == [1, 2]


@pytest.mark.parametrize("content, message", [
    ('{"text": "a"}\n{"text": \n', "docs.jsonl:2: invalid JSON"),
    ('{"text": "a"}\n{"body": "x"}\n', 'docs.jsonl:2: expected an object with "text"'),
    (b'{"text": "a"}\n\xff\n', "docs.jsonl:2: not valid UTF-8"),
])
def test_bad_input_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(InputError, match=message):
        read_documents(path)


def test_cli_reports_bad_file_without_traceback(tmp_path, capsys):
    path = tmp_path / "docs.jsonl"
    path.write_text("{oops\n")
    assert main(["file", str(path), "--out", str(tmp_path / "out.jsonl")]) == 2
    assert "docs.jsonl:1: invalid JSON" in capsys.readouterr().err


def test_the_token_file_is_read_stripped(tmp_path):
    from clients.cli import read_token

    path = tmp_path / "token"
    path.write_text("  abc.DEF-123\n")
    assert read_token(path) == "abc.DEF-123"
    path.write_text("\n")
    with pytest.raises(InputError, match="token file is empty"):
        read_token(path)


@pytest.mark.parametrize("flags, message", [
    (["--token-file", "{tmp}/absent"], "absent: cannot read the token file"),
    (["--tls-cert", "{tmp}/client.pem"], "needs both tls_cert and tls_key"),
    (["--tls-ca", "{tmp}/ca.pem"], "ca.pem: cannot read"),
    (["--tls-server-name", "localhost"], "tls_server_name needs TLS"),
])
def test_unusable_token_or_tls_flags_are_reported_without_traceback(tmp_path, capsys, flags, message):
    argv = [flag.format(tmp=tmp_path) for flag in flags]
    assert main(["--target", "127.0.0.1:1", *argv, "recognize", "Paris"]) == 2
    assert message in capsys.readouterr().err
