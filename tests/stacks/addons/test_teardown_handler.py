"""The destroy-time teardown handler (stacks/addons/lambda/teardown/index.py) against moto's EC2 and ELBv2.

A small world per test: this cluster's Karpenter instances, its NLB with target group, front-end and
backend security groups (the nodes' group allows traffic from the backend group), and what must never be
touched: another cluster's Karpenter instances and load balancer, this cluster's managed-nodegroup node
(cluster tag, no NodePool tag), an untagged instance, a load balancer with this cluster's tag in another
VPC. Where moto does not model a dependency (NLB network interfaces holding a security group, deletion
protection), a thin proxy around the moto client raises the error AWS would.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

moto = pytest.importorskip("moto", reason="moto[ec2,elbv2] is pinned in requirements-dev.txt")
boto3 = pytest.importorskip("boto3")
from botocore.exceptions import ClientError  # noqa: E402

handler = importlib.import_module("stacks.addons.lambda.teardown.index")

REGION = "us-west-2"
CLUSTER = "llama-eks-dev"
OTHER = "llama-eks-prod"
GRACE = 600
GIVE_UP = 1740
STACK_ID = f"arn:aws:cloudformation:{REGION}:123456789012:stack/{CLUSTER}-addons/0a1b2c3d"


def karpenter_tags(cluster: str, pool: str = "eks-gpu-np") -> list[dict[str, str]]:
    """What Karpenter 1.x tags an instance with (official template's RunInstances/CreateTags conditions)."""
    return [
        {"Key": f"kubernetes.io/cluster/{cluster}", "Value": "owned"},
        {"Key": "eks:eks-cluster-name", "Value": cluster},
        {"Key": "karpenter.sh/nodepool", "Value": pool},
        {"Key": "karpenter.sh/nodeclaim", "Value": f"{pool}-abcde"},
        {"Key": "karpenter.k8s.aws/ec2nodeclass", "Value": "default"},
    ]


def lb_tags(cluster: str, resource: str) -> list[dict[str, str]]:
    """The AWS Load Balancer Controller's tracking tags (pkg/deploy/tracking) for a Service's resources."""
    return [
        {"Key": "elbv2.k8s.aws/cluster", "Value": cluster},
        {"Key": "service.k8s.aws/stack", "Value": "llama/my-llama-svc"},
        {"Key": "service.k8s.aws/resource", "Value": resource},
    ]


@dataclass
class World:
    ec2: Any
    elbv2: Any
    vpc: str
    other_vpc: str
    ours: list[str]  # this cluster's Karpenter instances
    spared: dict[str, str]  # instance id -> why it must stay
    lb: str
    tg: str
    frontend_sg: str
    backend_sg: str
    node_sg: str
    spared_lbs: list[str] = field(default_factory=list)
    spared_tgs: list[str] = field(default_factory=list)
    spared_sgs: list[str] = field(default_factory=list)

    def state(self, instance_id: str) -> str:
        reservations = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return reservations[0]["Instances"][0]["State"]["Name"]

    def lbs(self) -> set[str]:
        return {lb["LoadBalancerArn"] for lb in self.elbv2.describe_load_balancers()["LoadBalancers"]}

    def tgs(self) -> set[str]:
        return {tg["TargetGroupArn"] for tg in self.elbv2.describe_target_groups()["TargetGroups"]}

    def sgs(self) -> set[str]:
        return {sg["GroupId"] for sg in self.ec2.describe_security_groups()["SecurityGroups"]}

    def node_rules(self) -> list[dict[str, Any]]:
        return self.ec2.describe_security_groups(GroupIds=[self.node_sg])["SecurityGroups"][0][
            "IpPermissions"
        ]

    def karpenter_gone(self) -> None:
        """What Karpenter and the LB controller do when they finish their own cleanup in time."""
        self.ec2.terminate_instances(InstanceIds=self.ours)
        self.elbv2.delete_load_balancer(LoadBalancerArn=self.lb)
        self.elbv2.delete_target_group(TargetGroupArn=self.tg)
        self.ec2.revoke_security_group_ingress(
            GroupId=self.node_sg, IpPermissions=[_from_group(self.backend_sg, 5000)]
        )
        for group in (self.frontend_sg, self.backend_sg):
            self.ec2.delete_security_group(GroupId=group)

    def assert_spared(self) -> None:
        for instance_id, why in self.spared.items():
            assert self.state(instance_id) == "running", why
        assert set(self.spared_lbs) <= self.lbs()
        assert set(self.spared_tgs) <= self.tgs()
        assert set(self.spared_sgs) <= self.sgs()


def _from_group(group_id: str, port: int) -> dict[str, Any]:
    return {
        "IpProtocol": "tcp",
        "FromPort": port,
        "ToPort": port,
        "UserIdGroupPairs": [{"GroupId": group_id}],
    }


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with moto.mock_aws():
        yield


@pytest.fixture
def world(aws: None) -> World:
    ec2 = boto3.client("ec2", region_name=REGION)
    elbv2 = boto3.client("elbv2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    other_vpc = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"]

    def subnets(vpc_id: str, prefix: str) -> list[str]:
        return [
            ec2.create_subnet(VpcId=vpc_id, CidrBlock=f"{prefix}.{i}.0/24", AvailabilityZone=f"{REGION}{az}")[
                "Subnet"
            ]["SubnetId"]
            for i, az in ((1, "a"), (2, "b"))
        ]

    ours_subnets, other_subnets = subnets(vpc, "10.0"), subnets(other_vpc, "10.1")
    ami = "ami-12c6146b"  # one of moto's built-in images (listing them all takes seconds)

    def launch(count: int, tags: list[dict[str, str]] | None, subnet: str = ours_subnets[0]) -> list[str]:
        spec = [{"ResourceType": "instance", "Tags": tags}] if tags else []
        reply = ec2.run_instances(
            ImageId=ami, MinCount=count, MaxCount=count, SubnetId=subnet, TagSpecifications=spec
        )
        return [i["InstanceId"] for i in reply["Instances"]]

    ours = launch(2, karpenter_tags(CLUSTER))
    spared = {
        **dict.fromkeys(
            launch(1, karpenter_tags(OTHER), other_subnets[0]), "another cluster's Karpenter node"
        ),
        **dict.fromkeys(
            launch(1, [{"Key": f"kubernetes.io/cluster/{CLUSTER}", "Value": "owned"}]),
            "this cluster's managed-nodegroup node (no NodePool tag): it goes with the cluster",
        ),
        **dict.fromkeys(
            launch(1, [{"Key": "karpenter.sh/nodepool", "Value": "eks-gpu-np"}]),
            "a NodePool tag without this cluster's tag",
        ),
        **dict.fromkeys(launch(1, None), "an untagged instance"),
    }

    def group(name: str, vpc_id: str, tags: list[dict[str, str]] | None) -> str:
        spec = [{"ResourceType": "security-group", "Tags": tags}] if tags else []
        return ec2.create_security_group(
            GroupName=name, Description=name, VpcId=vpc_id, TagSpecifications=spec
        )["GroupId"]

    node_sg = group("nodes", vpc, [{"Key": "karpenter.sh/discovery", "Value": CLUSTER}])
    frontend_sg = group("k8s-llama-mylla", vpc, lb_tags(CLUSTER, "ManagedLBSecurityGroup"))
    backend_sg = group(
        "k8s-traffic-llamaeksdev",
        vpc,
        [
            {"Key": "elbv2.k8s.aws/cluster", "Value": CLUSTER},
            {"Key": "elbv2.k8s.aws/resource", "Value": "backend-sg"},
        ],
    )
    # The controller opens the nodes' group to its backend group; the nodes also talk among themselves.
    ec2.authorize_security_group_ingress(
        GroupId=node_sg, IpPermissions=[_from_group(backend_sg, 5000), _from_group(node_sg, 443)]
    )
    other_sg = group("k8s-other", vpc, lb_tags(OTHER, "ManagedLBSecurityGroup"))
    untagged_sg = group("someone-elses", vpc, None)

    def nlb(name: str, subnet_ids: list[str], groups: list[str], tags: list[dict[str, str]] | None) -> str:
        extra = {"Tags": tags} if tags else {}
        return elbv2.create_load_balancer(
            Name=name, Subnets=subnet_ids, Type="network", Scheme="internal", SecurityGroups=groups, **extra
        )["LoadBalancers"][0]["LoadBalancerArn"]

    def target_group(name: str, vpc_id: str, tags: list[dict[str, str]]) -> str:
        return elbv2.create_target_group(
            Name=name, Protocol="TCP", Port=5000, VpcId=vpc_id, TargetType="ip", Tags=tags
        )["TargetGroups"][0]["TargetGroupArn"]

    lb = nlb("k8s-llama-myllama", ours_subnets, [frontend_sg, backend_sg], lb_tags(CLUSTER, "LoadBalancer"))
    tg = target_group("k8s-llama-myllama", vpc, lb_tags(CLUSTER, "llama/my-llama-svc:80"))
    elbv2.create_listener(
        LoadBalancerArn=lb,
        Protocol="TCP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}],
    )
    other_lb = nlb("k8s-other", ours_subnets, [other_sg], lb_tags(OTHER, "LoadBalancer"))
    untagged_lb = nlb("someone-elses", ours_subnets, [untagged_sg], None)
    # This cluster's tag, but in another VPC: not this deployment's (the VPC guard).
    foreign_lb = nlb("k8s-elsewhere", other_subnets, [], lb_tags(CLUSTER, "LoadBalancer"))
    other_tg = target_group("k8s-other", vpc, lb_tags(OTHER, "llama/other:80"))
    return World(
        ec2=ec2,
        elbv2=elbv2,
        vpc=vpc,
        other_vpc=other_vpc,
        ours=ours,
        spared=spared,
        lb=lb,
        tg=tg,
        frontend_sg=frontend_sg,
        backend_sg=backend_sg,
        node_sg=node_sg,
        spared_lbs=[other_lb, untagged_lb, foreign_lb],
        spared_tgs=[other_tg],
        spared_sgs=[node_sg, other_sg, untagged_sg],
    )


# ---------------------------------------------------------------------- events and fakes


def properties(vpc: str = "vpc-0123456789abcdef0", **overrides: str) -> dict[str, str]:
    props = {
        "ServiceToken": "arn:aws:lambda:us-west-2:123456789012:function:framework-onEvent",
        "ClusterName": CLUSTER,
        "VpcId": vpc,
        "GracePeriodSeconds": str(GRACE),
        "GiveUpAfterSeconds": str(GIVE_UP),
    }
    props.update(overrides)
    return props


def cfn_event(request: str, props: dict[str, str], physical_id: str | None = None) -> dict[str, Any]:
    event = {
        "RequestType": request,
        "StackId": STACK_ID,
        "RequestId": "req-1",
        "LogicalResourceId": "Teardown0042FE15",
        "ResourceType": "Custom::ClusterTeardown",
        "ResponseURL": "https://cloudformation-custom-resource-response-uswest2.s3.amazonaws.com/x",
        "ResourceProperties": props,
    }
    if physical_id is not None:
        event["PhysicalResourceId"] = physical_id
    return event


def poll_event(world: World, *, elapsed: int, mode: str = "cleanup") -> dict[str, Any]:
    """What the Provider framework hands ``is_complete``: the Delete event merged with on_event's reply."""
    event = cfn_event("Delete", properties(world.vpc), physical_id=f"{CLUSTER}-teardown")
    event["Data"] = {
        "Mode": mode,
        "StackStatus": "DELETE_IN_PROGRESS",
        "DeleteStartedAt": str(int(time.time()) - elapsed),
    }
    return event


class FakeCloudFormation:
    def __init__(self, status: str) -> None:
        self.status = status
        self.calls: list[str] = []

    def describe_stacks(self, StackName: str) -> dict[str, Any]:
        self.calls.append(StackName)
        return {"Stacks": [{"StackId": StackName, "StackStatus": self.status}]}


class NoCalls:
    """A client that must not be used."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected AWS call {name}")


def client_error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} (test)"}}, operation)


class Proxy:
    """A moto client whose listed operations first raise AWS errors (one per call, in order)."""

    def __init__(self, client: Any, failures: dict[str, list[str]]) -> None:
        self._client = client
        self._failures = {op: list(codes) for op, codes in failures.items()}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._client, name)
        if name in ("get_paginator", "describe_tags") or name.startswith("describe"):
            return target

        def call(**kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            pending = self._failures.get(name)
            if pending:
                raise client_error(pending.pop(0), name)
            return target(**kwargs)

        return call


def run(world: World, *, elapsed: int, ec2: Any = None, elbv2: Any = None) -> dict[str, Any]:
    return handler.is_complete(
        poll_event(world, elapsed=elapsed), None, ec2=ec2 or world.ec2, elbv2=elbv2 or world.elbv2
    )


def until_complete(world: World, *, elapsed: int, polls: int = 5, **clients: Any) -> int:
    """Poll like the waiter does; return how many polls it took."""
    for n in range(1, polls + 1):
        if run(world, elapsed=elapsed, **clients)["IsComplete"]:
            return n
    raise AssertionError(f"not complete after {polls} polls")


# ---------------------------------------------------------------------- Create / Update: nothing


def test_create_returns_a_stable_physical_id_and_touches_nothing(world: World) -> None:
    first = handler.on_event(cfn_event("Create", properties(world.vpc)), None, cloudformation=NoCalls())
    second = handler.on_event(cfn_event("Create", properties(world.vpc)), None, cloudformation=NoCalls())
    assert first == second == {"PhysicalResourceId": f"{CLUSTER}-teardown"}
    assert all(world.state(i) == "running" for i in world.ours)
    assert world.lb in world.lbs()


def test_update_keeps_the_physical_id_whatever_changed(world: World) -> None:
    event = cfn_event("Update", properties(world.vpc, GracePeriodSeconds="60"), physical_id="old-id")
    event["OldResourceProperties"] = properties(world.vpc)
    # Returning a new id would make CloudFormation delete the "old" resource: a cleanup of a live cluster.
    assert handler.on_event(event, None, cloudformation=NoCalls()) == {"PhysicalResourceId": "old-id"}


@pytest.mark.parametrize("request_type", ["Create", "Update"])
def test_is_complete_of_create_and_update_makes_no_call(request_type: str) -> None:
    event = cfn_event(request_type, properties(), physical_id=f"{CLUSTER}-teardown")
    assert handler.is_complete(event, None, ec2=NoCalls(), elbv2=NoCalls()) == {"IsComplete": True}


def test_bad_properties_fail_with_the_property_named() -> None:
    props = properties()
    del props["VpcId"]
    with pytest.raises(ValueError, match=r"missing properties \['VpcId'\]"):
        handler.on_event(cfn_event("Create", props), None)
    with pytest.raises(ValueError, match="GracePeriodSeconds < GiveUpAfterSeconds"):
        handler.on_event(cfn_event("Create", properties(GracePeriodSeconds="1800")), None)
    with pytest.raises(ValueError, match="VpcId a VPC id"):
        handler.on_event(cfn_event("Create", properties(vpc="")), None)


# ---------------------------------------------------------------------- Delete: only when the stack goes


@pytest.mark.parametrize("status", ["DELETE_IN_PROGRESS", "ROLLBACK_IN_PROGRESS"])
def test_delete_of_the_whole_stack_cleans_up(status: str) -> None:
    cfn = FakeCloudFormation(status)
    before = int(time.time())
    reply = handler.on_event(
        cfn_event("Delete", properties(), physical_id=f"{CLUSTER}-teardown"), None, cloudformation=cfn
    )
    assert cfn.calls == [STACK_ID]
    assert reply["PhysicalResourceId"] == f"{CLUSTER}-teardown"
    assert reply["Data"]["Mode"] == "cleanup" and reply["Data"]["StackStatus"] == status
    assert before <= int(reply["Data"]["DeleteStartedAt"]) <= int(time.time())


@pytest.mark.parametrize(
    "status",
    [
        "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",  # the resource left the template (or its logical id changed)
        "UPDATE_ROLLBACK_IN_PROGRESS",  # an update that added it failed
        "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
    ],
)
def test_delete_during_an_update_leaves_the_live_cluster_alone(world: World, status: str) -> None:
    reply = handler.on_event(
        cfn_event("Delete", properties(world.vpc), physical_id=f"{CLUSTER}-teardown"),
        None,
        cloudformation=FakeCloudFormation(status),
    )
    assert reply["Data"]["Mode"] == "skip"
    event = {**cfn_event("Delete", properties(world.vpc), f"{CLUSTER}-teardown"), "Data": reply["Data"]}
    # Even long after the grace period: a skipped Delete never looks at the account.
    event["Data"]["DeleteStartedAt"] = str(int(time.time()) - 10 * GIVE_UP)
    assert handler.is_complete(event, None, ec2=NoCalls(), elbv2=NoCalls()) == {"IsComplete": True}
    assert all(world.state(i) == "running" for i in world.ours)
    assert world.lb in world.lbs()


# ---------------------------------------------------------------------- the wait and the fallback


def test_within_the_grace_period_it_only_waits_then_completes_when_the_controllers_are_done(
    world: World,
) -> None:
    ec2, elbv2 = Proxy(world.ec2, {}), Proxy(world.elbv2, {})
    assert run(world, elapsed=0, ec2=ec2, elbv2=elbv2) == {"IsComplete": False}
    assert run(world, elapsed=GRACE - 1, ec2=ec2, elbv2=elbv2) == {"IsComplete": False}
    assert ec2.calls == [] and elbv2.calls == []  # nothing terminated or deleted while waiting
    assert all(world.state(i) == "running" for i in world.ours)

    world.karpenter_gone()  # Karpenter drained and terminated its nodes, the controller removed the NLB
    assert run(world, elapsed=GRACE - 1, ec2=ec2, elbv2=elbv2) == {"IsComplete": True}
    assert ec2.calls == [] and elbv2.calls == []
    world.assert_spared()


def test_after_the_grace_period_it_terminates_and_deletes_only_this_clusters_resources(world: World) -> None:
    polls = until_complete(world, elapsed=GRACE)
    # 1: terminate + delete the NLB; 2: target group and security groups (the NLB held them); 3: all gone.
    assert polls == 3
    assert {world.state(i) for i in world.ours} == {"terminated"}
    assert world.lb not in world.lbs() and world.tg not in world.tgs()
    assert not {world.frontend_sg, world.backend_sg} & world.sgs()
    # The nodes' rule from the backend group is revoked (it would block the group's deletion); theirs stays.
    assert world.node_rules() == [
        {
            "IpProtocol": "tcp",
            "FromPort": 443,
            "ToPort": 443,
            "UserIdGroupPairs": [{"UserId": "123456789012", "GroupId": world.node_sg}],
            "IpRanges": [],
            "Ipv6Ranges": [],
            "PrefixListIds": [],
        }
    ]
    world.assert_spared()


def test_stopped_instances_are_terminated_too(world: World) -> None:
    world.ec2.stop_instances(InstanceIds=world.ours[:1])
    assert world.state(world.ours[0]) == "stopped"  # still holds its EBS volumes and ENI
    until_complete(world, elapsed=GRACE)
    assert {world.state(i) for i in world.ours} == {"terminated"}


def test_shutting_down_instances_are_waited_for_not_terminated_again() -> None:
    class Ec2:
        def __init__(self) -> None:
            self.terminated: list[str] = []

        def get_paginator(self, name: str) -> Any:
            pages = {
                "describe_instances": [
                    {
                        "Reservations": [
                            {"Instances": [{"InstanceId": "i-1", "State": {"Name": "shutting-down"}}]}
                        ]
                    }
                ],
                "describe_security_groups": [{"SecurityGroups": []}],
            }[name]
            return type("P", (), {"paginate": lambda self, **kw: pages})()

        def terminate_instances(self, InstanceIds: list[str]) -> None:
            self.terminated.extend(InstanceIds)

    class Elbv2:
        def get_paginator(self, name: str) -> Any:
            key = {"describe_load_balancers": "LoadBalancers", "describe_target_groups": "TargetGroups"}[name]
            return type("P", (), {"paginate": lambda self, **kw: [{key: []}]})()

    ec2 = Ec2()
    cleanup = handler.ClusterCleanup(ec2, Elbv2(), cluster_name=CLUSTER, vpc_id="vpc-1")
    left = cleanup.poll(act=True)
    assert left.instances == {"i-1": "shutting-down"} and not left.empty  # billing stops only at terminated
    assert ec2.terminated == []


def test_it_gives_up_with_a_reason_that_names_what_is_left(world: World) -> None:
    # Termination that never takes (e.g. an SCP denies it): the Delete must fail loudly, not hang or pass.
    class Sticky(Proxy):
        def __getattr__(self, name: str) -> Any:
            if name == "terminate_instances":
                return lambda **kw: None
            return super().__getattr__(name)

    with pytest.raises(handler.TeardownIncomplete) as err:
        until_complete(world, elapsed=GIVE_UP, ec2=Sticky(world.ec2, {}))
    message = str(err.value)
    assert message.startswith(f"cluster {CLUSTER}: still there after {GIVE_UP} s: instances ")
    assert all(f"{i} (running)" in message for i in world.ours)
    assert "docs/runbook.md" in message


def test_the_reason_stays_within_cloudformations_response_limit() -> None:
    left = handler.Remaining(instances={f"i-{n:017x}": "running" for n in range(400)})
    summary = left.summary()
    assert len(summary) <= 1500 and summary.endswith(", ... (truncated)")
    assert summary.startswith("instances i-00000000000000000 (running), i-00000000000000001 (running)")
    assert handler.Remaining(load_balancers=["arn:1"]).summary() == "load balancers arn:1"


def test_before_the_deadline_it_keeps_polling(world: World) -> None:
    class Sticky(Proxy):
        def __getattr__(self, name: str) -> Any:
            return (lambda **kw: None) if name == "terminate_instances" else super().__getattr__(name)

    assert run(world, elapsed=GIVE_UP - 1, ec2=Sticky(world.ec2, {})) == {"IsComplete": False}


# ---------------------------------------------------------------------- dependencies, races, errors


def test_security_groups_held_by_nlb_interfaces_are_retried_on_the_next_poll(world: World) -> None:
    # NLB network interfaces outlive the NLB by minutes: DeleteSecurityGroup fails until they are gone.
    ec2 = Proxy(world.ec2, {"delete_security_group": ["DependencyViolation", "DependencyViolation"]})
    elbv2 = Proxy(world.elbv2, {"delete_target_group": ["ResourceInUse"]})
    assert run(world, elapsed=GRACE, ec2=ec2, elbv2=elbv2) == {"IsComplete": False}  # NLB deleted
    assert run(world, elapsed=GRACE, ec2=ec2, elbv2=elbv2) == {"IsComplete": False}  # all three refused
    assert world.tg in world.tgs() and {world.frontend_sg, world.backend_sg} <= world.sgs()
    assert until_complete(world, elapsed=GRACE, ec2=ec2, elbv2=elbv2) == 2
    assert world.tg not in world.tgs() and not {world.frontend_sg, world.backend_sg} & world.sgs()


def test_resources_someone_else_deleted_meanwhile_count_as_gone(world: World) -> None:
    ec2 = Proxy(world.ec2, {"terminate_instances": ["InvalidInstanceID.NotFound"]})
    elbv2 = Proxy(world.elbv2, {"delete_load_balancer": ["LoadBalancerNotFound"]})
    assert run(world, elapsed=GRACE, ec2=ec2, elbv2=elbv2) == {"IsComplete": False}
    assert [name for name, _ in ec2.calls] == ["terminate_instances"]
    assert [name for name, _ in elbv2.calls] == ["delete_load_balancer"]


def test_a_load_balancer_deleted_between_listing_and_tagging_is_skipped(world: World) -> None:
    class Racing(Proxy):
        """The controller deletes the NLB right after DescribeLoadBalancers listed it."""

        def __getattr__(self, name: str) -> Any:
            if name != "describe_tags":
                return super().__getattr__(name)

            def describe_tags(ResourceArns: list[str]) -> Any:
                if world.lb in ResourceArns:  # AWS answers LoadBalancerNotFound (moto still knows its tags)
                    if world.lb in world.lbs():
                        world.elbv2.delete_load_balancer(LoadBalancerArn=world.lb)
                    raise client_error("LoadBalancerNotFound", "DescribeTags")
                return self._client.describe_tags(ResourceArns=ResourceArns)

            return describe_tags

    cleanup = handler.ClusterCleanup(
        world.ec2, Racing(world.elbv2, {}), cluster_name=CLUSTER, vpc_id=world.vpc
    )
    assert cleanup.load_balancers() == []  # ours is gone, the others are not this cluster's
    assert cleanup.target_groups() == [world.tg]  # still read (the NLB's deletion leaves it)


def test_throttling_defers_to_the_next_poll_until_the_deadline(world: World) -> None:
    throttled = Proxy(world.ec2, {"terminate_instances": ["RequestLimitExceeded"]})
    assert run(world, elapsed=GRACE, ec2=throttled) == {"IsComplete": False}

    class Throttled(Proxy):
        def __getattr__(self, name: str) -> Any:
            if name == "get_paginator":
                raise client_error("Throttling", "DescribeInstances")
            return super().__getattr__(name)

    assert run(world, elapsed=GRACE, ec2=Throttled(world.ec2, {})) == {"IsComplete": False}
    with pytest.raises(ClientError, match="Throttling"):
        run(world, elapsed=GIVE_UP, ec2=Throttled(world.ec2, {}))


def test_idempotent_a_repeated_poll_after_completion_does_nothing(world: World) -> None:
    until_complete(world, elapsed=GRACE)
    ec2, elbv2 = Proxy(world.ec2, {}), Proxy(world.elbv2, {})
    for _ in range(2):
        assert run(world, elapsed=GRACE, ec2=ec2, elbv2=elbv2) == {"IsComplete": True}
    assert ec2.calls == [] and elbv2.calls == []
    world.assert_spared()


def test_deletion_protection_fails_the_delete_with_the_fix(world: World) -> None:
    elbv2 = Proxy(world.elbv2, {"delete_load_balancer": ["OperationNotPermitted"]})
    with pytest.raises(handler.TeardownIncomplete, match="deletion protection on") as err:
        run(world, elapsed=GRACE, elbv2=elbv2)
    assert f"--load-balancer-arn {world.lb}" in str(err.value)


@pytest.mark.parametrize("code", ["UnauthorizedOperation", "AccessDenied"])
def test_permission_errors_fail_at_once(world: World, code: str) -> None:
    with pytest.raises(ClientError, match=code):
        run(world, elapsed=GRACE, ec2=Proxy(world.ec2, {"terminate_instances": [code]}))


def test_many_load_balancer_resources_are_read_in_pages_of_twenty(world: World) -> None:
    for n in range(21):
        world.elbv2.create_target_group(
            Name=f"k8s-extra-{n}",
            Protocol="TCP",
            Port=5000,
            VpcId=world.vpc,
            TargetType="ip",
            Tags=lb_tags(CLUSTER, f"x:{n}"),
        )
    cleanup = handler.ClusterCleanup(world.ec2, world.elbv2, cluster_name=CLUSTER, vpc_id=world.vpc)
    assert len(cleanup.target_groups()) == 22
    until_complete(world, elapsed=GRACE)
    assert cleanup.target_groups() == []
    world.assert_spared()


def test_default_clients_come_from_the_lambda_environment(world: World) -> None:
    event = poll_event(world, elapsed=GRACE)
    replies = [handler.is_complete(event, None) for _ in range(3)]  # boto3.client("ec2"), ("elbv2")
    assert replies[-1] == {"IsComplete": True}
    assert {world.state(i) for i in world.ours} == {"terminated"}
