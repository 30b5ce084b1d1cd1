"""Snapshot of the rendered manifests (default GPU/KEDA service and the CPU/HPA variant).

A change here is reviewed as a diff (`pytest --snapshot-update` then `git diff`), never accepted blindly.
Inputs are fixed (image URI, config), so the rendering is deterministic.
"""

from __future__ import annotations

import pytest
import yaml

from tests.charts.manifests import Manifests


@pytest.mark.parametrize("variant", ["gpu-keda", "cpu"])
def test_rendered_manifests(rendered: dict[str, Manifests], variant: str, snapshot) -> None:
    assert yaml.safe_dump_all(rendered[variant], sort_keys=True) == snapshot
