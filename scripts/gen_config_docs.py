#!/usr/bin/env python
"""Write docs/configuration.md from the pydantic models of the application's args.

    .venv/bin/python scripts/gen_config_docs.py           # rewrite docs/configuration.md
    .venv/bin/python scripts/gen_config_docs.py --check   # exit 1 when the committed file is stale

The page is a hand-written introduction (``INTRO`` below) followed by one table per section of
:class:`linkner.service.config.AppConfig`, found by walking the models: every field of every nested
model, with its type (constraints included), its default, its description, and the value that
``serve_config.yaml`` and ``serve_config.gpu.yaml`` ship where it differs from the default. A field
added to a model shows up here on the next run; ``tests/project/test_docs.py`` fails while the committed
page differs from what this script writes.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUTPUT = ROOT / "docs" / "configuration.md"
SHIPPED = {"serve_config.yaml": ROOT / "serve_config.yaml", "serve_config.gpu.yaml": ROOT / "serve_config.gpu.yaml"}
COMMAND = ".venv/bin/python scripts/gen_config_docs.py"

# Descriptions for fields whose model declares none (keyed "ModelClass.field"); a field's own
# `description=` always wins, so a description added in the code replaces the one here.
FALLBACK_DESCRIPTIONS = {
    "NERConfig.checkpoint": "the trained checkpoint folder the local model loads (`linkner prepare` trains the "
                            "default one when it is missing)",
    "NERConfig.device": "torch device of the local model: auto (a GPU when there is one), cpu, cuda, cuda:1, ...",
    "NERConfig.mc_samples": "dropout passes of the span head for the mc_dropout estimator",
    "LLMPoolConfig.enabled": "false serves the local model alone: no LLM pool, nothing is routed",
    "LLMConfig.backend": "vllm (in-process engine), transformers (no vLLM needed) or openai (any "
                         "OpenAI-compatible server at base_url)",
    "LLMConfig.mode": "how the LLM answers: letter (one decode step over the option letters), choice (constrained "
                      "greedy choice of the option names), label (each option name scored)",
    "LLMConfig.definitions": "label definitions for the prompt, label -> text (CoNLL-2003's four are built in)",
    "LLMConfig.max_model_len": "vllm: context length of the engine",
    "LLMConfig.cpu_kv_cache_gib": "vllm on CPU: KV cache size in GiB",
    "LLMConfig.gpu_memory_utilization": "vllm on GPU: share of the GPU's memory the engine may take",
    "LLMConfig.threads": "transformers: torch threads",
    "LLMConfig.device": "transformers: torch device",
    "LLMConfig.base_url": "openai: the server's base URL, e.g. http://HOST:8000/v1",
    "LLMConfig.api_key_env": "openai: environment variable that holds the API key",
    "LLMConfig.constrained": "openai: ask the server for a constrained choice (vLLM's structured outputs); false "
                             "matches the free answer to an option strictly (no match: an error answer)",
    "LLMConfig.request_timeout_s": "openai: timeout of one HTTP request",
    "LLMConfig.max_retries": "openai: retries on connection errors, 429 and 5xx, with backoff",
    "DemonstrationsConfig.kind": "none; random (k examples per label); retrieved (the k training entities nearest "
                                 "to the span by the local encoder's span embedding)",
    "DemonstrationsConfig.k": "examples per span (random: per label)",
    "DemonstrationsConfig.seed": "seed of the random draw",
    "DetectionPolicy.kind": "threshold, budget, calibrated or none",
    "DetectionPolicy.estimator": "uncertainty estimator that ranks the spans: confidence, entropy, mc_dropout, "
                                 "evidential, learned",
    "DetectionPolicy.calibration": "written into the checkpoint by `linkner link-eval --save-calibration` (or "
                                   "`linkner prepare`) and applied by the service; not set by hand",
    "TelemetryConfig.exporter": "where spans go: none, console, otlp (a collector at otlp_endpoint), jsonl "
                                "(a file at jsonl_path)",
    "TelemetryConfig.otlp_protocol": "grpc or http/protobuf",
    "TelemetryConfig.service_name": "service.name of every span",
    "TelemetryConfig.resource_attributes": "extra resource attributes of every span",
    "TelemetryConfig.sampler_ratio": "sampling ratio of the ratio-based samplers",
    "ServiceLimits.max_word_chars": "longest word accepted (pre-tokenized words)",
    "ServiceLimits.max_batch_items": "most items in one RecognizeBatch or RecognizeStream call",
}

# Hand-written notes shown under a section's heading, after the model's docstring.
SECTION_NOTES = {
    "server": "See [operations.md](operations.md#tls-and-tokens) for TLS and tokens. The token itself "
              "is best given as the `LINKNER_AUTH_TOKEN` environment variable of the replicas.",
    "router.limits": "Requests over a limit are refused with `INVALID_ARGUMENT` and a message naming the "
                     "limit ([api.md](api.md#limits)).",
}

# Models shown as one row instead of a section of their own: values the tools write, not settings.
OPAQUE_MODELS = {"Calibration", "CalibrationKey"}


# ---------------------------------------------------------------- walking the models

def _is_model(kind: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _nested_model(annotation: Any) -> type | None:
    """The model a field holds (``Model`` or ``Model | None``), or None for a plain value."""
    if _is_model(annotation):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [arg for arg in typing.get_args(annotation) if _is_model(arg)]
        if len(models) == 1:
            return models[0]
    return None


def _declared_default(field: Any) -> Any:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        return field.default_factory()
    return None if field.default is PydanticUndefined else field.default


def _overrides(field: Any, model: type) -> dict[str, Any]:
    """Values a parent's default factory sets on a nested model that differ from the model's own
    defaults (a default factory that sets fields of the nested model)."""
    if field.default_factory is None or field.default_factory is model:
        return {}
    try:
        made, plain = field.default_factory(), model()
    except Exception:  # noqa: BLE001 (a model that cannot be built without arguments)
        return {}
    if not isinstance(made, model):
        return {}
    return {name: getattr(made, name) for name in model.model_fields if getattr(made, name) != getattr(plain, name)}


class Row(typing.NamedTuple):
    path: str
    kind: str
    default: Any
    description: str


class Section(typing.NamedTuple):
    path: str
    model: type
    rows: list[Row]


def walk(model: type, path: str = "", overrides: dict[str, Any] | None = None) -> Iterator[Section]:
    """Depth first: this model's fields as a section, then a section for each nested model."""
    overrides = overrides or {}
    rows, nested = [], []
    for name, field in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        inner = _nested_model(field.annotation)
        if inner is not None and inner.__name__ not in OPAQUE_MODELS:
            nested.append((key, inner, _overrides(field, inner)))
            continue
        default = overrides[name] if name in overrides else _declared_default(field)
        description = field.description or FALLBACK_DESCRIPTIONS.get(f"{model.__name__}.{name}", "")
        rows.append(Row(key, type_text(field.annotation, field.metadata), default, description))
    if path:
        yield Section(path, model, rows)
    for key, inner, inner_overrides in nested:
        yield from walk(inner, key, inner_overrides)


# ---------------------------------------------------------------- rendering values and types

def _constraints(metadata: list[Any]) -> str:
    signs = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "length >=", "max_length": "length <="}
    parts = []
    for item in metadata:
        for attribute, sign in signs.items():
            value = getattr(item, attribute, None)
            if value is not None:
                parts.append(f"{sign} {value}")
    return ", ".join(parts)


def _base_type(annotation: Any) -> str:
    names = {str: "string", int: "int", float: "float", bool: "bool", type(None): "null"}
    if annotation in names:
        return names[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(json.dumps(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_base_type(arg) for arg in args)
    if origin is typing.Annotated:
        return _base_type(args[0])
    if origin is dict:
        return f"map {_base_type(args[0])} → {_base_type(args[1])}" if args else "map"
    if origin in (list, tuple, set, frozenset):
        return f"list of {_base_type(args[0])}" if args else "list"
    if _is_model(annotation):
        return f"object ({annotation.__name__})"
    if annotation is typing.Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def type_text(annotation: Any, metadata: list[Any]) -> str:
    text = _base_type(annotation)
    constraints = _constraints(metadata)
    return f"{text} ({constraints})" if constraints else text


def _relative(value: str) -> str:
    root = str(ROOT) + "/"
    return value[len(root):] if value.startswith(root) else value


def value_text(value: Any) -> str:
    """A value as it is written in the YAML config."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _relative(value) if value else '""'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {value_text(item)}" for key, item in value.items()) + "}" if value else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(item) for item in value) + "]"
    return str(value)


def _docstring(model: type) -> str:
    """A model's docstring as one Markdown paragraph: reST literals as code, cross-references to
    Python functions left out (they mean nothing to a user)."""
    import re

    text = " ".join((model.__doc__ or "").split())
    text = re.sub(r"\s*\(:\w+:`[^`]+`\)", "", text)
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------- the shipped config files

def shipped_args() -> dict[str, dict[str, Any]]:
    """The LinkNER application's args in each shipped config file."""
    import yaml

    found = {}
    for name, path in SHIPPED.items():
        if path.is_file():
            config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            applications = config.get("applications") or [{}]
            found[name] = applications[0].get("args") or {}
    return found


_MISSING = object()


def _lookup(args: dict[str, Any], path: str) -> Any:
    value: Any = args
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _same(shipped: Any, default: Any) -> bool:
    from pydantic import BaseModel

    if isinstance(default, BaseModel):
        default = default.model_dump(mode="json")
    if isinstance(default, str):
        default = _relative(default)
    return shipped == default


# Keys the `ner.placement` description covers without saying so in their own description.
PLACEMENT: dict[str, str] = {}


def _placement(row: Row) -> str:
    """``embedded`` or ``pool`` where the key applies to that ``ner.placement`` only: its description
    starts with the placement's name (``embedded: ...``), or :data:`PLACEMENT` says so."""
    if row.path in PLACEMENT:
        return PLACEMENT[row.path]
    text = row.description.lower()
    if "embedded:" in text and "pool:" in text:  # describes both (ner.placement itself)
        return ""
    first = text.split(":", 1)[0].split(",")[0].strip() if ":" in text else ""
    return first if first in ("embedded", "pool") else ""


# ---------------------------------------------------------------- the page

INTRO = """\
# Configuration

<!-- Generated by scripts/gen_config_docs.py from the pydantic models; edit the models (or the
     script's introduction), then run `.venv/bin/python scripts/gen_config_docs.py`. -->

LinkNER Serve is configured by one Ray Serve config file. `serve_config.yaml` (CPU) and
`serve_config.gpu.yaml` (GPU) are the two that ship; copy one and change what you need.

```yaml
proxy_location: Disabled          # Ray Serve's own proxies: not needed, the ingress replicas serve gRPC themselves
applications:
  - name: linkner
    route_prefix: /linkner
    import_path: serve.app:build_app
    logging_config: {enable_access_log: false}
    args:                         # LinkNER's AppConfig: the rest of this page
      server: {...}               # the gRPC port callers dial, TLS, token
      ner: {...}                  # the local model
      llm_pool: {...}             # the LLM
      router: {...}               # routing policy, limits, the ingress replicas
      telemetry: {...}            # traces, metrics port
```

- `proxy_location`, `http_options`, `grpc_options`, `runtime_env` and the application's `name`,
  `route_prefix`, `import_path` and `logging_config` are Ray Serve's; see Ray Serve's config-file
  reference. Callers reach the ingress replicas' own gRPC server (`server`), so Ray's proxies stay
  off (`proxy_location: Disabled`).
- `applications[0].args` is validated by `serve.app:build_app` against the models on this page.
  An unknown key, a wrong type or a value out of range stops the deployment with
  `invalid LinkNER application args:` and pydantic's list of what is wrong.
- Relative paths (`ner.checkpoint`, `llm_pool.llm.model`, `router.demonstrations.train`,
  `telemetry.jsonl_path`, `server.tls_*`, `server.auth_token_file`) are relative to the project
  root, wherever the replicas start.
- The standard OpenTelemetry environment variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
  `OTEL_TRACES_EXPORTER`, `OTEL_SERVICE_NAME`, ...), where set in the process that builds the
  application (`serve run`, `serve deploy`'s controller, `python -m serve`), win over `telemetry`.
  `LINKNER_AUTH_TOKEN` in the replicas' environment wins over `server.auth_token_file`.
- `ner.placement` decides which `ner` keys apply: `embedded` (each ingress replica runs the model)
  or `pool` (NER replicas of their own). The **placement** column marks keys that apply to one of
  them only.
- After changing the LLM, its answer mode or options, the demonstrations, the estimator or the
  checkpoint, recalibrate: `linkner prepare --config FILE` (or `linkner link-eval --config FILE
  --data DEV --dev DEV --save-calibration`). Until then the stored calibration is stale and
  `router.policy` applies.

Columns: **default** is the value when the key is left out; **serve_config.yaml** and
**serve_config.gpu.yaml** show what those files set, only where it differs from the default.
"""


def render() -> str:
    from linkner.service.config import AppConfig

    shipped = shipped_args()
    lines = [INTRO]
    top = [f"[`{key}`](#{key.replace('.', '')})" for key, field in AppConfig.model_fields.items()]
    lines.append("Sections: " + ", ".join(top) + ".\n")
    for section in walk(AppConfig):
        depth = section.path.count(".")
        lines.append(f"{'#' * min(2 + depth, 4)} {section.path}\n")
        doc = _docstring(section.model)
        if doc:
            lines.append(f"{_cell(doc)}\n")
        if section.path in SECTION_NOTES:
            lines.append(f"{SECTION_NOTES[section.path]}\n")
        if not section.rows:
            continue
        files = [name for name in shipped
                 if any(not _same(v, row.default) for row in section.rows
                        if (v := _lookup(shipped[name], row.path)) is not _MISSING)]
        placements = [_placement(row) for row in section.rows]
        header = ["key", "type", "default"] + files + (["placement"] if any(placements) else []) + ["description"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for row, placement in zip(section.rows, placements):
            cells = [f"`{row.path}`", _cell(row.kind), f"`{_cell(value_text(row.default))}`"]
            for name in files:
                value = _lookup(shipped[name], row.path)
                cells.append("" if value is _MISSING or _same(value, row.default)
                             else f"`{_cell(value_text(value))}`")
            if any(placements):
                cells.append(placement)
            cells.append(_cell(row.description))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/configuration.md is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else ""
        if current != text:
            print(f"{args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output} is stale: "
                  f"run `{COMMAND}` and commit the result", file=sys.stderr)
            return 1
        print(f"{args.output.name} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
