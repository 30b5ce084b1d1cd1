"""Add-on fixtures. The default app (``synthesized``) and the nodegroup/AMP alternative
(``alternative``, :data:`tests.conftest.ALTERNATIVE`) are session fixtures of tests/conftest.py, shared
with tests/helm; env=prod with Karpenter (``prod``) is synthesized once more here, per session."""

from __future__ import annotations

import pytest

from tests.conftest import Synthesized, synth_app

#: env=prod as shipped (cdk.json), plus what prod requires of the user (an admin principal).
PROD = {"env": "prod", "cluster.adminPrincipalArns": "arn:aws:iam::111111111111:role/platform-admin"}


@pytest.fixture(scope="session")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """env=prod with Karpenter (its default GPU capacity): the add-ons' safe production defaults."""
    return synth_app(tmp_path_factory.mktemp("cdk.out.prod"), PROD)
