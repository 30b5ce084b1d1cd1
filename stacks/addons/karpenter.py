"""Karpenter: controller (Helm), its IAM, the node role, interruption handling and the NodePools.

Everything here mirrors Karpenter's official getting-started template for v1.14
(``../shared/reference/karpenter-v1.14-getting-started-cloudformation.yaml``), expressed in CDK:

* controller role through EKS Pod Identity with the template's six policies (``karpenter_iam``);
* node role with the template's four managed policies and an ``EC2_LINUX`` access entry;
* interruption queue (SSE, 300 s retention, the template's queue policy) and five EventBridge rules;
* Helm releases ``karpenter-crd`` (owns the CRDs) and ``karpenter`` from ``oci://public.ecr.aws/karpenter``;
* EC2NodeClass + NodePools (``charts/karpenter.py``) applied after the controller, so that on
  ``cdk destroy`` they are deleted while Karpenter still runs and can terminate the nodes it launched;
* the pinned AMI release checked at deploy time (``PinnedAmis``: SSM-typed CloudFormation parameters).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import jsii
from aws_cdk import CfnOutput, CfnParameter, Duration
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from charts.karpenter import GpuNodePoolProps, KarpenterNodePools, KarpenterNodePoolsProps
from config.addons import AddonsConfig, KarpenterConfig
from config.versions import al2023_ami_parameter
from stacks.addons import karpenter_iam
from stacks.addons.contract import AddonContext, ClusterAddon, HelmRelease
from stacks.addons.pod_identity import PodIdentityRole
from stacks.common import acknowledge, managed_policy_finding

if TYPE_CHECKING:  # pragma: no cover - typing only
    from aws_cdk.interfaces.aws_events import IRuleRef

OCI_REPOSITORY = "oci://public.ecr.aws/karpenter"
SERVICE_ACCOUNT = "karpenter"
#: The template's node role policies, each with why it is acknowledged (cdk-nag AwsSolutions-IAM4).
NODE_MANAGED_POLICIES = {
    "AmazonEKS_CNI_Policy": (
        "the vpc-cni add-on on Karpenter's nodes assigns pod IPs from the private subnets with the node "
        "role; AWS keeps the policy in step with the CNI's ENI calls (official Karpenter template)"
    ),
    "AmazonEKSWorkerNodePolicy": (
        "kubelet on Karpenter's nodes describes the cluster and registers the node (official template)"
    ),
    "AmazonEC2ContainerRegistryPullOnly": (
        "GPU nodes pull the model-server image from ECR: pull only, narrower than ReadOnly (template)"
    ),
    "AmazonSSMManagedInstanceCore": (
        "operators reach GPU nodes through SSM Session Manager (audited, no SSH keys, no open port 22)"
    ),
}

#: EventBridge rules of the template: construct id -> (source, detail-type). Exact strings matter: a
#: misspelt detail-type is accepted by EventBridge and simply never matches.
INTERRUPTION_RULES: dict[str, tuple[str, str]] = {
    "ScheduledChangeRule": ("aws.health", "AWS Health Event"),
    "SpotInterruptionRule": ("aws.ec2", "EC2 Spot Instance Interruption Warning"),
    "RebalanceRule": ("aws.ec2", "EC2 Instance Rebalance Recommendation"),
    "InstanceStateChangeRule": ("aws.ec2", "EC2 Instance State-change Notification"),
    "CapacityReservationInterruptionRule": (
        "aws.ec2",
        "EC2 Capacity Reservation Instance Interruption Warning",
    ),
}


@jsii.implements(events.IRuleTarget)
class _QueueTarget:
    """Rule target that only names the queue: the queue policy is the template's (no per-rule grants)."""

    def __init__(self, queue: sqs.IQueue) -> None:
        self._queue = queue

    def bind(self, _rule: IRuleRef, _id: str | None = None) -> events.RuleTargetConfig:
        return events.RuleTargetConfig(arn=self._queue.queue_arn)


class InterruptionQueue(Construct):
    """SQS queue Karpenter polls for spot interruptions, rebalance, health and state-change events."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.queue = sqs.Queue(
            self,
            "Queue",
            retention_period=Duration.seconds(300),
            encryption=sqs.QueueEncryption.SQS_MANAGED,
        )
        acknowledge(
            self.queue,
            "AwsSolutions-SQS3",
            "interruption events are advisory and stale after minutes (300 s retention, as in Karpenter's "
            "official template); a dead-letter queue would keep events nobody acts on",
        )
        self.queue.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[
                    iam.ServicePrincipal("events.amazonaws.com"),
                    iam.ServicePrincipal("sqs.amazonaws.com"),
                ],
                actions=["sqs:SendMessage"],
                resources=[self.queue.queue_arn],
            )
        )
        self.queue.add_to_resource_policy(
            iam.PolicyStatement(
                sid="DenyHTTP",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["sqs:*"],
                resources=[self.queue.queue_arn],
                conditions={"Bool": {"aws:SecureTransport": "false"}},
            )
        )
        self.rules: dict[str, events.Rule] = {}
        for rule_id, (source, detail_type) in INTERRUPTION_RULES.items():
            self.rules[rule_id] = events.Rule(
                self,
                rule_id,
                description=f"Karpenter interruption handling: {detail_type}",
                event_pattern=events.EventPattern(source=[source], detail_type=[detail_type]),
                targets=[_QueueTarget(self.queue)],
            )


class PinnedAmis(Construct):
    """Deploy-time proof that the pinned AMI release exists: one CloudFormation parameter per image the
    NodePools use, of type ``AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>`` on the public SSM parameter
    that Karpenter's ``al2023@<release>`` alias resolves. A release that does not exist for this Kubernetes
    version fails the stack's change set before anything is created (instead of an EC2NodeClass that never
    becomes Ready); the outputs show the AMI ids Karpenter will launch.
    """

    #: Construct id -> (image variant, which nodes use it).
    IMAGES: ClassVar[dict[str, tuple[str, str]]] = {
        "GpuAmi": ("nvidia", "GPU NodePool"),
        "StandardAmi": ("standard", "general-purpose NodePool"),
    }

    def __init__(
        self, scope: Construct, construct_id: str, *, kubernetes_version: str, release: str, general: bool
    ) -> None:
        super().__init__(scope, construct_id)
        self.parameters: dict[str, CfnParameter] = {}
        for cid, (variant, nodes) in self.IMAGES.items():
            if variant == "standard" and not general:
                continue
            path = al2023_ami_parameter(kubernetes_version, "x86_64", variant, release)
            self.parameters[cid] = CfnParameter(
                self,
                cid,
                type="AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>",
                default=path,
                description=f"AMI of Karpenter's {nodes}: AL2023 {variant} release {release} for Kubernetes "
                f"{kubernetes_version} (the deploy fails here if that release does not exist)",
            )
            CfnOutput(
                self,
                f"{cid}Id",
                value=self.parameters[cid].value_as_string,
                description=f"AMI id of Karpenter's {nodes} (al2023@{release}, {variant}, x86_64)",
            )


class KarpenterNodeRole(Construct):
    """Role of the instances Karpenter launches (the template's KarpenterNodeRole) and its access entry.

    EKS does not create access entries for roles outside managed nodegroups, so this one is explicit:
    type ``EC2_LINUX`` (EKS maps it to ``system:node:{{EC2PrivateDNSName}}`` in ``system:nodes``).
    """

    def __init__(self, scope: Construct, construct_id: str, *, cluster: eks.Cluster) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("ec2.amazonaws.com"),
            description="Nodes launched by Karpenter: kubelet, VPC CNI, ECR pulls, SSM Session Manager",
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(p) for p in NODE_MANAGED_POLICIES
            ],
        )
        for policy, reason in NODE_MANAGED_POLICIES.items():
            acknowledge(self.role, managed_policy_finding(policy), reason)
        self.access_entry = eks.AccessEntry(
            self,
            "AccessEntry",
            cluster=cluster,
            principal=self.role.role_arn,
            access_entry_type=eks.AccessEntryType.EC2_LINUX,
            access_policies=[],
        )


class KarpenterController(Construct):
    """Controller identity (Pod Identity + the six template policies) and the two Helm releases."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        ctx: AddonContext,
        config: KarpenterConfig,
        node_role: iam.IRole,
        queue: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        self.identity = PodIdentityRole(
            self,
            "Identity",
            cluster=ctx.cluster,
            namespace=config.namespace,
            service_account=SERVICE_ACCOUNT,
            description=f"Karpenter controller of EKS cluster {ctx.cluster_name}",
        )
        docs = karpenter_iam.controller_documents(
            ctx.cluster_name, node_role_arn=node_role.role_arn, queue_arn=queue.queue_arn
        )
        self.policies = {
            cid: iam.ManagedPolicy(
                self,
                cid,
                document=doc,
                description=f"Karpenter controller ({template_name} of the official template)",
                roles=[self.identity.role],
            )
            for (cid, template_name), doc in zip(karpenter_iam.POLICY_NAMES, docs.values(), strict=True)
        }
        for cid, doc in docs.items():
            for resource in karpenter_iam.wildcard_resources(doc):
                acknowledge(
                    self.policies[cid],
                    f"AwsSolutions-IAM5[Resource::{resource}]",
                    karpenter_iam.WILDCARD_REASONS[cid],
                )
        crd_release = HelmRelease(
            chart="karpenter-crd",
            repository=f"{OCI_REPOSITORY}/karpenter-crd",
            version=config.version,
            namespace=config.namespace,
            release="karpenter-crd",
            # CRDs only, no pods to wait for.
            timeout=Duration.minutes(3),
        )
        controller_release = HelmRelease(
            chart="karpenter",
            repository=f"{OCI_REPOSITORY}/karpenter",
            version=config.version,
            namespace=config.namespace,
            release="karpenter",
            # Two replicas on the system nodes; image pulls from public ECR.
            timeout=Duration.minutes(5),
        )
        # One owner of the CRDs: karpenter-crd ships them as templates, so every `helm upgrade` of it
        # updates them (and its uninstall removes them, after the controller). The controller chart also
        # carries them in its crds/ folder, and the kubectl handler cannot skip that folder (aws-eks-v2
        # reads HelmChart's skipCrds but never passes --skip-crds to Helm). It does not need to: Helm
        # creates a crds/ folder only on install and skips every CRD that already exists, and never
        # touches it on upgrade. Installing karpenter-crd first (the dependency below) makes the
        # controller's copy a no-op on every deploy.
        self.crds = crd_release.install(self, "CrdChart", ctx.cluster, values={})
        self.chart = controller_release.install(
            self,
            "Chart",
            ctx.cluster,
            values={
                "settings": {
                    "clusterName": ctx.cluster_name,
                    "interruptionQueue": queue.queue_name,
                },
                "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
                "replicas": 2,
                "nodeSelector": dict(ctx.system_node_selector),
                "controller": {
                    "resources": {
                        "requests": {"cpu": "500m", "memory": "512Mi"},
                        "limits": {"memory": "1Gi"},
                    }
                },
            },
        )
        self.chart.node.add_dependency(self.crds)
        # The controller must be able to act from its first start: identity, policies, queue, rules.
        self.chart.node.add_dependency(self.identity)
        for policy in self.policies.values():
            self.chart.node.add_dependency(policy)


class KarpenterAddon(ClusterAddon):
    """Karpenter as the GPU capacity provider (``compute.gpuCapacity: karpenter``)."""

    name = "karpenter"

    def enabled(self, config: AddonsConfig) -> bool:
        return config.karpenter.enabled

    def deploy(self, scope: Construct, ctx: AddonContext) -> Construct:
        cfg = ctx.config.karpenter
        root = Construct(scope, "Karpenter")
        node_role = KarpenterNodeRole(root, "NodeRole", cluster=ctx.cluster)
        interruption = InterruptionQueue(root, "Interruption")
        controller = KarpenterController(
            root, "Controller", ctx=ctx, config=cfg, node_role=node_role.role, queue=interruption.queue
        )
        controller.chart.node.add_dependency(interruption)
        self.amis = PinnedAmis(
            root,
            "Amis",
            kubernetes_version=ctx.kubernetes_version,
            release=cfg.ami_version,
            general=cfg.general_purpose_pool,
        )

        chart = KarpenterNodePools(
            ctx.cdk8s_app,
            "KarpenterNodePools",
            props=KarpenterNodePoolsProps(
                cluster_name=ctx.cluster_name,
                node_role_name=node_role.role.role_name,
                ami_alias=cfg.ami_alias,
                root_volume_gib=cfg.root_volume_gib,
                tags=dict(ctx.tags),
                gpu=GpuNodePoolProps(
                    instance_families=cfg.gpu_instance_families,
                    capacity_types=cfg.capacity_types,
                    consolidation_policy=cfg.consolidation_policy,
                    consolidate_after=cfg.consolidate_after,
                    expire_after=cfg.expire_after,
                    termination_grace_period=cfg.termination_grace_period,
                    disruption_budget=cfg.disruption_budget,
                    gpu_limit=cfg.gpu_limit,
                    cpu_limit=cfg.cpu_limit,
                ),
                general_purpose_cpu_limit=cfg.general_purpose_cpu_limit if cfg.general_purpose_pool else None,
            ),
        )
        self.node_pools = eks.KubernetesManifest(
            root,
            "NodePools",
            cluster=ctx.cluster,
            manifest=chart.to_json(),
            # Karpenter's CRDs validate (CEL) server-side; kubectl's client-side check adds nothing.
            skip_validation=True,
        )
        # Create after, and on destroy delete before, the controller: deleting a NodePool makes the
        # running controller drain and terminate its nodes; the access entry must outlive those nodes.
        self.node_pools.node.add_dependency(controller.chart)
        self.node_pools.node.add_dependency(node_role.access_entry)

        self.node_role = node_role
        self.interruption = interruption
        self.controller = controller
        self.chart = chart
        return root
