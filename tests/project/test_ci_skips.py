"""Under CI=true, tests/conftest.py turns any skipped test into a failed run."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = '''
import pytest


@pytest.fixture
def data():
    pytest.skip("no data here")


def test_runs():
    pass


@pytest.mark.skip(reason="needs the moon")
def test_skipped():
    pass


def test_needs_data(data):
    pass


@pytest.mark.xfail(reason="known bug")
def test_expected_failure():
    assert False
'''


@pytest.fixture()
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A project with the real tests/conftest.py and a mix of passing, skipped and xfailed tests."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(test_sample=SAMPLE,
                        test_later='import pytest\npytest.skip("whole module", allow_module_level=True)\n')
    return pytester


def test_ci_true_fails_a_run_with_skips_and_lists_them(project: pytest.Pytester, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "*CI=true: skipped tests fail the run*",
        "SKIPPED test_later.py: whole module",
        "SKIPPED test_sample.py::test_skipped: needs the moon",
        "SKIPPED test_sample.py::test_needs_data: no data here",
    ])
    result.stdout.no_fnmatch_line("SKIPPED *test_expected_failure*")
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)


def test_without_ci_skips_pass(project: pytest.Pytester, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    result = project.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.no_fnmatch_line("*CI=true*")
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)


def test_ci_true_without_skips_passes(pytester: pytest.Pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("CI", "true")
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text(encoding="utf-8"))
    pytester.makepyfile(test_fine="def test_fine():\n    pass\n")
    assert pytester.runpytest_subprocess("-p", "no:cacheprovider").ret == pytest.ExitCode.OK


def test_ci_true_fails_a_run_with_deselected_tests(project: pytest.Pytester, monkeypatch):
    """Leaving a test out with --deselect or -k is a skip by another name: under CI it fails too."""
    monkeypatch.setenv("CI", "true")
    project.makepyfile(test_later="def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    result = project.runpytest_subprocess("-p", "no:cacheprovider", "test_later.py", "--deselect",
                                          "test_later.py::test_b")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["SKIPPED test_later.py::test_b: deselected"])
    monkeypatch.delenv("CI")
    assert project.runpytest_subprocess("-p", "no:cacheprovider", "test_later.py", "--deselect",
                                        "test_later.py::test_b").ret == pytest.ExitCode.OK


def test_ci_sets_ci_true_itself() -> None:
    """The skip rule must not depend on the runner exporting CI=true."""
    assert "export CI=true" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
