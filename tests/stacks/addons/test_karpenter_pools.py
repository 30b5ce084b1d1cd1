"""Karpenter's NodePools as deployed in env=dev and env=prod: the pinned AMI checked at deploy time and a
GPU NodePool that serving survives (no voluntary disruption of busy nodes, one node at a time, prod on
on-demand capacity without expiry)."""

from __future__ import annotations

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from config.versions import al2023_ami_parameter
from stacks.addons.karpenter import PinnedAmis
from tests.stacks.addons._cfn import manifests

SSM_AMI = "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"


def _docs(app) -> dict[str, dict]:
    return {
        f"{d['kind']}/{d['metadata']['name']}": d
        for docs in manifests(app.template("Addons")).values()
        for d in docs
    }


@pytest.mark.parametrize("env", ["synthesized", "prod"])
def test_the_pinned_ami_release_is_resolved_before_anything_is_deployed(request, env):
    app = request.getfixturevalue(env)
    template = app.template("Addons")
    karpenter, cluster = app.config.addons.karpenter, app.config.cluster
    params = {k: v for k, v in template["Parameters"].items() if v["Type"] == SSM_AMI}
    expected = (
        f"/aws/service/eks/optimized-ami/{cluster.kubernetes_version}/amazon-linux-2023/x86_64/nvidia/"
        f"amazon-eks-node-al2023-x86_64-nvidia-{cluster.kubernetes_version}-v20260828/image_id"
    )
    assert [p["Default"] for p in params.values()] == [expected]
    (param_id,) = params
    assert param_id.startswith("KarpenterAmisGpuAmi")
    # The output shows the AMI id the pin resolved to (and makes the parameter used).
    outputs = [o for o in template["Outputs"].values() if o["Value"] == {"Ref": param_id}]
    assert len(outputs) == 1
    # Karpenter resolves its alias through exactly that parameter: same release, same Kubernetes version.
    node_class = _docs(app)["EC2NodeClass/default"]["spec"]
    assert node_class["amiSelectorTerms"] == [{"alias": f"al2023@{karpenter.ami_version}"}]
    release = karpenter.ami_version
    assert expected == al2023_ami_parameter(cluster.kubernetes_version, "x86_64", "nvidia", release)


def test_every_image_the_pools_use_is_checked():
    stack = cdk.Stack(cdk.App(), "S")
    PinnedAmis(stack, "Amis", kubernetes_version="1.34", release="latest", general=True)
    template = Template.from_stack(stack).to_json()
    defaults = sorted(p["Default"] for p in template["Parameters"].values() if p["Type"] == SSM_AMI)
    assert defaults == [
        "/aws/service/eks/optimized-ami/1.34/amazon-linux-2023/x86_64/nvidia/recommended/image_id",
        "/aws/service/eks/optimized-ami/1.34/amazon-linux-2023/x86_64/standard/recommended/image_id",
    ]
    assert len(template["Outputs"]) == 2


@pytest.mark.parametrize(
    ("env", "capacity", "expire"),
    [("synthesized", ["spot", "on-demand"], "720h"), ("prod", ["on-demand"], "Never")],
)
def test_the_gpu_pool_never_voluntarily_takes_a_busy_or_the_last_serving_node(request, env, capacity, expire):
    app = request.getfixturevalue(env)
    pool = _docs(app)["NodePool/eks-gpu-np"]["spec"]
    template = pool["template"]["spec"]
    requirements = {r["key"]: r["values"] for r in template["requirements"]}
    assert requirements["karpenter.sh/capacity-type"] == capacity
    assert pool["disruption"] == {
        # Only nodes without pods are consolidated: a serving GPU node is never replaced to save money.
        "consolidationPolicy": "WhenEmpty",
        "consolidateAfter": "5m",
        # One node at a time for drift and emptiness: with two serving replicas on two nodes one stays.
        "budgets": [{"nodes": "1"}, {"nodes": "1", "reasons": ["Drifted"]}],
    }
    # Expiry ignores budgets: prod leaves node replacement to drift (a new pinned AMI), which obeys them.
    assert template["expireAfter"] == expire
    # A draining node waits for its pods (PDBs honoured) for up to an hour, far beyond the pod's own grace.
    assert template["terminationGracePeriod"] == "1h"
    assert app.config.inference.termination_grace_seconds <= 100  # fits a spot notice, after Karpenter reacts
