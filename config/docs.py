"""The key tables of docs/configuration.md, generated from the configuration models.

    python -m config.docs           # rewrite the generated part of docs/configuration.md (`make docs`)
    python -m config.docs --check   # exit 1 when the page is stale (tests/config/test_docs.py does the same)

Every key of every section gets a row: its default (the value ``load_config({})`` resolves, or the rule
for defaults that depend on other keys), what is allowed and what it does. Nothing here is hand-written
twice: a key's row changes when its declaration does.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .app import AppConfig, load_config
from .errors import allowed_text
from .pipeline import DEPLOY_MODE_KEY, DeployMode, PipelineConfig, load_pipeline_config
from .versions import DEFAULT_KUBERNETES_VERSION, KUBERNETES_VERSIONS, RETIRED

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def _markers(block: str) -> tuple[str, str]:
    return (
        f"<!-- BEGIN generated: {block} (`make docs` writes it from config/: edit the models, not this) -->",
        f"<!-- END generated: {block} -->",
    )


def _literal(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_literal(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _literal(v) for k, v in value.items()}
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)  # e.g. a Taint: key=value:Effect


def _value(value: Any) -> str:
    return "`" + json.dumps(_literal(value)).replace("|", "\\|") + "`"


def _extra(field: FieldInfo, name: str) -> Any:
    extra = field.json_schema_extra
    return extra.get(name) if isinstance(extra, dict) else None


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _is_section(field: FieldInfo) -> bool:
    annotation = field.annotation
    members = getattr(annotation, "__args__", (annotation,))
    return any(isinstance(m, type) and issubclass(m, BaseModel) for m in members)


def _allowed(field: FieldInfo) -> str:
    text = allowed_text(field)
    nullable = type(None) in getattr(field.annotation, "__args__", ())
    return f"{text}, or null" if nullable and "null" not in text else text


def _table(path: str, model: BaseModel) -> tuple[list[str], list[tuple[str, BaseModel]]]:
    """The rows of ``model``'s own keys, and its sub-sections (documented in tables of their own)."""
    rows = ["| key | default | allowed | what it does |", "|---|---|---|---|"]
    subsections: list[tuple[str, BaseModel]] = []
    for name, field in type(model).model_fields.items():
        key = field.alias or name
        value = getattr(model, name)
        if _is_section(field):
            if isinstance(value, BaseModel):
                subsections.append((f"{path}.{key}", value))
                rows.append(f"| `{key}` | | see `{path}.{key}` | {_cell(field.description or '')} |")
            else:
                rows.append(f"| `{key}` | `null` | see `{path}.{key}` | {_cell(field.description or '')} |")
            continue
        if _extra(field, "defaultDoc"):
            default = _extra(field, "defaultDoc")
        elif field.is_required() and name in model.model_fields_set:
            default = "required"  # given in the documented example only
        else:
            default = _value(value)
        description = _cell(field.description or "")
        rows.append(f"| `{key}` | {_cell(default)} | {_cell(_allowed(field))} | {description} |")
    return rows, subsections


def _sections(path: str, model: BaseModel, level: int) -> Iterator[str]:
    rows, subsections = _table(path, model)
    doc = (type(model).__doc__ or "").strip().split("\n\n")[0]
    yield f"{'#' * level} `{path}`"
    yield ""
    if doc:
        yield " ".join(line.strip() for line in doc.splitlines()).replace("``", "`")
        yield ""
    yield from rows
    yield ""
    for sub_path, sub in subsections:
        yield from _sections(sub_path, sub, level + 1)


def _example_pipeline() -> PipelineConfig:
    """The pipeline section as documented: its defaults, with a source so the source's keys are listed."""
    return load_pipeline_config(
        {
            DEPLOY_MODE_KEY: DeployMode.PIPELINE.value,
            "pipeline": {
                "account": "111111111111",
                "source": {
                    "provider": "codecommit",
                    "repository": "llama-eks",
                    "sharedData": {"repository": "llama-eks-shared"},
                },
            },
        }
    )


def kubernetes_versions() -> str:
    """The supported Kubernetes versions with their kubectl layer and EKS support dates."""
    lines = [
        "| version | kubectl layer package (Helm) | end of standard support | end of extended support "
        "| nodes' AL2023 AMI release |",
        "|---|---|---|---|---|",
    ]
    for version, info in KUBERNETES_VERSIONS.items():
        label = f"**{version}** (default)" if version == DEFAULT_KUBERNETES_VERSION else version
        package = info.layer_module.replace("aws_cdk.", "aws-cdk.").replace("_", "-")
        lines.append(
            f"| {label} | {package} (Helm {info.helm_major}) | {info.end_of_standard_support.isoformat()} "
            f"| {info.end_of_extended_support.isoformat()} | {info.al2023_release} |"
        )
    retired = ", ".join(f"{v} (extended support ended {d.isoformat()})" for v, d in RETIRED.items())
    lines += ["", f"Refused, EKS no longer creates clusters on them: {retired}."]
    return "\n".join(lines) + "\n"


def keys() -> str:
    """Every key of every section, one table per section."""
    defaults = load_config({})
    env = AppConfig.model_fields["env_name"]
    production = AppConfig.model_fields["production"]
    lines = [
        "### Top-level keys",
        "",
        "| key | default | allowed | what it does |",
        "|---|---|---|---|",
        f"| `env` | {_value(env.default)} | a key of `environments` | {_cell(env.description or '')} |",
        f"| `production` | {_value(production.default)} | {_cell(_allowed(production))} "
        f"| {_cell(production.description or '')} |",
        f"| `{DEPLOY_MODE_KEY}` | {_value(DeployMode.DIRECT)} | one of {sorted(m.value for m in DeployMode)} "
        "| `direct`: `app.py` builds the stacks of one environment (a laptop `cdk deploy`); `pipeline`: only "
        "the delivery pipeline, which deploys every stage ([pipeline.md](pipeline.md)). |",
        "| `environments` | `{}` | environment name -> sections, deep-merged over the base sections "
        "| Per-environment values (only the keys that differ). |",
        f"| `tags` | {_value(AppConfig.model_fields['tags'].get_default(call_default_factory=True))} "
        f"| {_cell(allowed_text(AppConfig.model_fields['tags']))}; keys not starting with `aws:` "
        f"| {_cell(AppConfig.model_fields['tags'].description or '')} |",
        "",
    ]
    fields = {field.alias or name: name for name, field in AppConfig.model_fields.items()}
    for key in ("aws", "network", "cluster", "compute", "addons", "inference", "chatUi"):
        lines += list(_sections(key, getattr(defaults, fields[key]), 3))
    lines += list(_sections("pipeline", _example_pipeline(), 3))
    return "\n".join(lines).rstrip() + "\n"


#: The generated blocks of the page, by name.
BLOCKS = {"kubernetes-versions": kubernetes_versions, "keys": keys}


def render(page: str) -> str:
    """``page`` with each generated block replaced by its current content."""
    for name, generate in BLOCKS.items():
        begin, end = _markers(name)
        head, rest = page.split(begin, 1)
        _, tail = rest.split(end, 1)
        page = f"{head}{begin}\n\n{generate()}\n{end}{tail}"
    return page


def main(argv: list[str]) -> int:
    page = DOC.read_text()
    fresh = render(page)
    if "--check" in argv:
        if fresh != page:
            print(f"{DOC} is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
