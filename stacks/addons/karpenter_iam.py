"""Karpenter controller permissions, statement for statement equal to Karpenter's official template.

Source: ``../shared/reference/karpenter-v1.14-getting-started-cloudformation.yaml`` (policies
NodeLifecyclePolicy, IAMIntegrationPolicy, EKSIntegrationPolicy, InterruptionPolicy, ZonalShiftPolicy,
ResourceDiscoveryPolicy). Same Sids, actions, resources and conditions; ``${AWS::Partition}``,
``${AWS::Region}`` and ``${AWS::AccountId}`` become the stack's pseudo parameters. Condition *keys* embed
the cluster name, so it must be a literal (CloudFormation cannot interpolate keys).
tests/addons/test_karpenter_iam.py compares the synthesized documents with the template itself.
"""

from __future__ import annotations

from aws_cdk import Aws, Token
from aws_cdk import aws_iam as iam

# NB: statement order and Sids follow the template; keep them equal when bumping Karpenter.


def _arn(service: str, resource: str, *, region: bool = True, account: str = "*") -> str:
    return f"arn:{Aws.PARTITION}:{service}:{Aws.REGION if region else ''}:{account}:{resource}"


def _ec2(resource: str, account: str = "*") -> str:
    return _arn("ec2", resource, account=account)


def node_lifecycle(cluster: str) -> iam.PolicyDocument:
    owned = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster}": "owned"}
    nodepool_res = {"aws:ResourceTag/karpenter.sh/nodepool": "*"}
    request_tags = {
        f"aws:RequestTag/kubernetes.io/cluster/{cluster}": "owned",
        "aws:RequestTag/eks:eks-cluster-name": cluster,
    }
    nodepool_req = {"aws:RequestTag/karpenter.sh/nodepool": "*"}
    tagged_resources = [
        _ec2(r)
        for r in (
            "fleet/*",
            "instance/*",
            "volume/*",
            "network-interface/*",
            "launch-template/*",
            "spot-instances-request/*",
        )
    ]
    return iam.PolicyDocument(
        minimize=False,
        statements=[
            iam.PolicyStatement(
                sid="AllowScopedEC2InstanceAccessActions",
                resources=[
                    _ec2("image/*", account=""),
                    _ec2("snapshot/*", account=""),
                    _ec2("security-group/*"),
                    _ec2("subnet/*"),
                    _ec2("capacity-reservation/*"),
                    _ec2("placement-group/*"),
                ],
                actions=["ec2:RunInstances", "ec2:CreateFleet"],
            ),
            iam.PolicyStatement(
                sid="AllowScopedEC2LaunchTemplateAccessActions",
                resources=[_ec2("launch-template/*")],
                actions=["ec2:RunInstances", "ec2:CreateFleet"],
                conditions={"StringEquals": owned, "StringLike": nodepool_res},
            ),
            iam.PolicyStatement(
                sid="AllowScopedEC2InstanceActionsWithTags",
                resources=tagged_resources,
                actions=["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
                conditions={"StringEquals": request_tags, "StringLike": nodepool_req},
            ),
            iam.PolicyStatement(
                sid="AllowScopedResourceCreationTagging",
                resources=tagged_resources,
                actions=["ec2:CreateTags"],
                conditions={
                    "StringEquals": {
                        **request_tags,
                        "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"],
                    },
                    "StringLike": nodepool_req,
                },
            ),
            iam.PolicyStatement(
                sid="AllowScopedResourceTagging",
                resources=[_ec2("instance/*")],
                actions=["ec2:CreateTags"],
                conditions={
                    "StringEquals": owned,
                    "StringLike": nodepool_res,
                    "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster},
                    "ForAllValues:StringEquals": {
                        "aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]
                    },
                },
            ),
            iam.PolicyStatement(
                sid="AllowScopedDeletion",
                resources=[_ec2("instance/*"), _ec2("launch-template/*")],
                actions=["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
                conditions={"StringEquals": owned, "StringLike": nodepool_res},
            ),
        ],
    )


def iam_integration(cluster: str, node_role_arn: str) -> iam.PolicyDocument:
    profiles = f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:instance-profile/*"
    res_owned = {
        f"aws:ResourceTag/kubernetes.io/cluster/{cluster}": "owned",
        "aws:ResourceTag/topology.kubernetes.io/region": Aws.REGION,
    }
    req_owned = {
        f"aws:RequestTag/kubernetes.io/cluster/{cluster}": "owned",
        "aws:RequestTag/eks:eks-cluster-name": cluster,
        "aws:RequestTag/topology.kubernetes.io/region": Aws.REGION,
    }
    return iam.PolicyDocument(
        minimize=False,
        statements=[
            iam.PolicyStatement(
                sid="AllowPassingInstanceRole",
                resources=[node_role_arn],
                actions=["iam:PassRole"],
                conditions={
                    "StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]}
                },
            ),
            iam.PolicyStatement(
                sid="AllowScopedInstanceProfileCreationActions",
                resources=[profiles],
                actions=["iam:CreateInstanceProfile"],
                conditions={
                    "StringEquals": req_owned,
                    "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            ),
            iam.PolicyStatement(
                sid="AllowScopedInstanceProfileTagActions",
                resources=[profiles],
                actions=["iam:TagInstanceProfile"],
                conditions={
                    "StringEquals": {**res_owned, **req_owned},
                    "StringLike": {
                        "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                        "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*",
                    },
                },
            ),
            iam.PolicyStatement(
                sid="AllowScopedInstanceProfileActions",
                resources=[profiles],
                actions=[
                    "iam:AddRoleToInstanceProfile",
                    "iam:RemoveRoleFromInstanceProfile",
                    "iam:DeleteInstanceProfile",
                ],
                conditions={
                    "StringEquals": res_owned,
                    "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"},
                },
            ),
        ],
    )


def eks_integration(cluster: str) -> iam.PolicyDocument:
    return iam.PolicyDocument(
        minimize=False,
        statements=[
            iam.PolicyStatement(
                sid="AllowAPIServerEndpointDiscovery",
                resources=[_arn("eks", f"cluster/{cluster}", account=Aws.ACCOUNT_ID)],
                actions=["eks:DescribeCluster"],
            )
        ],
    )


def interruption(queue_arn: str) -> iam.PolicyDocument:
    return iam.PolicyDocument(
        minimize=False,
        statements=[
            iam.PolicyStatement(
                sid="AllowInterruptionQueueActions",
                resources=[queue_arn],
                actions=["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
            )
        ],
    )


def zonal_shift(cluster: str) -> iam.PolicyDocument:
    return iam.PolicyDocument(
        minimize=False,
        statements=[
            iam.PolicyStatement(
                sid="AllowZonalShiftStatusReadOnly",
                resources=["*"],
                actions=["arc-zonal-shift:GetManagedResource"],
                conditions={
                    "StringEquals": {
                        "arc-zonal-shift:ResourceIdentifier": _arn(
                            "eks", f"cluster/{cluster}", account=Aws.ACCOUNT_ID
                        )
                    }
                },
            )
        ],
    )


def resource_discovery() -> iam.PolicyDocument:
    return iam.PolicyDocument(
        minimize=False,
        statements=[
            iam.PolicyStatement(
                sid="AllowRegionalReadActions",
                resources=["*"],
                actions=[
                    "ec2:DescribeCapacityReservations",
                    "ec2:DescribeImages",
                    "ec2:DescribeInstances",
                    "ec2:DescribeInstanceStatus",
                    "ec2:DescribeInstanceTypeOfferings",
                    "ec2:DescribeInstanceTypes",
                    "ec2:DescribeLaunchTemplates",
                    "ec2:DescribePlacementGroups",
                    "ec2:DescribeSecurityGroups",
                    "ec2:DescribeSpotPriceHistory",
                    "ec2:DescribeSubnets",
                ],
                conditions={"StringEquals": {"aws:RequestedRegion": Aws.REGION}},
            ),
            iam.PolicyStatement(
                sid="AllowSSMReadActions",
                resources=[f"arn:{Aws.PARTITION}:ssm:{Aws.REGION}::parameter/aws/service/*"],
                actions=["ssm:GetParameter"],
            ),
            iam.PolicyStatement(
                sid="AllowPricingReadActions", resources=["*"], actions=["pricing:GetProducts"]
            ),
            iam.PolicyStatement(
                sid="AllowUnscopedInstanceProfileListAction",
                resources=["*"],
                actions=["iam:ListInstanceProfiles"],
            ),
            iam.PolicyStatement(
                sid="AllowInstanceProfileReadActions",
                resources=[f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:instance-profile/*"],
                actions=["iam:GetInstanceProfile"],
            ),
        ],
    )


#: (construct id, template resource name) of the six controller policies, in template order.
POLICY_NAMES = (
    ("NodeLifecyclePolicy", "NodeLifecyclePolicy"),
    ("IamIntegrationPolicy", "IAMIntegrationPolicy"),
    ("EksIntegrationPolicy", "EKSIntegrationPolicy"),
    ("InterruptionPolicy", "InterruptionPolicy"),
    ("ZonalShiftPolicy", "ZonalShiftPolicy"),
    ("ResourceDiscoveryPolicy", "ResourceDiscoveryPolicy"),
)


#: Why each policy's wildcards are right (cdk-nag AwsSolutions-IAM5 acknowledgements).
WILDCARD_REASONS = {
    "NodeLifecyclePolicy": (
        "Karpenter launches, tags and terminates instances, fleets, volumes and launch templates whose IDs "
        "exist only at runtime; these are the official v1.14 template's resources, limited to this region "
        "and, where the API supports it, to resources tagged kubernetes.io/cluster/<name>=owned and "
        "karpenter.sh/nodepool (tests/addons/test_karpenter_iam.py pins equality with the template)"
    ),
    "IamIntegrationPolicy": (
        "Karpenter creates one instance profile per EC2NodeClass at runtime (name unknown in advance); "
        "create/tag/add-role/remove-role/delete are conditioned on the cluster, region and ec2nodeclass "
        "tags exactly as in the official v1.14 template"
    ),
    "ResourceDiscoveryPolicy": (
        "EC2 Describe* calls have no resource-level permissions (restricted to this region by "
        "aws:RequestedRegion), pricing:GetProducts and iam:ListInstanceProfiles have no resource type, "
        "SSM reads are limited to AWS's public /aws/service/* parameters (AMI IDs), GetInstanceProfile "
        "to this account: the official v1.14 template's discovery policy"
    ),
    "ZonalShiftPolicy": (
        "arc-zonal-shift:GetManagedResource has no resource type; the template's condition limits it to "
        "this cluster's ARN (arc-zonal-shift:ResourceIdentifier)"
    ),
}


def nag_form(value: str) -> str:
    """How cdk-nag prints a resource with pseudo parameters: ``arn:<AWS::Partition>:...``."""
    for token, name in (
        (Aws.PARTITION, "AWS::Partition"),
        (Aws.REGION, "AWS::Region"),
        (Aws.ACCOUNT_ID, "AWS::AccountId"),
    ):
        value = value.replace(token, f"<{name}>")
    return value


def wildcard_resources(document: iam.PolicyDocument) -> list[str]:
    """Resources with a ``*`` in ``document`` (cdk-nag form), each once, in statement order."""
    seen: list[str] = []
    for statement in document.to_json()["Statement"]:
        resources = statement.get("Resource", [])
        for resource in [resources] if isinstance(resources, str) else resources:
            if isinstance(resource, str) and "*" in resource and nag_form(resource) not in seen:
                seen.append(nag_form(resource))
    return seen


def controller_documents(
    cluster: str, *, node_role_arn: str, queue_arn: str
) -> dict[str, iam.PolicyDocument]:
    """The six policy documents keyed by construct id. ``cluster`` must be a literal name."""
    if Token.is_unresolved(cluster):
        raise ValueError("Karpenter's IAM condition keys embed the cluster name: pass the literal name")
    return {
        "NodeLifecyclePolicy": node_lifecycle(cluster),
        "IamIntegrationPolicy": iam_integration(cluster, node_role_arn),
        "EksIntegrationPolicy": eks_integration(cluster),
        "InterruptionPolicy": interruption(queue_arn),
        "ZonalShiftPolicy": zonal_shift(cluster),
        "ResourceDiscoveryPolicy": resource_discovery(),
    }
