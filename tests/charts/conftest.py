"""Fixtures for the inference chart tests: every variant (manifests.VARIANTS) rendered once per session;
the validators, checkov and field-by-field tests all read the same renderings."""

from __future__ import annotations

import pytest

from tests.charts.manifests import PRODUCTION, VARIANTS, Manifests, config_of, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, Manifests]:
    """Every variant rendered once per session."""
    return {
        name: render(config_of(section, production=name in PRODUCTION)) for name, section in VARIANTS.items()
    }


@pytest.fixture(scope="session")
def default(rendered: dict[str, Manifests]) -> Manifests:
    return rendered["gpu-keda"]
