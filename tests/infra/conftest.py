"""Fixtures of the foundation's infra tests (the default app is the session fixture in tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.conftest import Synthesized, synth_app

ADMIN = "arn:aws:iam::111111111111:role/platform-admin"
BREAK_GLASS = "arn:aws:iam::111111111111:role/ops/break-glass"

#: The second configuration: everything the default does not exercise, in one more synth.
VARIANT = {
    "env": "prod",
    "cluster.endpointAccess": "private",
    "cluster.adminRoleArns": f"{ADMIN},{BREAK_GLASS}",
    "cluster.kubernetesVersion": "1.31",
    "cluster.logging": "api,audit",
    # GPU capacity from the managed nodegroup (seed ch5), whatever the default is.
    "compute.gpuCapacity": "nodegroup",
    "compute.systemNodegroup.amiType": "BOTTLEROCKET_X86_64",
}


@pytest.fixture(scope="session")
def variant(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """Prod, private endpoint, admin roles, Kubernetes 1.31, GPU nodegroup, Bottlerocket system nodes."""
    return synth_app(tmp_path_factory.mktemp("variant"), VARIANT)
