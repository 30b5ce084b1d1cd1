"""ClusterTeardown as synthesized: handlers, least-privilege IAM, the waiter's bounds, destroy order."""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_ec2 as ec2
from aws_cdk.assertions import Template

from stacks.addons.teardown import ClusterTeardown, TeardownConfigError
from tests.conftest import Synthesized
from tests.stacks.addons._cfn import one, resolve, resources

TEARDOWN_CR = "Custom::ClusterTeardown"


@pytest.fixture(scope="module")
def addons(synthesized: Synthesized) -> dict[str, Any]:
    return synthesized.template("Addons")


def teardown_resource(template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    (found,) = resources(template, TEARDOWN_CR).items()
    return found


def test_the_custom_resource_carries_the_cluster_the_vpc_and_the_bounds(addons, synthesized) -> None:
    logical_id, res = teardown_resource(addons)
    assert logical_id == "Teardown0042FE15"  # a changed id would Delete (skipped) and Create it again
    props = resolve(res["Properties"])
    vpc = props.pop("VpcId")
    assert vpc.startswith(f"<{synthesized.config.stack_prefix}-network:") and "Vpc" in vpc
    framework_on_event, _ = one(addons, "AWS::Lambda::Function", "TeardownProviderframeworkonEvent")
    assert props == {
        "ServiceToken": f"<{framework_on_event}.Arn>",
        "ClusterName": synthesized.config.cluster.name,
        "GracePeriodSeconds": "600",  # 10 min for Karpenter and the LB controller
        "GiveUpAfterSeconds": "1740",  # 30 min total timeout minus two polls
        # CloudFormation's own bound: above the waiter's 30 min, below its one-hour maximum.
        "ServiceTimeout": "2100",
    }
    assert res["DeletionPolicy"] == "Delete"


def test_handlers_are_python_with_short_per_poll_timeouts(addons) -> None:
    log_group_id, log_group = one(addons, "AWS::Logs::LogGroup", "TeardownLogs")
    handlers = {
        res["Properties"]["Handler"]: res["Properties"]
        for lid, res in resources(addons, "AWS::Lambda::Function").items()
        if lid.startswith(("TeardownOnEvent", "TeardownIsComplete"))
    }
    assert {h: (p["Runtime"], p["Timeout"]) for h, p in handlers.items()} == {
        "index.on_event": ("python3.14", 60),
        "index.is_complete": ("python3.14", 120),
    }
    for props in handlers.values():
        assert props["LoggingConfig"] == {"LogGroup": {"Ref": log_group_id}}
    # What it terminated or deleted outlives the stack (the audit trail of a destroy), for 30 days.
    assert log_group["Properties"]["RetentionInDays"] == 30
    assert log_group["DeletionPolicy"] == "Retain" and "LogGroupName" not in log_group["Properties"]


def test_the_waiter_polls_every_30_seconds_for_30_minutes(addons) -> None:
    _, machine = one(addons, "AWS::StepFunctions::StateMachine", "TeardownProvider")
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    definition = json.loads("".join(p if isinstance(p, str) else "ARN" for p in parts))
    assert definition["States"]["framework-isComplete-task"]["Retry"] == [
        {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 30, "MaxAttempts": 60, "BackoffRate": 1}
    ]


def _policy(template: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    _, policy = one(template, "AWS::IAM::ManagedPolicy", prefix)
    return resolve(policy["Properties"]["PolicyDocument"]["Statement"])


def test_cleanup_permissions_are_conditioned_on_this_cluster(addons, synthesized) -> None:
    name = synthesized.config.cluster.name
    log_group_id, _ = one(addons, "AWS::Logs::LogGroup", "TeardownLogs")
    statements = _policy(addons, "TeardownIsCompletePolicy")
    vpc_arn = statements[-1]["Condition"]["ArnEquals"]["ec2:Vpc"]
    assert vpc_arn.startswith("arn:aws:ec2:us-west-2:111111111111:vpc/<") and "network:" in vpc_arn
    arn = "arn:aws:{}:us-west-2:111111111111:{}"
    lb_tag = {"StringEquals": {"aws:ResourceTag/elbv2.k8s.aws/cluster": name}}
    assert statements == [
        {
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Effect": "Allow",
            "Resource": f"<{log_group_id}.Arn>",
        },
        {
            "Action": [
                "ec2:DescribeInstances",
                "ec2:DescribeSecurityGroups",
                "elasticloadbalancing:DescribeLoadBalancers",
                "elasticloadbalancing:DescribeTags",
                "elasticloadbalancing:DescribeTargetGroups",
            ],
            "Effect": "Allow",
            "Resource": "*",
            "Sid": "Describe",
        },
        {
            "Action": "ec2:TerminateInstances",
            "Condition": {
                "StringEquals": {f"aws:ResourceTag/kubernetes.io/cluster/{name}": "owned"},
                "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
            },
            "Effect": "Allow",
            "Resource": arn.format("ec2", "instance/*"),
            "Sid": "TerminateKarpenterInstancesOfThisCluster",
        },
        {
            "Action": "elasticloadbalancing:DeleteLoadBalancer",
            "Condition": lb_tag,
            "Effect": "Allow",
            "Resource": arn.format("elasticloadbalancing", "loadbalancer/*"),
            "Sid": "DeleteLoadBalancersOfThisCluster",
        },
        {
            "Action": "elasticloadbalancing:DeleteTargetGroup",
            "Condition": lb_tag,
            "Effect": "Allow",
            "Resource": arn.format("elasticloadbalancing", "targetgroup/*"),
            "Sid": "DeleteTargetGroupsOfThisCluster",
        },
        {
            "Action": "ec2:DeleteSecurityGroup",
            "Condition": lb_tag,
            "Effect": "Allow",
            "Resource": arn.format("ec2", "security-group/*"),
            "Sid": "DeleteSecurityGroupsOfThisCluster",
        },
        {
            "Action": ["ec2:RevokeSecurityGroupEgress", "ec2:RevokeSecurityGroupIngress"],
            "Condition": {"ArnEquals": {"ec2:Vpc": vpc_arn}},
            "Effect": "Allow",
            "Resource": arn.format("ec2", "security-group/*"),
            "Sid": "RevokeRulesInThisVpc",
        },
    ]
    # The stack-status check reads this stack only.
    assert _policy(addons, "TeardownOnEventPolicy")[1:] == [
        {"Action": "cloudformation:DescribeStacks", "Effect": "Allow", "Resource": "<AWS::StackId>"}
    ]
    # Each role carries only its own managed policy: no AWSLambdaBasicExecutionRole (logs of any group).
    for name in ("OnEvent", "IsComplete"):
        role_id, role = one(addons, "AWS::IAM::Role", f"Teardown{name}Role")
        assert not {"ManagedPolicyArns", "Policies"} & set(role["Properties"])
        assert not [k for k in resources(addons, "AWS::IAM::Policy") if k.startswith(role_id[:-8])]
        _, policy = one(addons, "AWS::IAM::ManagedPolicy", f"Teardown{name}Policy")
        assert policy["Properties"]["Roles"] == [{"Ref": role_id}]


def test_destroy_order_workload_nodepools_teardown_then_karpenter(addons, synthesized) -> None:
    teardown_id, teardown = teardown_resource(addons)
    own = {lid for lid in addons["Resources"] if lid.startswith("Teardown")}
    karpenter_chart = one(addons, "Custom::AWSCDK-EKS-HelmChart", "KarpenterControllerChart")[0]
    access_entry = one(addons, "AWS::EKS::AccessEntry", "KarpenterNodeRoleAccessEntry")[0]
    nodepools_id, nodepools = one(addons, "Custom::AWSCDK-EKS-KubernetesResource", "KarpenterNodePools")
    # NodePools depend on every part of the step: CloudFormation deletes them first, then runs the step.
    assert own <= set(nodepools["DependsOn"])
    # The step depends on the controller and its nodes' access entry: they are deleted after it.
    assert {karpenter_chart, access_entry} <= set(teardown["DependsOn"])
    for lid in own:
        assert {karpenter_chart, access_entry} <= set(addons["Resources"][lid].get("DependsOn", [])), lid
    assert nodepools_id not in teardown["DependsOn"]
    # The workload and its Service (InferenceStack) go before the add-ons; cluster and VPC after them.
    stacks = synthesized.stacks
    assert stacks.addons in stacks.inference.dependencies
    assert stacks.cluster in stacks.addons.dependencies and stacks.network in stacks.cluster.dependencies
    assert teardown_id == "Teardown0042FE15"


def test_without_karpenter_the_step_still_clears_load_balancers(alternative: Synthesized) -> None:
    addons = alternative.template("Addons")
    _, teardown = teardown_resource(addons)
    assert "DependsOn" not in teardown  # no Karpenter to wait for; the InferenceStack still goes first
    statements = _policy(addons, "TeardownIsCompletePolicy")
    assert "elasticloadbalancing:DeleteLoadBalancer" in [s["Action"] for s in statements]


def test_the_asset_ships_the_handler_only(addons, synthesized) -> None:
    _, function = one(addons, "AWS::Lambda::Function", "TeardownIsComplete")
    asset_hash = function["Properties"]["Code"]["S3Key"].removesuffix(".zip")
    staged = synthesized.outdir / f"asset.{asset_hash}"
    assert sorted(p.name for p in staged.iterdir()) == ["index.py"]


# ---------------------------------------------------------------------- props


def _synth(**props: Any) -> dict[str, Any]:
    app = cdk.App()
    stack = cdk.Stack(app, "T", env=cdk.Environment(account="111111111111", region="us-west-2"))
    vpc = ec2.Vpc.from_vpc_attributes(stack, "Vpc", vpc_id="vpc-0abc", availability_zones=["us-west-2a"])
    ClusterTeardown(stack, "Teardown", cluster_name="c1", vpc=vpc, **props)
    return Template.from_stack(stack).to_json()


def test_timing_props_shape_the_resource_and_the_waiter() -> None:
    template = _synth(
        grace_period=cdk.Duration.minutes(5),
        total_timeout=cdk.Duration.minutes(20),
        query_interval=cdk.Duration.seconds(20),
    )
    _, res = teardown_resource(template)
    assert {
        k: res["Properties"][k] for k in ("GracePeriodSeconds", "GiveUpAfterSeconds", "ServiceTimeout")
    } == {
        "GracePeriodSeconds": "300",
        "GiveUpAfterSeconds": "1160",
        "ServiceTimeout": "1500",
    }
    assert res["Properties"]["VpcId"] == "vpc-0abc" and res["Properties"]["ClusterName"] == "c1"
    _, machine = one(template, "AWS::StepFunctions::StateMachine", "TeardownProvider")
    assert '"IntervalSeconds\\":20,\\"MaxAttempts\\":60' in json.dumps(
        machine["Properties"]["DefinitionString"]
    )


@pytest.mark.parametrize(
    ("props", "message"),
    [
        (
            {"query_interval": cdk.Duration.seconds(5)},
            "ClusterTeardown query_interval: 5 s; allowed: 10 s to 120 s",
        ),
        (
            {"total_timeout": cdk.Duration.minutes(60)},
            "ClusterTeardown total_timeout: 3600 s; allowed: at most 3300 s "
            "(CloudFormation waits one hour for a custom resource)",
        ),
        (
            {"grace_period": cdk.Duration.minutes(25)},
            "ClusterTeardown grace_period: 1500 s with total_timeout 1800 s; allowed: grace_period >= 0 and "
            "total_timeout >= grace_period + 600 s + 2 x query_interval (= 2160 s)",
        ),
    ],
)
def test_timing_out_of_range_fails_with_the_prop_and_the_range(props: dict[str, Any], message: str) -> None:
    with pytest.raises(TeardownConfigError) as err:
        _synth(**props)
    assert str(err.value) == message
