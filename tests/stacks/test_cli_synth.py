"""The real CDK CLI, offline: cdk.json's app command and -c overrides (which arrive as strings).

The CLI run (~30 s: a fresh node + Python + jsii) is started in the background when the session collects
this test (tests/stacks/conftest.py), so it overlaps the in-process tests; the test only waits for it.
"""

from __future__ import annotations

import json

import pytest

from tests.stacks.conftest import ADMIN, CLI_ARGS, CLI_RUN_KEY, CliRun


def test_offline_synth_with_environment_and_key_override(cli_synth: CliRun) -> None:
    returncode, stderr = cli_synth.wait()
    assert returncode == 0, stderr[-3000:]
    assert (
        "-c",
        "env=prod",
        "-c",
        f"cluster.adminPrincipalArns={ADMIN}",
        "-c",
        "cluster.kubernetesVersion=1.34",
        "-c",
        "compute.systemNodegroup.maxSize=4",
    ) == CLI_ARGS
    cluster = json.loads((cli_synth.outdir / "Cluster.template.json").read_text())
    (eks,) = [r for r in cluster["Resources"].values() if r["Type"] == "AWS::EKS::Cluster"]
    assert eks["Properties"]["Name"] == "llama-eks-prod"
    assert eks["Properties"]["Version"] == "1.34"
    # production (cdk.json's prod): private API endpoint, the configured admin's access entry
    assert eks["Properties"]["ResourcesVpcConfig"]["EndpointPublicAccess"] is False
    entries = [r for r in cluster["Resources"].values() if r["Type"] == "AWS::EKS::AccessEntry"]
    assert [
        e["Properties"]["PrincipalArn"] for e in entries if isinstance(e["Properties"]["PrincipalArn"], str)
    ] == [ADMIN]
    system = [
        r
        for r in cluster["Resources"].values()
        if r["Type"] == "AWS::EKS::Nodegroup" and r["Properties"]["NodegroupName"] == "eks-mng"
    ]
    assert system[0]["Properties"]["ScalingConfig"]["MaxSize"] == 4
    manifest = json.loads((cli_synth.outdir / "manifest.json").read_text())
    assert manifest["artifacts"]["Cluster"]["properties"]["stackName"] == "llama-eks-prod-cluster"


@pytest.fixture
def cli_synth(request: pytest.FixtureRequest) -> CliRun:
    run: CliRun | None = request.config.stash.get(CLI_RUN_KEY, None)
    if run is None:
        pytest.skip("the CDK CLI is not installed (make deps installs it)")
    return run
