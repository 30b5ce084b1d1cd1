"""One EKS managed nodegroup with its own launch template (IMDSv2, encrypted gp3 root volume)."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from config import NodegroupConfig

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
    """An EKS managed nodegroup in the private subnets.

    The launch template requires IMDSv2 (hop limit :data:`NODE_IMDS_HOP_LIMIT`), sets an encrypted gp3 root
    volume of ``config.disk_size_gib`` and attaches the EKS cluster security group plus the shared node
    security group. The AMI comes from ``config.ami_type`` (EKS picks the release matching the cluster
    version), so the launch template carries no image id.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.Cluster,
        config: NodegroupConfig,
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
        )
