"""imports/ is exactly what `tools/import_crds.sh` generates from ../shared/crds (byte-stable re-import)."""

from __future__ import annotations

import filecmp
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node (make deps installs cdk8s-cli)")
def test_reimport_is_byte_identical(tmp_path):
    assert (REPO / "node_modules/.bin/cdk8s").exists(), "run `make deps` first (npm ci installs cdk8s-cli)"
    subprocess.run(
        [str(REPO / "tools/import_crds.sh"), str(tmp_path)], check=True, capture_output=True, timeout=600
    )
    fresh, committed = _tree(tmp_path), _tree(REPO / "imports")
    assert sorted(fresh) == sorted(committed)
    changed = [name for name in fresh if fresh[name] != committed[name]]
    assert changed == [], f"imports/ is stale; run `make import-crds` and review the diff: {changed}"
    assert not filecmp.dircmp(tmp_path, REPO / "imports").diff_files


def test_generated_modules_expose_the_crd_kinds():
    from imports.aws.k8s import karpenter as karpenter_aws
    from imports.com.coreos import monitoring
    from imports.io.k8s import autoscaling
    from imports.sh import karpenter, keda

    assert karpenter.NodePool.GVK.api_version == "karpenter.sh/v1"
    assert karpenter.NodeClaim.GVK.kind == "NodeClaim"
    assert karpenter_aws.Ec2NodeClass.GVK.api_version == "karpenter.k8s.aws/v1"
    assert keda.ScaledObject.GVK.api_version == "keda.sh/v1alpha1"
    assert keda.TriggerAuthentication.GVK.kind == "TriggerAuthentication"
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert getattr(monitoring, kind).GVK.api_version == "monitoring.coreos.com/v1"
    assert autoscaling.VerticalPodAutoscaler.GVK.api_version == "autoscaling.k8s.io/v1"
