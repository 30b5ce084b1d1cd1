"""One EKS managed nodegroup with its own launch template (IMDSv2, encrypted gp3 root volume)."""

from __future__ import annotations

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from config import NodegroupConfig
from config.versions import al2023_ami_parameter

#: IMDS hop limit of node instances. 1: pods (not in the host network) cannot reach instance metadata
#: and so cannot borrow the node role; workloads get AWS credentials from EKS Pod Identity instead.
#: Controllers that would read region or VPC id from IMDS must be given them explicitly.
NODE_IMDS_HOP_LIMIT = 1

_EFFECTS = {
    "NoSchedule": eks.TaintEffect.NO_SCHEDULE,
    "PreferNoSchedule": eks.TaintEffect.PREFER_NO_SCHEDULE,
    "NoExecute": eks.TaintEffect.NO_EXECUTE,
}


class ManagedNodegroup(Construct):
    """An EKS managed nodegroup of Kubernetes ``kubernetes_version`` in the private subnets (all zones).

    The launch template requires IMDSv2 (hop limit :data:`NODE_IMDS_HOP_LIMIT`), sets an encrypted gp3 root
    volume of ``config.disk_size_gib`` and attaches the EKS cluster security group plus the shared node
    security group. The AMI comes from ``config.ami_type`` at ``config.ami_release_version``, so the
    launch template carries no image id. A pinned AL2023 release is checked before anything is deployed:
    the image id parameter of that release (:func:`config.versions.al2023_ami_parameter`) is a
    CloudFormation parameter of type ``AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>``, which fails the
    deploy when the release does not exist; the resolved AMI id is the ``<id>AmiId`` output.
    ``config.force_update`` false: node updates respect PodDisruptionBudgets.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.Cluster,
        config: NodegroupConfig,
        kubernetes_version: str,
        node_role: iam.IRole,
        node_security_group: ec2.ISecurityGroup,
    ) -> None:
        super().__init__(scope, construct_id)
        # Bottlerocket boots from /dev/xvda and keeps images and containers on /dev/xvdb.
        device = "/dev/xvdb" if config.ami_type.startswith("BOTTLEROCKET") else "/dev/xvda"
        self.launch_template = ec2.LaunchTemplate(
            self,
            "LaunchTemplate",
            require_imdsv2=True,
            http_put_response_hop_limit=NODE_IMDS_HOP_LIMIT,
            block_devices=[
                ec2.BlockDevice(
                    device_name=device,
                    volume=ec2.BlockDeviceVolume.ebs(
                        config.disk_size_gib,
                        volume_type=ec2.EbsDeviceVolumeType.GP3,
                        encrypted=True,
                        delete_on_termination=True,
                    ),
                )
            ],
            security_group=node_security_group,
        )
        self.launch_template.add_security_group(cluster.cluster_security_group)
        self.nodegroup = eks.Nodegroup(
            self,
            "Nodegroup",
            cluster=cluster,
            nodegroup_name=config.name,
            node_role=node_role,
            instance_types=[ec2.InstanceType(t) for t in config.instance_types],
            ami_type=getattr(eks.NodegroupAmiType, config.ami_type),
            capacity_type=getattr(eks.CapacityType, config.capacity_type),
            min_size=config.min_size,
            desired_size=config.desired_size,
            max_size=config.max_size,
            labels=dict(config.labels),
            taints=[
                eks.TaintSpec(key=t.key, value=t.value, effect=_EFFECTS[t.effect]) for t in config.taints
            ],
            launch_template_spec=eks.LaunchTemplateSpec(
                id=str(self.launch_template.launch_template_id),
                version=self.launch_template.latest_version_number,
            ),
            subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            enable_node_auto_repair=True,
            max_unavailable=1,
            release_version=config.ami_release_version,
            force_update=config.force_update,
        )
        cfn = self.nodegroup.node.default_child
        assert isinstance(cfn, eks.CfnNodegroup)
        # Explicit, so a version upgrade moves the pinned release and the nodes' version in one update.
        cfn.version = kubernetes_version
        self.image_id: str | None = None
        if config.ami_release_version and config.ami_release_date:
            parameter = al2023_ami_parameter(
                kubernetes_version, config.ami_arch, config.ami_variant, config.ami_release_date
            )
            self.image_id = ssm.StringParameter.value_for_typed_string_parameter_v2(
                self, parameter, ssm.ParameterValueType.AWS_EC2_IMAGE_ID
            )
            CfnOutput(
                Stack.of(self),
                f"{construct_id}AmiId",
                value=self.image_id,
                description=f"AMI of {config.name}'s pinned release {config.ami_release_version} "
                f"({parameter})",
            )
