"""The import arrows between the packages: stacks -> charts -> config, never back.

config/ is plain data and rules (no CDK), so charts and stacks can both depend on it; charts are cdk8s only
(unit-tested on their own), so they must not reach into the CDK stacks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

#: package -> top-level modules its code must not import.
FORBIDDEN = {
    "config": {"stacks", "charts", "aws_cdk", "cdk8s", "cdk8s_plus_30", "constructs", "app"},
    "charts": {"stacks", "aws_cdk", "app"},
    "stacks": {"app"},
}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of the modules ``path`` imports at run time (``if TYPE_CHECKING:`` blocks excluded)."""
    tree = ast.parse(path.read_text(), str(path))
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    names = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_arrows(package: str) -> None:
    wrong = {
        str(path.relative_to(REPO)): sorted(imported_modules(path) & FORBIDDEN[package])
        for path in sorted((REPO / package).rglob("*.py"))
    }
    assert {file: names for file, names in wrong.items() if names} == {}


def test_the_check_sees_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\nimport aws_cdk as cdk\nfrom stacks.platform import build_app\n"
        "if TYPE_CHECKING:\n    from charts import inference\n"
    )
    assert imported_modules(module) == {"typing", "aws_cdk", "stacks"}
