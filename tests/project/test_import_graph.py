"""The repository's import graph (scripts/import_graph.py): no import circle, no arrow up a floor in
linkner/, the project rules between top-level folders, no import of a module that does not exist;
and the checker itself still sees each of those on a small package made to break them."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "import_graph.py"


@pytest.fixture(scope="module")
def checker():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def graph(checker):
    return checker.build_graph()


def test_the_repository_has_no_import_cycle(checker, graph):
    assert checker.find_cycles(graph) == []


def test_no_linkner_module_imports_above_its_floor(checker, graph):
    assert checker.floor_violations(graph) == []


def test_the_project_rules_hold_and_every_import_resolves(checker, graph):
    assert checker.rule_violations(graph) == []
    assert graph.missing == []


def test_the_graph_sees_lazy_and_type_checking_imports(checker, graph):
    arrows = {(a.source, a.target) for a in graph.arrows}
    assert ("linkner.llm.factory", "linkner.llm.vllm_backend") in arrows  # inside build_backend
    assert ("linkner.routing.linker", "linkner.model.predictor") in arrows  # under TYPE_CHECKING
    assert ("deployments.ner", "linkner.model.predictor") in arrows  # from linkner.model import predictor
    assert ("benchmarks.pass_sizes", "benchmarks.serving") in arrows  # from benchmarks import serving
    assert len(graph.modules) > 50


def test_the_script_passes_on_the_repository(checker, capsys):
    assert checker.main([]) == 0
    assert capsys.readouterr().out.rstrip().endswith("OK")


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_checker_reports_what_a_broken_package_does(checker, tmp_path):
    write(tmp_path, "pkg/__init__.py", '"""A package made to break every rule."""\n')
    write(tmp_path, "pkg/low.py", "def later():\n    import pkg.high  # lazy, still an arrow\n")
    write(tmp_path, "pkg/high.py", "from . import low\nfrom pkg.gone import thing\n")
    write(tmp_path, "pkg/sub/__init__.py", "")
    write(tmp_path, "pkg/sub/mod.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from other import x\n")
    write(tmp_path, "pkg/loose.py", "")
    write(tmp_path, "other/__init__.py", "x = 1\n")
    floors = [("base", ("pkg",)), ("low", ("pkg.low", "pkg.sub")), ("high", ("pkg.high",))]
    rules = [("pkg", ("pkg",), (), "pkg stands alone")]

    graph = checker.build_graph(tmp_path, scanned=("pkg", "other"), project=("pkg", "other"))

    assert checker.find_cycles(graph) == [(["pkg.high", "pkg.low"], ["pkg.high", "pkg.low", "pkg.high"])]
    broken = checker.floor_violations(graph, floors, layered="pkg")
    assert broken == ["pkg.loose is on no floor (add it to FLOORS)",
                      "pkg/low.py:2: pkg.low (floor 1 low) imports pkg.high (floor 2 high)"]
    assert checker.rule_violations(graph, rules) == ["pkg/sub/mod.py:3: pkg.sub.mod imports other (pkg stands alone)"]
    assert [(a.source, a.target) for a in graph.missing] == [("pkg.high", "pkg.gone")]
    lines, problems = checker.report(graph, floors, rules, layered="pkg")
    assert problems == 5 and "  2 modules (pkg.high, pkg.low), e.g. pkg.high -> pkg.low -> pkg.high" in lines


def test_a_longer_cycle_is_reported_once_with_a_path_through_it(checker, tmp_path):
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/a.py", "import pkg.b\n")
    write(tmp_path, "pkg/b.py", "from pkg import c\n")
    write(tmp_path, "pkg/c.py", "from pkg.a import name\n")
    write(tmp_path, "pkg/d.py", "import pkg.a\n")  # into the cycle, not on it
    graph = checker.build_graph(tmp_path, scanned=("pkg",), project=("pkg",))
    assert checker.find_cycles(graph) == [(["pkg.a", "pkg.b", "pkg.c"], ["pkg.a", "pkg.b", "pkg.c", "pkg.a"])]


def test_a_sibling_imported_by_its_bare_name_is_reported(checker, tmp_path):
    """``import b`` beside ``pkg/b.py`` works only with ``pkg/`` on ``sys.path`` (as benchmarks once ran)."""
    write(tmp_path, "pkg/__init__.py", "")
    write(tmp_path, "pkg/a.py", "import json\nimport b\nfrom . import b as same\nfrom pkg.b import x\n")
    write(tmp_path, "pkg/b.py", "x = 1\n")
    graph = checker.build_graph(tmp_path, scanned=("pkg",), project=("pkg",))
    assert [(a.source, a.target, a.line) for a in graph.missing] == [("pkg.a", "b", 2)]
    assert {(a.source, a.target) for a in graph.arrows} == {("pkg.a", "pkg.b")}
