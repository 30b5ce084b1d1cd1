"""Normalized JSON snapshot of the AddonsStack (default config). A diff is a reviewed change:
``pytest tests/stacks/addons/test_addons_snapshot.py --snapshot-update``, then read the diff before
committing."""

from __future__ import annotations

from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from tests.conftest import Synthesized
from tests.helpers.cfn import normalize_template


def test_addons_stack_snapshot(synthesized: Synthesized, snapshot: SnapshotAssertion) -> None:
    assert normalize_template(synthesized.template("Addons")) == snapshot.use_extension(JSONSnapshotExtension)
