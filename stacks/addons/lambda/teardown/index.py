"""Destroy-time cleanup of what the cluster's controllers created outside CloudFormation.

Two handlers for the CDK custom-resource Provider framework (``stacks/addons/teardown.py``):

* ``on_event``: Create and Update do nothing (stable physical id). Delete records when the deletion began
  and whether the whole stack is being deleted (``DELETE_IN_PROGRESS``, or ``ROLLBACK_IN_PROGRESS`` of a
  failed first deploy). Any other Delete (the resource removed or replaced by a stack update, or an update
  rolled back) skips the cleanup: the cluster lives on, and its nodes and load balancers with it.
* ``is_complete``: polled by the framework until it returns ``IsComplete: true``. During the grace period it
  only observes, so Karpenter (NodePools deleted) and the AWS Load Balancer Controller (Service deleted)
  can finish their own cleanup. After it, it terminates this cluster's Karpenter instances and deletes this
  cluster's load balancers, then their target groups and security groups. It completes when none are
  left, and fails with the list of what is left at the give-up deadline (before the framework's own
  timeout, so CloudFormation shows a reason that names the resources).

Scope: only resources tagged for THIS cluster. Instances: ``kubernetes.io/cluster/<name>=owned`` and a
``karpenter.sh/nodepool`` tag (what Karpenter 1.x tags every instance with, and what its own IAM policy
conditions deletion on). Load balancers, target groups, security groups: ``elbv2.k8s.aws/cluster=<name>``
(the AWS Load Balancer Controller's tracking tag) and in this cluster's VPC.

Only boto3 (in the Lambda runtime). Every call is idempotent: each poll re-reads the state from AWS.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import ClientError

LOG = logging.getLogger()
LOG.setLevel(logging.INFO)

#: Karpenter 1.x: every instance it launches carries the NodePool's name under this key.
NODEPOOL_TAG = "karpenter.sh/nodepool"
#: AWS Load Balancer Controller: every load balancer, target group and security group it creates.
LB_CLUSTER_TAG = "elbv2.k8s.aws/cluster"

#: Instance states that still bill (or hold ENIs in the VPC); ``terminated`` is the only end state.
LIVE_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")
#: Live states in which TerminateInstances still has something to do.
TERMINABLE_STATES = ("pending", "running", "stopping", "stopped")
#: Stack statuses in which a Delete means the whole stack goes (so the cluster's capacity must go too).
STACK_TEARDOWN_STATUSES = ("DELETE_IN_PROGRESS", "ROLLBACK_IN_PROGRESS")

#: Errors that the next poll may clear: dependencies still being released (NLB ENIs, listeners), throttling.
RETRY_LATER = frozenset(
    {
        "DependencyViolation",
        "ResourceInUse",
        "IncorrectInstanceState",
        "RequestLimitExceeded",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
    }
)
#: Errors that mean the resource is already gone (someone else finished first).
ALREADY_GONE = frozenset(
    {
        "InvalidInstanceID.NotFound",
        "LoadBalancerNotFound",
        "TargetGroupNotFound",
        "InvalidGroup.NotFound",
        "InvalidGroupId.NotFound",
        "InvalidPermission.NotFound",
        "InvalidSecurityGroupRuleId.NotFound",
    }
)

SKIP, CLEANUP = "skip", "cleanup"


class TeardownIncomplete(Exception):
    """Raised at the give-up deadline: CloudFormation reports the message as the Delete's failure reason."""


@dataclass(frozen=True)
class Settings:
    """The custom resource's properties (CloudFormation passes every value as a string)."""

    cluster_name: str
    vpc_id: str
    grace_period_s: int
    give_up_after_s: int

    @classmethod
    def from_properties(cls, props: dict[str, Any]) -> Settings:
        required = ("ClusterName", "VpcId", "GracePeriodSeconds", "GiveUpAfterSeconds")
        missing = [k for k in required if k not in props]
        if missing:
            raise ValueError(f"teardown: missing properties {missing}")
        settings = cls(
            cluster_name=str(props["ClusterName"]),
            vpc_id=str(props["VpcId"]),
            grace_period_s=int(props["GracePeriodSeconds"]),
            give_up_after_s=int(props["GiveUpAfterSeconds"]),
        )
        if not settings.cluster_name or not settings.vpc_id.startswith("vpc-"):
            raise ValueError(f"teardown: ClusterName must be set and VpcId a VPC id, got {props}")
        if not 0 <= settings.grace_period_s < settings.give_up_after_s:
            raise ValueError(
                f"teardown: need 0 <= GracePeriodSeconds < GiveUpAfterSeconds, got {settings.grace_period_s}"
                f" and {settings.give_up_after_s}"
            )
        return settings


@dataclass
class Remaining:
    """What of this cluster is still there (ids and ARNs), as read at the start of one poll."""

    instances: dict[str, str] = field(default_factory=dict)  # instance id -> state
    load_balancers: list[str] = field(default_factory=list)
    target_groups: list[str] = field(default_factory=list)
    security_groups: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.instances or self.load_balancers or self.target_groups or self.security_groups)

    def summary(self, limit: int = 1500) -> str:
        """One line for logs and the failure reason (CloudFormation takes at most 4 KB per response)."""
        parts = []
        if self.instances:
            parts.append("instances " + ", ".join(f"{i} ({s})" for i, s in sorted(self.instances.items())))
        for label, items in (
            ("load balancers", self.load_balancers),
            ("target groups", self.target_groups),
            ("security groups", self.security_groups),
        ):
            if items:
                parts.append(f"{label} " + ", ".join(sorted(items)))
        text = "; ".join(parts) or "nothing"
        return text if len(text) <= limit else text[: limit - 20].rsplit(",", 1)[0] + ", ... (truncated)"


def _code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ClusterCleanup:
    """Finds and removes one cluster's Karpenter instances and load-balancer resources.

    ``ec2`` and ``elbv2`` are boto3 clients of the cluster's region.
    """

    def __init__(self, ec2: Any, elbv2: Any, *, cluster_name: str, vpc_id: str) -> None:
        self.ec2 = ec2
        self.elbv2 = elbv2
        self.cluster_name = cluster_name
        self.vpc_id = vpc_id

    # ------------------------------------------------------------------ what is there

    def karpenter_instances(self) -> dict[str, str]:
        """Live instances Karpenter launched for this cluster: id -> state."""
        filters = [
            {"Name": f"tag:kubernetes.io/cluster/{self.cluster_name}", "Values": ["owned"]},
            {"Name": "tag-key", "Values": [NODEPOOL_TAG]},
            {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
        ]
        found = {}
        for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page["Reservations"]:
                for instance in reservation["Instances"]:
                    found[instance["InstanceId"]] = instance["State"]["Name"]
        return found

    def _tagged_for_cluster(self, arns: list[str]) -> list[str]:
        tagged = []
        for chunk in _chunks(arns, 20):  # DescribeTags takes at most 20 ARNs
            for desc in self._describe_tags(chunk):
                tags = {t["Key"]: t["Value"] for t in desc.get("Tags", [])}
                if tags.get(LB_CLUSTER_TAG) == self.cluster_name:
                    tagged.append(desc["ResourceArn"])
        return tagged

    def _describe_tags(self, arns: list[str]) -> list[dict[str, Any]]:
        """Tags of ``arns``; one deleted since it was listed (the controller is still at work) is skipped."""
        try:
            return list(self.elbv2.describe_tags(ResourceArns=arns)["TagDescriptions"])
        except ClientError as err:
            if _code(err) not in ALREADY_GONE:
                raise
        found = []
        for arn in arns:  # one by one, to tell the gone from the rest
            try:
                found += self.elbv2.describe_tags(ResourceArns=[arn])["TagDescriptions"]
            except ClientError as err:
                if _code(err) not in ALREADY_GONE:
                    raise
        return found

    def load_balancers(self) -> list[str]:
        """ARNs of this cluster's load balancers (controller tag) in its VPC."""
        arns = [
            lb["LoadBalancerArn"]
            for page in self.elbv2.get_paginator("describe_load_balancers").paginate()
            for lb in page["LoadBalancers"]
            if lb.get("VpcId") == self.vpc_id
        ]
        return self._tagged_for_cluster(arns)

    def target_groups(self) -> list[str]:
        """ARNs of this cluster's target groups (controller tag) in its VPC."""
        arns = [
            tg["TargetGroupArn"]
            for page in self.elbv2.get_paginator("describe_target_groups").paginate()
            for tg in page["TargetGroups"]
            if tg.get("VpcId") == self.vpc_id
        ]
        return self._tagged_for_cluster(arns)

    def security_groups(self) -> list[str]:
        """Ids of the security groups the controller created for this cluster (front-end and backend)."""
        filters = [
            {"Name": "vpc-id", "Values": [self.vpc_id]},
            {"Name": f"tag:{LB_CLUSTER_TAG}", "Values": [self.cluster_name]},
        ]
        return [
            sg["GroupId"]
            for page in self.ec2.get_paginator("describe_security_groups").paginate(Filters=filters)
            for sg in page["SecurityGroups"]
        ]

    def remaining(self) -> Remaining:
        return Remaining(
            instances=self.karpenter_instances(),
            load_balancers=self.load_balancers(),
            target_groups=self.target_groups(),
            security_groups=self.security_groups(),
        )

    # ------------------------------------------------------------------ removing it

    def poll(self, *, act: bool) -> Remaining:
        """Read what is left; when ``act``, remove it. Returns what was there at the start of the poll.

        Order within one poll: instances and load balancers first; target groups only once no load balancer
        is left (a listener holds them); security groups after their rules in other groups that reference
        them are revoked (the nodes' groups allow traffic from the controller's backend group). Whatever is
        still held by a dependency (NLB network interfaces are released a few minutes after the NLB) stays
        for the next poll.
        """
        left = self.remaining()
        if left.empty or not act:
            return left
        terminable = sorted(i for i, state in left.instances.items() if state in TERMINABLE_STATES)
        if terminable:
            self._call("terminate instances", terminable, self._terminate, terminable)
        for arn in left.load_balancers:
            self._call("delete load balancer", arn, self._delete_load_balancer, arn)
        if not left.load_balancers:
            for arn in left.target_groups:
                self._call("delete target group", arn, self.elbv2.delete_target_group, TargetGroupArn=arn)
            for group_id in left.security_groups:
                self._call("revoke references to", group_id, self._revoke_references, group_id)
                delete = self.ec2.delete_security_group
                self._call("delete security group", group_id, delete, GroupId=group_id)
        return left

    def _terminate(self, instance_ids: list[str]) -> None:
        for chunk in _chunks(instance_ids, 500):
            self.ec2.terminate_instances(InstanceIds=chunk)

    def _delete_load_balancer(self, arn: str) -> None:
        try:
            self.elbv2.delete_load_balancer(LoadBalancerArn=arn)
        except ClientError as err:
            if _code(err) == "OperationNotPermitted":
                raise TeardownIncomplete(
                    f"load balancer {arn} has deletion protection on; turn it off (aws elbv2 "
                    f"modify-load-balancer-attributes --load-balancer-arn {arn} --attributes "
                    "Key=deletion_protection.enabled,Value=false) and retry the destroy"
                ) from err
            raise

    def _revoke_references(self, group_id: str) -> None:
        """Revoke every rule of another group in the VPC that names ``group_id`` as source or destination."""
        pages = self.ec2.get_paginator("describe_security_groups").paginate(
            Filters=[{"Name": "vpc-id", "Values": [self.vpc_id]}]
        )
        for page in pages:
            for other in page["SecurityGroups"]:
                if other["GroupId"] == group_id:
                    continue
                for key, revoke in (
                    ("IpPermissions", self.ec2.revoke_security_group_ingress),
                    ("IpPermissionsEgress", self.ec2.revoke_security_group_egress),
                ):
                    referencing = list(_rules_referencing(other.get(key, []), group_id))
                    if referencing:
                        LOG.info("revoking %s of %s that reference %s", key, other["GroupId"], group_id)
                        revoke(GroupId=other["GroupId"], IpPermissions=referencing)

    def _call(self, what: str, target: Any, fn: Any, *args: Any, **kwargs: Any) -> None:
        LOG.info("%s %s", what, target)
        try:
            fn(*args, **kwargs)
        except ClientError as err:
            code = _code(err)
            if code in ALREADY_GONE:
                LOG.info("%s %s: already gone (%s)", what, target, code)
            elif code in RETRY_LATER:
                LOG.info("%s %s: not yet (%s), next poll", what, target, code)
            else:
                raise


def _rules_referencing(permissions: Iterable[dict[str, Any]], group_id: str) -> Iterator[dict[str, Any]]:
    """The parts of ``permissions`` whose source/destination is ``group_id`` (as revoke parameters)."""
    for perm in permissions:
        pairs = [p for p in perm.get("UserIdGroupPairs", []) if p.get("GroupId") == group_id]
        if pairs:
            rule: dict[str, Any] = {k: perm[k] for k in ("IpProtocol", "FromPort", "ToPort") if k in perm}
            rule["UserIdGroupPairs"] = [{"GroupId": group_id, **_owner(p)} for p in pairs]
            yield rule


def _owner(pair: dict[str, Any]) -> dict[str, str]:
    return {"UserId": pair["UserId"]} if pair.get("UserId") else {}


# ---------------------------------------------------------------------- Provider framework handlers


def stack_status(cloudformation: Any, stack_id: str) -> str:
    return str(cloudformation.describe_stacks(StackName=stack_id)["Stacks"][0]["StackStatus"])


def on_event(event: dict[str, Any], _context: Any = None, *, cloudformation: Any = None) -> dict[str, Any]:
    """Create/Update: nothing but a stable physical id. Delete: decide whether to clean up, note the start."""
    request = event["RequestType"]
    settings = Settings.from_properties(event["ResourceProperties"])
    LOG.info("%s for cluster %s", request, settings.cluster_name)
    if request == "Create":
        return {"PhysicalResourceId": f"{settings.cluster_name}-teardown"}
    physical_id = event["PhysicalResourceId"]
    if request == "Update":
        return {"PhysicalResourceId": physical_id}
    if request != "Delete":
        raise ValueError(f"teardown: unknown RequestType {request!r}")
    cloudformation = cloudformation or boto3.client("cloudformation")
    status = stack_status(cloudformation, event["StackId"])
    mode = CLEANUP if status in STACK_TEARDOWN_STATUSES else SKIP
    LOG.info("stack status %s: %s", status, mode)
    return {
        "PhysicalResourceId": physical_id,
        "Data": {"Mode": mode, "StackStatus": status, "DeleteStartedAt": str(int(time.time()))},
    }


def is_complete(
    event: dict[str, Any], _context: Any = None, *, ec2: Any = None, elbv2: Any = None
) -> dict[str, Any]:
    """One poll: complete when nothing of the cluster is left (or nothing is to be done)."""
    data = event.get("Data") or {}
    if event["RequestType"] != "Delete" or data.get("Mode") != CLEANUP:
        return {"IsComplete": True}
    settings = Settings.from_properties(event["ResourceProperties"])
    elapsed = int(time.time()) - int(data["DeleteStartedAt"])
    act = elapsed >= settings.grace_period_s
    cleanup = ClusterCleanup(
        ec2 or boto3.client("ec2"),
        elbv2 or boto3.client("elbv2"),
        cluster_name=settings.cluster_name,
        vpc_id=settings.vpc_id,
    )
    try:
        left = cleanup.poll(act=act)
    except ClientError as err:
        if _code(err) not in RETRY_LATER or elapsed >= settings.give_up_after_s:
            raise
        LOG.info("poll interrupted (%s), next poll", _code(err))  # throttled: the next poll reads again
        return {"IsComplete": False}
    LOG.info(
        json.dumps({"elapsedSeconds": elapsed, "acting": act, "left": left.summary(), "done": left.empty})
    )
    if left.empty:
        return {"IsComplete": True}
    if elapsed >= settings.give_up_after_s:
        raise TeardownIncomplete(
            f"cluster {settings.cluster_name}: still there after {elapsed} s: {left.summary()}. "
            "Remove them by hand (docs/runbook.md, Tear down), then retry the destroy."
        )
    return {"IsComplete": False}
