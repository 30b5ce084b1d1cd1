"""docs/configuration.md's key tables are generated from the models: the page is fresh and complete."""

from __future__ import annotations

from collections.abc import Iterator

from pydantic import BaseModel

from config import AppConfig, PipelineConfig
from config.docs import DOC, keys, render
from config.pipeline import SharedDataConfig, SmokeTestConfig, SourceConfig


def test_page_is_fresh() -> None:
    page = DOC.read_text()
    assert render(page) == page, "docs/configuration.md is stale: run `make docs`"


def _sections(path: str, model: type[BaseModel]) -> Iterator[tuple[str, type[BaseModel]]]:
    yield path, model
    for name, field in model.model_fields.items():
        key = field.alias or name
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            yield from _sections(f"{path}.{key}", sub)


def test_every_key_of_every_section_has_a_row() -> None:
    tables = keys()
    sections = [
        s
        for name in ("aws", "network", "cluster", "compute", "addons", "inference")
        for s in _sections(name, AppConfig.model_fields[name].annotation)
    ]  # type: ignore[arg-type]
    sections += [
        ("pipeline", PipelineConfig),
        ("pipeline.source", SourceConfig),
        ("pipeline.source.sharedData", SharedDataConfig),
        ("pipeline.smokeTest", SmokeTestConfig),
    ]
    assert len(sections) >= 20
    for path, model in sections:
        heading = f" `{path}`\n"
        assert heading in tables, f"no table for {path}"
        table = tables.split(heading, 1)[1].split("\n#", 1)[0]
        for name, field in model.model_fields.items():
            assert f"\n| `{field.alias or name}` |" in table, f"{path}.{field.alias or name} has no row"


def test_defaults_in_the_tables_are_the_loaded_ones() -> None:
    tables = keys()
    assert '| `gpuCapacity` | `"karpenter"` |' in tables
    assert "| `maxSize` | `3` |" in tables and "| `maxSize` | `2` |" in tables  # system / GPU nodegroup
    assert '| `taints` | `["nvidia.com/gpu=true:NoSchedule"]` |' in tables
    for key in ("`deployMode`", "`env`", "`environments`", "`tags`"):
        assert f"| {key} |" in tables
