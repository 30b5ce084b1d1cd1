"""charts/karpenter.py on its own (cdk8s): every object schema-valid, seed fields, invalid props rejected."""

from __future__ import annotations

import dataclasses

import cdk8s
import pytest

from charts.karpenter import (
    GPU_NODEPOOL_NAME,
    GpuNodePoolProps,
    KarpenterNodePools,
    KarpenterNodePoolsProps,
)
from tests.helpers.crd_schema import CrdValidationError, validate

PROPS = KarpenterNodePoolsProps(cluster_name="llama-eks", node_role_name="KarpenterNodeRole-llama-eks")


def _synth(props: KarpenterNodePoolsProps = PROPS) -> dict[str, dict]:
    chart = KarpenterNodePools(cdk8s.App(), "Karpenter", props=props)
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in chart.to_json()}


def test_default_chart_is_one_nodeclass_and_the_gpu_pool_all_schema_valid():
    docs = _synth()
    assert sorted(docs) == ["EC2NodeClass/default", "NodePool/eks-gpu-np"]
    for doc in docs.values():
        validate(doc)


def test_gpu_nodepool_matches_the_seed_and_the_issue():
    pool = validate(_synth()[f"NodePool/{GPU_NODEPOOL_NAME}"])["spec"]
    template = pool["template"]["spec"]
    assert template["nodeClassRef"] == {
        "group": "karpenter.k8s.aws",
        "kind": "EC2NodeClass",
        "name": "default",
    }
    assert {r["key"]: (r["operator"], r["values"]) for r in template["requirements"]} == {
        # The seed's `instance-generation In [g6]` never matches; the family label carries "g6".
        "karpenter.k8s.aws/instance-family": ("In", ["g6"]),
        "karpenter.sh/capacity-type": ("In", ["spot", "on-demand"]),
        "kubernetes.io/arch": ("In", ["amd64"]),
        "kubernetes.io/os": ("In", ["linux"]),
    }
    assert template["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]
    assert (template["expireAfter"], template["terminationGracePeriod"]) == ("720h", "1h")
    assert pool["template"]["metadata"]["labels"] == {"llama-eks/node-class": "gpu"}
    # Serving survives voluntary disruption: only empty GPU nodes are consolidated, one node at a time.
    assert pool["disruption"] == {
        "consolidationPolicy": "WhenEmpty",
        "consolidateAfter": "5m",
        "budgets": [{"nodes": "1"}, {"nodes": "1", "reasons": ["Drifted"]}],
    }
    assert pool["limits"] == {"cpu": 256, "nvidia.com/gpu": 8}


def test_every_disruption_setting_reaches_the_gpu_pool_and_validates():
    gpu = GpuNodePoolProps(
        consolidation_policy="WhenEmptyOrUnderutilized",
        consolidate_after="10m",
        expire_after="Never",
        termination_grace_period="2h",
        disruption_budget="20%",
    )
    docs = _synth(dataclasses.replace(PROPS, gpu=gpu, general_purpose_cpu_limit=8))
    pool = validate(docs[f"NodePool/{GPU_NODEPOOL_NAME}"])["spec"]
    assert pool["disruption"] == {
        "consolidationPolicy": "WhenEmptyOrUnderutilized",
        "consolidateAfter": "10m",
        "budgets": [{"nodes": "20%"}, {"nodes": "1", "reasons": ["Drifted"]}],
    }
    assert (pool["template"]["spec"]["expireAfter"], pool["template"]["spec"]["terminationGracePeriod"]) == (
        "Never",
        "2h",
    )
    general = validate(docs["NodePool/general-purpose"])["spec"]["template"]["spec"]
    assert (general["expireAfter"], general["terminationGracePeriod"]) == ("Never", "2h")


def test_nodeclass_volume_imds_selectors_and_tags():
    props = dataclasses.replace(PROPS, tags={"project": "llama-eks"}, ami_alias="al2023@v20250101")
    nc = validate(_synth(props)["EC2NodeClass/default"])["spec"]
    assert nc["role"] == "KarpenterNodeRole-llama-eks"
    assert nc["amiSelectorTerms"] == [{"alias": "al2023@v20250101"}]
    assert (
        nc["subnetSelectorTerms"]
        == nc["securityGroupSelectorTerms"]
        == [{"tags": {"karpenter.sh/discovery": "llama-eks"}}]
    )
    assert nc["blockDeviceMappings"] == [
        {
            "deviceName": "/dev/xvda",
            "rootVolume": True,
            "ebs": {
                "volumeSize": "100Gi",
                "volumeType": "gp3",
                "encrypted": True,
                "deleteOnTermination": True,
            },
        }
    ]
    assert nc["metadataOptions"] == {
        "httpEndpoint": "enabled",
        "httpProtocolIPv6": "disabled",
        "httpPutResponseHopLimit": 1,
        "httpTokens": "required",
    }
    assert nc["tags"] == {"project": "llama-eks", "karpenter.sh/discovery": "llama-eks"}


def test_optional_general_purpose_pool_is_cpu_only_and_untainted():
    docs = _synth(dataclasses.replace(PROPS, general_purpose_cpu_limit=32))
    pool = validate(docs["NodePool/general-purpose"])["spec"]
    assert "taints" not in pool["template"]["spec"]
    assert pool["limits"] == {"cpu": 32}
    assert pool["weight"] < docs[f"NodePool/{GPU_NODEPOOL_NAME}"]["spec"]["weight"]


def test_config_families_flow_into_the_requirement():
    props = dataclasses.replace(
        PROPS, gpu=GpuNodePoolProps(instance_families=("g6", "g6e"), capacity_types=("on-demand",))
    )
    req = _synth(props)[f"NodePool/{GPU_NODEPOOL_NAME}"]["spec"]["template"]["spec"]["requirements"]
    assert req[0]["values"] == ["g6", "g6e"] and req[1]["values"] == ["on-demand"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ami_alias": "al2023@latest-1"}, "KarpenterNodePoolsProps.ami_alias: 'al2023@latest-1' is invalid"),
        (
            {"root_volume_gib": 10},
            "KarpenterNodePoolsProps.root_volume_gib: 10 is invalid; allowed: 20 to 16384",
        ),
        (
            {"tags": {"karpenter.sh/nodepool": "x"}},
            "KarpenterNodePoolsProps.tags: 'karpenter.sh/nodepool' is invalid",
        ),
        (
            {"gpu": GpuNodePoolProps(expire_after="30 days")},
            "KarpenterNodePoolsProps.gpu.expire_after: '30 days'",
        ),
        ({"gpu": GpuNodePoolProps(capacity_types=("cheap",))}, "KarpenterNodePoolsProps.gpu.capacity_types"),
        (
            {"gpu": GpuNodePoolProps(termination_grace_period="Never")},
            "KarpenterNodePoolsProps.gpu.termination_grace_period: 'Never' is invalid",
        ),
        (
            {"gpu": GpuNodePoolProps(consolidation_policy="WhenUnderutilized")},
            "KarpenterNodePoolsProps.gpu.consolidation_policy: 'WhenUnderutilized' is invalid; allowed: "
            "WhenEmpty, WhenEmptyOrUnderutilized",
        ),
        ({"node_role_name": ""}, "KarpenterNodePoolsProps.node_role_name: '' is invalid"),
    ],
)
def test_invalid_props_fail_in_the_constructor(change, message):
    with pytest.raises(
        ValueError, match="^" + message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")
    ):
        KarpenterNodePools(cdk8s.App(), "Karpenter", props=dataclasses.replace(PROPS, **change))


def test_validator_catches_a_hand_edited_pool():
    doc = _synth()[f"NodePool/{GPU_NODEPOOL_NAME}"]
    doc["spec"]["disruption"]["consolidationPolicy"] = "WhenUnderutilized"  # the v1beta1 spelling
    with pytest.raises(CrdValidationError, match="consolidationPolicy"):
        validate(doc)
