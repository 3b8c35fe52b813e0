#!/usr/bin/env python
"""The repository's import graph, read with ``ast``: no import circle, no arrow up a floor.

Every ``import``/``from ... import`` of a project module counts as an arrow, wherever it stands:
at module level, inside a function (a lazy import is still an arrow) or under ``TYPE_CHECKING``.
``from pkg import name`` points at ``pkg.name`` when that is a module, else at ``pkg``. The
implicit run of a package's ``__init__`` is not an arrow (they hold docstrings; linkner/llm/__init__.py
re-exports its own protocol, same floor).

Floors of ``linkner/``, lowest first; a module may import only its own floor or lower (the
longest prefix in the list names a module's floor):

  0 base         linkner (its __init__ only), linkner.paths, linkner.telemetry: leaves any floor may use
  1 data         linkner.data, linkner.text: span records, tags, readers; raw text into words
  2 metrics      linkner.evaluation.scores, linkner.evaluation.perturb: leaf measures and test-set
                 perturbations, imported by training and augmentation below the experiments
  3 model        linkner.model, linkner.uncertainty: the local NER model and its per-span
                 uncertainty (the predictor runs the estimators and detector; the detector
                 fingerprints checkpoints with model.metadata): one floor, mutual but acyclic
  4 llm          linkner.llm: backends behind one protocol, prompts, demonstrations (retrieval
                 embeds with the local model's encoder)
  5 routing      linkner.routing: ranking, detection policy with its runtime calibration, merge,
                 the RDC linker and its answer cache
  6 experiments  linkner.evaluation (the rest): assessment, linking sweeps, the offline dev-set
                 calibration sweep: they drive predictor, LLM and routing
  7 service      linkner.service: request shapes, config, the service logic, ``prepare``
  8 cli          linkner.cli

Rationale: each floor only needs what is under it, so training measures F1 without pulling an
LLM, and the router applies a calibration without pulling the sweep that made it.

Project rules: ``linkner/`` imports nothing from serve/, deployments/, clients/, benchmarks/ (it
is the Ray-free core) and of protos/ only ``protos.protocol``, the service's wire shapes in plain
pydantic that server and client share (a leaf: it imports no project module); ``clients/`` imports only clients/ and protos/ (it ships alone);
``deployments/`` never imports serve/ (serve/ builds the app out of the deployments).

Usage: ``python scripts/import_graph.py`` prints cycles (each strongly connected component of more
than one module, with one concrete cycle through it), floor and project-rule violations, and
imports of project modules that do not exist, a sibling imported by its bare name included (it
resolves only with its folder on ``sys.path``: ``from benchmarks import serving``, not ``import
serving``); it exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("linkner", "serve", "deployments", "clients", "benchmarks")
PROJECT = SCANNED + ("protos",)

FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("linkner", "linkner.paths", "linkner.telemetry")),
    ("data", ("linkner.data", "linkner.text")),
    ("metrics", ("linkner.evaluation.scores", "linkner.evaluation.perturb")),
    ("model", ("linkner.model", "linkner.uncertainty")),
    ("llm", ("linkner.llm",)),
    ("routing", ("linkner.routing",)),
    ("experiments", ("linkner.evaluation",)),
    ("service", ("linkner.service",)),
    ("cli", ("linkner.cli",)),
]

# (importer prefix, allowed target prefixes or None, forbidden target prefixes, why)
RULES: list[tuple[str, tuple[str, ...] | None, tuple[str, ...], str]] = [
    ("linkner", ("linkner", "protos.protocol"), (), "linkner/ is the Ray-free core: it imports no serve/, "
     "deployments/, clients/, benchmarks/, and of protos/ only the wire shapes (protos.protocol, plain pydantic)"),
    ("protos.protocol", ("protos.protocol",), (), "protos/protocol.py is the leaf both server and client share"),
    ("clients", ("clients", "protos"), (), "clients/ ships alone: it imports only clients/ and protos/"),
    ("deployments", None, ("serve",), "deployments/ never imports serve/"),
]


@dataclass(frozen=True)
class Arrow:
    source: str
    target: str
    path: str
    line: int


@dataclass
class Graph:
    modules: dict[str, Path] = field(default_factory=dict)
    arrows: list[Arrow] = field(default_factory=list)
    missing: list[Arrow] = field(default_factory=list)  # imports of project modules that do not exist

    def edges(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {name: set() for name in self.modules}
        for arrow in self.arrows:
            if arrow.source != arrow.target:
                out[arrow.source].add(arrow.target)
        return out


def _is_under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover(root: Path, packages: Iterable[str]) -> dict[str, Path]:
    """Module name -> file, for every .py under each of ``packages`` (folders under ``root``)."""
    modules = {}
    for package in packages:
        folder = root / package
        for path in sorted(folder.rglob("*.py")) if folder.is_dir() else ():
            if any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(root).parts):
                continue
            modules[module_name(root, path)] = path
    return modules


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The longest known module that ``name`` is or lies in."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def _targets(node: ast.Import | ast.ImportFrom, source: str, is_package: bool,
             known: dict[str, Path]) -> Iterable[str]:
    """The dotted names this import statement asks for (before resolution)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    if node.level:
        base = source.split(".") if is_package else source.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    for alias in node.names:
        submodule = f"{module}.{alias.name}"
        if submodule in known:
            yield submodule
        else:
            yield module


def build_graph(root: Path = ROOT, scanned: Sequence[str] = SCANNED, project: Sequence[str] = PROJECT) -> Graph:
    """Parse every module under ``scanned`` and collect its arrows to modules under ``project``."""
    graph = Graph(modules=discover(root, scanned))
    known = {**discover(root, [p for p in project if p not in scanned]), **graph.modules}
    for source, path in graph.modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        relative = str(path.relative_to(root))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            package = source if is_package else source.rpartition(".")[0]
            absolute = isinstance(node, ast.Import) or not node.level
            for name in _targets(node, source, is_package, known):
                if not name or not any(_is_under(name, p) for p in project):
                    if absolute and package and f"{package}.{name.split('.')[0]}" in known:
                        graph.missing.append(Arrow(source, name, relative, node.lineno))  # a sibling by bare name
                    continue
                target = _resolve(name, known)
                if target is None or (target != name and known[target].name == "__init__.py"):
                    graph.missing.append(Arrow(source, name, relative, node.lineno))  # no such module
                else:
                    graph.arrows.append(Arrow(source, target, relative, node.lineno))
    graph.arrows = sorted(set(graph.arrows), key=lambda a: (a.path, a.line, a.target))
    graph.missing = sorted(set(graph.missing), key=lambda a: (a.path, a.line, a.target))
    return graph


# --------------------------------------------------------------------------- cycles


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative), each sorted, components of one left out."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def cycle_through(component: Sequence[str], edges: dict[str, set[str]]) -> list[str]:
    """One concrete cycle inside ``component``: the shortest from its first module back to itself."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(edges.get(node, ())):
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start] + path[::-1][1:] + [start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    return list(component)  # not reached: a component of two or more always has a cycle through each member


def find_cycles(graph: Graph) -> list[tuple[list[str], list[str]]]:
    """Each strongly connected component of more than one module, with one cycle through it."""
    edges = graph.edges()
    return [(component, cycle_through(component, edges)) for component in strongly_connected(edges)]


# --------------------------------------------------------------------------- floors and rules


def floor_of(module: str, floors: Sequence[tuple[str, Sequence[str]]] = FLOORS,
             layered: str = "linkner") -> int | None:
    """The index of the floor whose longest prefix matches ``module`` (a package's name covers its
    modules, except ``layered`` itself, which names only its own ``__init__``); None when none does."""
    best: tuple[int, int] | None = None  # (prefix length, floor)
    for number, (_, prefixes) in enumerate(floors):
        for prefix in prefixes:
            matches = module == prefix if prefix == layered else _is_under(module, prefix)
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), number)
    return None if best is None else best[1]


def floor_violations(graph: Graph, floors: Sequence[tuple[str, Sequence[str]]] = FLOORS,
                     layered: str = "linkner") -> list[str]:
    """Arrows from a module of ``layered`` up to a higher floor, and modules that have no floor."""
    problems = []
    for module in sorted(graph.modules):
        if _is_under(module, layered) and floor_of(module, floors, layered) is None:
            problems.append(f"{module} is on no floor (add it to FLOORS)")
    for arrow in graph.arrows:
        if not (_is_under(arrow.source, layered) and _is_under(arrow.target, layered)):
            continue
        source, target = floor_of(arrow.source, floors, layered), floor_of(arrow.target, floors, layered)
        if source is not None and target is not None and target > source:
            problems.append(f"{arrow.path}:{arrow.line}: {arrow.source} (floor {source} {floors[source][0]}) "
                            f"imports {arrow.target} (floor {target} {floors[target][0]})")
    return problems


def rule_violations(graph: Graph, rules=RULES) -> list[str]:
    """Arrows that break the project rules between top-level folders."""
    problems = []
    for arrow in graph.arrows:
        for importer, allowed, forbidden, why in rules:
            if not _is_under(arrow.source, importer):
                continue
            bad = (allowed is not None and not any(_is_under(arrow.target, p) for p in allowed)) \
                or any(_is_under(arrow.target, p) for p in forbidden)
            if bad:
                problems.append(f"{arrow.path}:{arrow.line}: {arrow.source} imports {arrow.target} ({why})")
    return problems


def report(graph: Graph, floors=FLOORS, rules=RULES, layered: str = "linkner") -> tuple[list[str], int]:
    """The printed lines and the number of problems."""
    cycles = find_cycles(graph)
    floors_broken = floor_violations(graph, floors, layered)
    rules_broken = rule_violations(graph, rules)
    lines = [f"{len(graph.modules)} modules, {len(graph.arrows)} arrows between project modules", ""]
    lines.append(f"import cycles: {len(cycles)}")
    for component, cycle in cycles:
        lines.append(f"  {len(component)} modules ({', '.join(component)}), e.g. " + " -> ".join(cycle))
    lines.append(f"floor violations in {layered}/: {len(floors_broken)}")
    lines += ["  " + line for line in floors_broken]
    lines.append(f"project rule violations: {len(rules_broken)}")
    lines += ["  " + line for line in rules_broken]
    lines.append(f"imports of missing project modules: {len(graph.missing)}")
    lines += [f"  {a.path}:{a.line}: {a.source} imports {a.target}" for a in graph.missing]
    return lines, len(cycles) + len(floors_broken) + len(rules_broken) + len(graph.missing)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--floors", action="store_true", help="also print each linkner module's floor")
    args = parser.parse_args(argv)
    graph = build_graph()
    if args.floors:
        layered = sorted((floor_of(m), m) for m in graph.modules if _is_under(m, "linkner") and floor_of(m) is not None)
        for number, module in layered:
            print(f"{number} {FLOORS[number][0]:12} {module}")
        print()
    lines, problems = report(graph)
    print("\n".join(lines))
    print("OK" if not problems else f"FAILED: {problems} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
