"""Shared infrastructure fixtures: the whole CDK app, synthesized ONCE per test session.

The App gets the real ``cdk.json`` context (a bare ``cdk.App()`` ignores cdk.json and would silently
use dummy AZs), an explicit test account, a fixed "today" and cdk-nag registered, so one synth yields
templates, annotations and the validation report. Stack tests read templates from it; tests that need
another configuration call :func:`synth_app` with overrides (one more synth, use sparingly).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cfn import (
    NO_FAIL_CONTEXT,
    Acknowledgement,
    Finding,
    acknowledgements,
    add_nag_plugins,
    validation_findings,
)

REPO = Path(__file__).resolve().parent.parent
TEST_ACCOUNT = "111111111111"
TEST_REGION = "us-west-2"
#: "Today" for every synth in tests: Kubernetes support warnings must not depend on the calendar.
TEST_TODAY = datetime.date(2026, 11, 23)


def cdk_json_context() -> dict[str, Any]:
    return json.loads((REPO / "cdk.json").read_text())["context"]


@dataclass
class Synthesized:
    """One synthesized app: its config, stacks, cloud assembly, templates and validation findings."""

    config: Any
    stacks: Any
    outdir: Path
    assembly: Any
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    acknowledgements: list[Acknowledgement] = field(default_factory=list)

    def template(self, stack_id: str) -> dict[str, Any]:
        """Template of the stack with construct id ``stack_id`` ("Network", "Cluster", ...)."""
        return self.templates[stack_id]

    def messages(self, stack_id: str) -> list[tuple[str, Any]]:
        """(level, text) of the annotations of one stack's artifact."""
        artifact = next(s for s in self.assembly.stacks if s.hierarchical_id == stack_id)
        return [(str(m.level), m.entry.data) for m in artifact.messages]


def synth_app(
    outdir: Path,
    overrides: dict[str, Any] | None = None,
    *,
    nag: bool = True,
    today: datetime.date = TEST_TODAY,
) -> Synthesized:
    """Build and synthesize the app with cdk.json context plus ``overrides`` (dotted keys, like ``-c``)."""
    import aws_cdk as cdk

    from config import load_config
    from stacks.platform import build_app

    context = {
        **cdk_json_context(),
        "aws.account": TEST_ACCOUNT,
        "aws.region": TEST_REGION,
        **NO_FAIL_CONTEXT,
    }
    context.update(overrides or {})
    app = cdk.App(context=context, outdir=str(outdir))
    config = load_config(app.node.get_all_context())
    stacks = build_app(app, config, today=today)
    if nag:
        add_nag_plugins(app)
    assembly = app.synth()
    templates = {s.hierarchical_id: s.template for s in assembly.stacks}
    return Synthesized(
        config=config,
        stacks=stacks,
        outdir=outdir,
        assembly=assembly,
        templates=templates,
        findings=validation_findings(assembly.directory),
        acknowledgements=acknowledgements(assembly.directory),
    )


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The default app (cdk.json, env dev), synthesized once with cdk-nag."""
    return synth_app(tmp_path_factory.mktemp("cdk.out"))


ADMIN = "arn:aws:iam::111111111111:role/platform-admin"
BREAK_GLASS = "arn:aws:iam::111111111111:role/ops/break-glass"
#: An IAM Identity Center permission set's role, path included (as `aws iam get-role` prints it).
SSO_ADMIN = (
    "arn:aws:iam::111111111111:role/aws-reserved/sso.amazonaws.com/us-west-2/"
    "AWSReservedSSO_AdministratorAccess_0123456789abcdef"
)
USER_ADMIN = "arn:aws:iam::111111111111:user/alice"
ADMINS = (ADMIN, BREAK_GLASS, SSO_ADMIN, USER_ADMIN)

#: The second configuration: everything the default does not exercise, in one more synth (tests/infra,
#: tests/helm).
VARIANT = {
    "env": "prod",  # production: the API endpoint is private by default
    "cluster.adminPrincipalArns": ",".join(ADMINS),
    # people on the corporate VPN reach the private endpoint
    "cluster.privateAccessCidrs": "172.16.0.0/12",
    # In extended support on TEST_TODAY: the support warning.
    "cluster.kubernetesVersion": "1.32",
    "cluster.logging": "api,audit",
    # GPU capacity from the managed nodegroup (seed ch5), whatever the default is; one node per replica
    # of env=prod's two (no spare node: pods are replaced in place during a rollout).
    "compute.gpuCapacity": "nodegroup",
    "compute.gpuNodegroup.desiredSize": 2,
    "compute.systemNodegroup.amiType": "BOTTLEROCKET_X86_64",
    # Karpenter in its own namespace: release, service account and Pod Identity follow (tests/helm).
    "addons.karpenter.namespace": "karpenter",
}

#: The GPU-nodegroup alternative to the Karpenter default (seed ch5): managed GPU nodegroup, Karpenter
#: off, metrics in Amazon Managed Prometheus, no VPA add-on (so no VPA) (the other add-on switches, in the
#: same synth).
ALTERNATIVE = {
    "compute.gpuCapacity": "nodegroup",
    "addons.karpenter.enabled": False,
    "addons.metrics.backend": "amp",
    "addons.vpa.enabled": False,
}


@pytest.fixture(scope="session")
def variant(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """Prod (private endpoint), admin principals, Kubernetes 1.32, GPU nodegroup, Bottlerocket system nodes,
    Karpenter in namespace ``karpenter``."""
    return synth_app(tmp_path_factory.mktemp("variant"), VARIANT)


@pytest.fixture(scope="session")
def alternative(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The nodegroup/AMP alternative (:data:`ALTERNATIVE`)."""
    return synth_app(tmp_path_factory.mktemp("cdk.out.alternative"), ALTERNATIVE)
