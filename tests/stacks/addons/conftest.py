"""Add-on fixtures. The default app is the session fixture ``synthesized`` (tests/conftest.py); the
nodegroup/AMP alternative is synthesized once more here, per session."""

from __future__ import annotations

import pytest

from tests.conftest import Synthesized, synth_app

#: The GPU-nodegroup alternative to the Karpenter default (seed ch5): managed GPU nodegroup, Karpenter
#: off, metrics in Amazon Managed Prometheus (the other add-on switches, in the same synth).
ALTERNATIVE = {
    "compute.gpuCapacity": "nodegroup",
    "addons.karpenter.enabled": False,
    "addons.metrics.backend": "amp",
}


@pytest.fixture(scope="session")
def alternative(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synth_app(tmp_path_factory.mktemp("cdk.out.alternative"), ALTERNATIVE)


#: env=prod as shipped (cdk.json), plus what prod requires of the user (an admin principal).
PROD = {"env": "prod", "cluster.adminRoleArns": "arn:aws:iam::111111111111:role/platform-admin"}


@pytest.fixture(scope="session")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """env=prod with Karpenter (its default GPU capacity): the add-ons' safe production defaults."""
    return synth_app(tmp_path_factory.mktemp("cdk.out.prod"), PROD)
