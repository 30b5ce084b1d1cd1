"""The real CDK CLI, offline: cdk.json's app command, -c overrides (which arrive as strings), errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

NPX = shutil.which("npx")
pytestmark = pytest.mark.skipif(
    NPX is None or not (REPO / "node_modules" / ".bin" / "cdk").exists(),
    reason="make deps installs the CDK CLI",
)


def _cdk(*args: str, outdir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and not k.startswith("PYTEST_")}
    env["JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION"] = "20"
    env["AWS_EC2_METADATA_DISABLED"] = "true"  # no credential probing
    return subprocess.run(
        [str(NPX), "cdk", "synth", "--no-lookups", "--quiet", "-o", str(outdir), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_offline_synth_with_environment_and_key_override(tmp_path: Path) -> None:
    result = _cdk(
        "-c",
        "env=prod",
        "-c",
        "cluster.kubernetesVersion=1.34",
        "-c",
        "compute.systemNodegroup.maxSize=4",
        outdir=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    cluster = json.loads((tmp_path / "Cluster.template.json").read_text())
    (eks,) = [r for r in cluster["Resources"].values() if r["Type"] == "AWS::EKS::Cluster"]
    assert eks["Properties"]["Name"] == "llama-eks-prod"
    assert eks["Properties"]["Version"] == "1.34"
    system = [
        r
        for r in cluster["Resources"].values()
        if r["Type"] == "AWS::EKS::Nodegroup" and r["Properties"]["NodegroupName"] == "eks-mng"
    ]
    assert system[0]["Properties"]["ScalingConfig"]["MaxSize"] == 4
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["artifacts"]["Cluster"]["properties"]["stackName"] == "llama-eks-prod-cluster"
