"""The user documentation stays true to the code: the generated configuration reference is current,
links and anchors resolve, the API reference names every RPC, message and field of the proto, the
Grafana dashboard and the alert rules use only metrics the service defines (and promtool accepts
them), and the Node.js example runs."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MONITORING = DOCS / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = MONITORING / "alerts.test.yml"
NODE_EXAMPLE = DOCS / "examples" / "recognize.js"
NODE_MODULES = ROOT / "tests" / "interop" / "node_modules"
GENERATE = ".venv/bin/python scripts/gen_config_docs.py"

# Metrics the dashboard and alerts may use that the service does not define: the blackbox
# exporter's gRPC health probe.
EXTERNAL_METRICS = {"probe_success"}
# Labels Ray adds to every application metric, and Prometheus' own target labels.
RAY_LABELS = {"application", "deployment", "replica", "Component", "NodeAddress", "SessionName", "Version",
              "WorkerId", "JobId"}
TARGET_LABELS = {"job", "instance"}


def _generator():
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "scripts" / "gen_config_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "tests" / "README.md", *sorted(DOCS.rglob("*.md"))]


# ---------------------------------------------------------------- the configuration reference

def test_configuration_doc_is_current():
    committed = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert _generator().render() == committed, (
        f"docs/configuration.md is stale (a config model or a shipped serve_config changed): run `{GENERATE}` "
        "and commit the result")


def test_configuration_check_flag_reports_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text("# old\n", encoding="utf-8")
    generator = _generator()
    assert generator.main(["--check", "--output", str(stale)]) == 1
    assert "gen_config_docs.py" in capsys.readouterr().err
    assert generator.main(["--output", str(stale)]) == 0
    assert generator.main(["--check", "--output", str(stale)]) == 0


def test_configuration_doc_lists_every_key():
    """Every field of every model under AppConfig has a row (the generator walks the models)."""
    from linkner.service.config import AppConfig

    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    generator = _generator()
    for section in generator.walk(AppConfig):
        for row in section.rows:
            assert f"| `{row.path}` |" in text, row.path


# ---------------------------------------------------------------- README and links

def test_readme_is_short_and_its_first_screen_says_how_to_deploy_and_protect():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines: keep it at most 300 (details go to docs/)"
    first_screen = "\n".join(lines[:40])
    assert "./run.sh          #" in first_screen and "./run.sh test     #" in first_screen
    for needed in ("ray start", "serve deploy", "tls_cert", "LINKNER_AUTH_TOKEN", "authorization: Bearer",
                   "docs/api.md", "docs/configuration.md", "docs/operations.md"):
        assert needed in first_screen, f"README's first 40 lines must mention {needed!r}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = "".join(character for character in text if character.isalnum() or character in " -_")
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors, seen = set(), {}
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        slug = _slug(line.lstrip("#"))
        count = seen.get(slug, 0)
        anchors.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return anchors


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")


def test_links_and_anchors_resolve():
    broken = []
    for path in _markdown_files():
        text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
        for match in LINK.finditer(text):
            target = match.group(1) or match.group(2)
            if re.match(r"[a-z]+:", target):  # http(s), mailto
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path
            if not resolved.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_named_benchmark_results_exist():
    """Every `benchmarks/results/...` file the docs name is there (globs must match something)."""
    missing = []
    named = re.compile(r"benchmarks/results/([\w.*,/-]+\.(?:md|json|png|txt))")
    for path in _markdown_files():
        for name in named.findall(path.read_text(encoding="utf-8")):
            if not list((ROOT / "benchmarks" / "results").glob(name)):
                missing.append(f"{path.relative_to(ROOT)}: benchmarks/results/{name}")
    assert not missing, "\n".join(missing)


# ---------------------------------------------------------------- the API reference

def test_api_doc_names_every_rpc_message_and_field():
    from protos.linkner.v1 import linkner_pb2 as pb

    text = (DOCS / "api.md").read_text(encoding="utf-8")
    missing = []
    service = pb.DESCRIPTOR.services_by_name["LinkNER"]
    for method in service.methods:
        if f"`{method.name}`" not in text:
            missing.append(f"rpc {method.name}")
    for message in pb.DESCRIPTOR.message_types_by_name.values():
        if message.name not in text:
            missing.append(f"message {message.name}")
        for field in message.fields:
            if f"`{field.name}`" not in text:
                missing.append(f"field {message.name}.{field.name}")
    for needed in ("grpc.health.v1.Health/Check", "linkner.v1.LinkNER/llm", "`repeated bytes`", "-1",
                   "authorization", "traceparent", "linkner-deadline-ms", "UNAUTHENTICATED", "RESOURCE_EXHAUSTED"):
        if needed not in text:
            missing.append(needed)
    assert not missing, "docs/api.md does not mention: " + ", ".join(missing)


# ---------------------------------------------------------------- monitoring

def defined_metrics() -> dict[str, tuple[str, set[str]]]:
    """The metrics deployments/metrics.py defines: name -> (kind, tag keys)."""
    tree = ast.parse((ROOT / "deployments" / "metrics.py").read_text(encoding="utf-8"))
    found = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("Counter", "Gauge", "Histogram") and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            tags: set[str] = set()
            for keyword in node.keywords:
                if keyword.arg == "tag_keys" and isinstance(keyword.value, (ast.Tuple, ast.List)):
                    tags = {element.value for element in keyword.value.elts if isinstance(element, ast.Constant)}
            found[node.args[0].value] = (node.func.id, tags)
    return found


def scraped_series() -> dict[str, set[str]]:
    """What Prometheus scrapes from Ray for each defined metric: ``ray_`` in front, a histogram as
    ``_bucket`` / ``_sum`` / ``_count``, a counter with ``_total`` (added when its name lacks it);
    name -> the labels the series may carry."""
    series = {}
    for name, (kind, tags) in defined_metrics().items():
        base, labels = f"ray_{name}", tags | RAY_LABELS | TARGET_LABELS
        if kind == "Histogram":
            series[f"{base}_bucket"] = labels | {"le"}
            series[f"{base}_sum"] = labels
            series[f"{base}_count"] = labels
        elif kind == "Counter":
            series[base if base.endswith("_total") else f"{base}_total"] = labels
        else:
            series[base] = labels
    return series


PROMQL_WORDS = {
    # functions
    "rate", "irate", "increase", "delta", "idelta", "histogram_quantile", "sum", "avg", "min", "max", "count",
    "topk", "bottomk", "quantile", "stddev", "stdvar", "count_values", "group", "abs", "absent", "clamp_min",
    "clamp_max", "ceil", "floor", "round", "time", "vector", "scalar", "label_replace", "label_join",
    "avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "count_over_time", "changes", "resets",
    "deriv", "predict_linear", "sort", "sort_desc", "timestamp",
    # keywords and modifiers
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool",
    "inf", "nan",
}


def _clean(expression: str) -> str:
    """A Grafana expression as plain PromQL (its variables filled in)."""
    expression = expression.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    return re.sub(r"\$\{?\w+\}?", ".*", expression)


def promql_names(expression: str) -> tuple[set[str], list[tuple[str, set[str]]], set[str]]:
    """(metric names, [(metric, label names in its selector)], labels in by/without/on/ignoring/group_*)."""
    expression = _clean(expression)
    grouping: set[str] = set()
    for clause in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", expression):
        grouping |= {label.strip() for label in clause.split(",") if label.strip()}
    selectors = []
    for name, body in re.findall(r"([a-zA-Z_:][\w:]*)\s*\{([^}]*)\}", expression):
        selectors.append((name, set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", body))))
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # no string contents
    bare = re.sub(r"\{[^}]*\}", "", bare)  # no selectors' label matchers
    bare = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # no range durations
    names = {token for token in re.findall(r"[a-zA-Z_:][\w:]*", bare) if token not in PROMQL_WORDS}
    return names, selectors, grouping


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        match = re.match(r"label_values\((.+),\s*\w+\)$", query or "")
        if match:
            expressions.append(match.group(1))
    return expressions


def alert_rules() -> list[dict]:
    import yaml

    content = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in content["groups"] for rule in group["rules"]]


def test_dashboard_is_valid_json_with_panels():
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    titles = [panel["title"] for panel in dashboard["panels"]]
    assert len(titles) == len(set(titles)) and dashboard_expressions()
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(titles)


def test_alert_rules_are_valid_yaml():
    rules = alert_rules()
    assert rules and all({"alert", "expr", "labels", "annotations"} <= set(rule) for rule in rules)
    assert "LinkNERNotServing" in {rule["alert"] for rule in rules}


def test_dashboard_and_alerts_use_only_metrics_the_service_defines():
    assert defined_metrics(), "no metrics found in deployments/metrics.py"
    series = scraped_series()
    known_labels = set().union(*series.values())
    problems = []
    sources = [("dashboard", expression) for expression in dashboard_expressions()]
    sources += [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()]
    used = set()
    for where, expression in sources:
        names, selectors, grouping = promql_names(expression)
        used |= names
        for name in names - set(series) - EXTERNAL_METRICS:
            problems.append(f"{where}: {name} is not a metric the service exports (deployments/metrics.py)")
        for name, labels in selectors:
            allowed = series.get(name, TARGET_LABELS if name in EXTERNAL_METRICS else set())
            for label in labels - allowed:
                problems.append(f"{where}: {name} has no label {label!r}")
        for label in grouping - known_labels:
            problems.append(f"{where}: no metric has the label {label!r}")
    assert not problems, "\n".join(problems)
    assert used & set(series), "the dashboard and alerts use none of the service's metrics"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian: apt-get install --no-install-recommends prometheus)")
    return path


def test_promtool_accepts_the_alert_rules(promtool):
    checked = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([promtool, "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True,
                            timeout=120, cwd=MONITORING)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_parses_the_dashboard_queries(promtool, tmp_path):
    import yaml

    rules = [{"record": f"linkner:dashboard_query_{index}", "expr": _clean(expression)}
             for index, expression in enumerate(dashboard_expressions())]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
