"""Karpenter's IAM, queue and EventBridge rules equal the official v1.14 template, statement for statement.

The expected side is read from ../shared/reference/karpenter-v1.14-getting-started-cloudformation.yaml
itself (its ``!Sub`` JSON documents with the cluster name, partition, region and account filled in), so a
drift in either direction fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.stacks.addons._cfn import PSEUDO, one, resolve, resources

REFERENCE = (
    Path(__file__).resolve().parents[3].parent
    / "shared/reference/karpenter-v1.14-getting-started-cloudformation.yaml"
)

#: template resource name -> construct path prefix of our logical id
POLICIES = {
    "NodeLifecyclePolicy": "KarpenterControllerNodeLifecyclePolicy",
    "IAMIntegrationPolicy": "KarpenterControllerIamIntegrationPolicy",
    "EKSIntegrationPolicy": "KarpenterControllerEksIntegrationPolicy",
    "InterruptionPolicy": "KarpenterControllerInterruptionPolicy",
    "ZonalShiftPolicy": "KarpenterControllerZonalShiftPolicy",
    "ResourceDiscoveryPolicy": "KarpenterControllerResourceDiscoveryPolicy",
}
RULES = {
    "ScheduledChangeRule": "KarpenterInterruptionScheduledChangeRule",
    "SpotInterruptionRule": "KarpenterInterruptionSpotInterruptionRule",
    "RebalanceRule": "KarpenterInterruptionRebalanceRule",
    "InstanceStateChangeRule": "KarpenterInterruptionInstanceStateChangeRule",
    "CapacityReservationInterruptionRule": "KarpenterInterruptionCapacityReservationInterruptionRule",
}


class _CfnLoader(yaml.SafeLoader):
    pass


_CfnLoader.add_constructor("!Sub", lambda loader, node: {"Fn::Sub": loader.construct_scalar(node)})
_CfnLoader.add_constructor("!Ref", lambda loader, node: {"Ref": loader.construct_scalar(node)})
_CfnLoader.add_constructor(
    "!GetAtt", lambda loader, node: {"Fn::GetAtt": loader.construct_scalar(node).split(".")}
)


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return yaml.load(REFERENCE.read_text(), Loader=_CfnLoader)["Resources"]


@pytest.fixture(scope="module")
def addons(synthesized) -> dict[str, Any]:
    return synthesized.template("Addons")


@pytest.fixture(scope="module")
def ids(addons) -> dict[str, str]:
    return {
        "KarpenterNodeRole": one(addons, "AWS::IAM::Role", "KarpenterNodeRole")[0],
        "KarpenterInterruptionQueue": one(addons, "AWS::SQS::Queue", "KarpenterInterruptionQueue")[0],
    }


def _sub(text: str, cluster: str, ids: dict[str, str]) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "ClusterName":
            return cluster
        if name in PSEUDO:
            return PSEUDO[name]
        resource, attr = name.split(".")
        return f"<{ids[resource]}.{attr}>"

    return re.sub(r"\$\{([^}]+)\}", repl, text)


def _as_list(value: Any) -> list[Any]:
    return sorted(value) if isinstance(value, list) else [value]


def normalize(statement: dict[str, Any]) -> dict[str, Any]:
    """Same meaning, one spelling: lists sorted, scalars as 1-lists, Principal '*' as {AWS: ['*']}."""
    out: dict[str, Any] = {}
    for key, value in statement.items():
        if key in ("Action", "Resource", "NotAction", "NotResource"):
            out[key] = _as_list(value)
        elif key == "Condition":
            out[key] = {
                op: {
                    k: [str(v).lower() if isinstance(v, bool) else v for v in _as_list(vals)]
                    for k, vals in kv.items()
                }
                for op, kv in value.items()
            }
        elif key == "Principal":
            principal = {"AWS": "*"} if value == "*" else value
            out[key] = {k: _as_list(v) for k, v in principal.items()}
        else:
            out[key] = value
    return out


def test_the_six_controller_policies_equal_the_template(synthesized, addons, reference, ids):
    cluster = synthesized.config.cluster.name
    for template_name, prefix in POLICIES.items():
        expected = json.loads(
            _sub(reference[template_name]["Properties"]["PolicyDocument"]["Fn::Sub"], cluster, ids)
        )
        _, policy = one(addons, "AWS::IAM::ManagedPolicy", prefix)
        actual = resolve(policy["Properties"]["PolicyDocument"])
        assert [s.get("Sid") for s in actual["Statement"]] == [s["Sid"] for s in expected["Statement"]], (
            template_name
        )
        assert [normalize(s) for s in actual["Statement"]] == [normalize(s) for s in expected["Statement"]], (
            template_name
        )


def test_controller_policies_are_attached_only_to_the_pod_identity_role(addons):
    role_id, role = one(addons, "AWS::IAM::Role", "KarpenterControllerIdentityRole")
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert sorted(a for s in trust for a in _as_list(s["Action"])) == ["sts:AssumeRole", "sts:TagSession"]
    assert all(s["Principal"] == {"Service": "pods.eks.amazonaws.com"} for s in trust)
    for prefix in POLICIES.values():
        _, policy = one(addons, "AWS::IAM::ManagedPolicy", prefix)
        assert policy["Properties"]["Roles"] == [{"Ref": role_id}]
    _, assoc = one(addons, "AWS::EKS::PodIdentityAssociation", "KarpenterControllerIdentityAssociation")
    assert assoc["Properties"]["Namespace"] == "kube-system"
    assert assoc["Properties"]["ServiceAccount"] == "karpenter"
    assert assoc["Properties"]["RoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}


def test_no_controller_statement_is_an_unconditioned_wildcard_beyond_the_template(addons):
    """The issue's rule: scoped like the template, not bare '*' — every '*' resource has a reason there."""
    bare = []
    for prefix in POLICIES.values():
        _, policy = one(addons, "AWS::IAM::ManagedPolicy", prefix)
        for s in resolve(policy["Properties"]["PolicyDocument"])["Statement"]:
            if "*" in _as_list(s["Resource"]) and "Condition" not in s:
                bare.append((s["Sid"], _as_list(s["Action"])))
    # Actions without resource types (AWS offers nothing narrower); identical in the template.
    assert bare == [
        ("AllowPricingReadActions", ["pricing:GetProducts"]),
        ("AllowUnscopedInstanceProfileListAction", ["iam:ListInstanceProfiles"]),
    ]


def test_node_role_equals_the_template_and_has_an_ec2_linux_access_entry(addons, reference, ids):
    expected = reference["KarpenterNodeRole"]["Properties"]
    role = addons["Resources"][ids["KarpenterNodeRole"]]["Properties"]
    assert sorted(resolve(role["ManagedPolicyArns"])) == sorted(
        _sub(a["Fn::Sub"], "", ids) for a in expected["ManagedPolicyArns"]
    )
    principal = _sub(
        expected["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"]["Fn::Sub"], "", ids
    )
    assert role["AssumeRolePolicyDocument"]["Statement"] == [
        {"Action": "sts:AssumeRole", "Effect": "Allow", "Principal": {"Service": principal}}
    ]
    _, entry = one(addons, "AWS::EKS::AccessEntry", "KarpenterNodeRoleAccessEntry")
    assert entry["Properties"]["Type"] == "EC2_LINUX"
    assert entry["Properties"]["PrincipalArn"] == {"Fn::GetAtt": [ids["KarpenterNodeRole"], "Arn"]}
    assert "AccessPolicies" not in entry["Properties"] or entry["Properties"]["AccessPolicies"] == []


def test_interruption_queue_equals_the_template(addons, reference, ids):
    queue_id = ids["KarpenterInterruptionQueue"]
    props = addons["Resources"][queue_id]["Properties"]
    assert (
        props["MessageRetentionPeriod"]
        == reference["KarpenterInterruptionQueue"]["Properties"]["MessageRetentionPeriod"]
        == 300
    )
    assert props["SqsManagedSseEnabled"] is True
    _, policy = one(addons, "AWS::SQS::QueuePolicy", "KarpenterInterruptionQueuePolicy")
    assert policy["Properties"]["Queues"] == [{"Ref": queue_id}]
    expected = resolve(
        reference["KarpenterInterruptionQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    )
    expected = [
        json.loads(json.dumps(s).replace("<KarpenterInterruptionQueue.Arn>", f"<{queue_id}.Arn>"))
        for s in expected
    ]
    actual = resolve(policy["Properties"]["PolicyDocument"]["Statement"])
    assert [normalize(s) for s in actual] == [normalize(s) for s in expected]


def test_the_five_rules_have_the_exact_event_patterns_and_target_the_queue(addons, reference, ids):
    rules = resources(addons, "AWS::Events::Rule")
    assert len(rules) == 5
    detail_types = set()
    for template_name, prefix in RULES.items():
        _, rule = one(addons, "AWS::Events::Rule", prefix)
        expected = reference[template_name]["Properties"]["EventPattern"]
        assert rule["Properties"]["EventPattern"] == expected, template_name
        assert rule["Properties"]["State"] == "ENABLED"
        targets = rule["Properties"]["Targets"]
        assert [t["Arn"] for t in targets] == [{"Fn::GetAtt": [ids["KarpenterInterruptionQueue"], "Arn"]}]
        detail_types.update(rule["Properties"]["EventPattern"]["detail-type"])
    # The issue's list, spelled out: a typo here is accepted by EventBridge and never matches anything.
    assert detail_types == {
        "AWS Health Event",
        "EC2 Spot Instance Interruption Warning",
        "EC2 Instance Rebalance Recommendation",
        "EC2 Instance State-change Notification",
        "EC2 Capacity Reservation Instance Interruption Warning",
    }
