"""Add-on fixtures. The default app comes from the shared session fixture ``synthesized`` (tests/conftest.py);
the nodegroup/AMP alternative is synthesized once more here, per session."""

from __future__ import annotations

import pytest

from tests.conftest import Synthesized, synth_app

#: The alternative configuration: GPU managed nodegroup, no Karpenter, metrics in Amazon Managed Prometheus.
ALTERNATIVE = {
    "compute.gpuCapacity": "nodegroup",
    "addons.karpenter.enabled": False,
    "addons.metrics.backend": "amp",
    "addons.metrics.grafana": False,
}


@pytest.fixture(scope="session")
def alternative(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synth_app(tmp_path_factory.mktemp("cdk.out.alt"), ALTERNATIVE)
