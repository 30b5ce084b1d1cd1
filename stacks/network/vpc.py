"""The VPC: private subnets for nodes and pods, public subnets for load balancers and NAT (seed ch3)."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Tags
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from config import NetworkConfig
from stacks.common import acknowledge, retention

# interfaceEndpoints value -> (construct id, endpoint service)
_INTERFACE_ENDPOINTS = {
    "ec2": ("Ec2Endpoint", ec2.InterfaceVpcEndpointAwsService.EC2),
    "ecr.api": ("EcrApiEndpoint", ec2.InterfaceVpcEndpointAwsService.ECR),
    "ecr.dkr": ("EcrDkrEndpoint", ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER),
    "sqs": ("SqsEndpoint", ec2.InterfaceVpcEndpointAwsService.SQS),
    "sts": ("StsEndpoint", ec2.InterfaceVpcEndpointAwsService.STS),
}

PRIVATE = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)


class EksVpc(Construct):
    """VPC over explicit AZs (no lookup), tagged for the AWS Load Balancer Controller and Karpenter.

    Private subnets: ``kubernetes.io/role/internal-elb=1``, ``karpenter.sh/discovery=<cluster name>``.
    Public subnets: ``kubernetes.io/role/elb=1``; no public IPs on launch (only NAT and load balancers
    live there). Flow logs (all traffic) go to CloudWatch Logs. S3 is reached through a gateway
    endpoint (image layers from ECR are served from S3); interface endpoints are optional.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, config: NetworkConfig, cluster_name: str
    ) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(config.vpc_cidr),
            availability_zones=list(config.availability_zones),
            nat_gateways=config.nat_gateway_count,
            # Order matters: CDK allocates CIDRs in this order (private /20s first, as in the seed).
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="Private",
                    subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS,
                    cidr_mask=config.private_subnet_mask,
                ),
                ec2.SubnetConfiguration(
                    name="Public",
                    subnet_type=ec2.SubnetType.PUBLIC,
                    cidr_mask=config.public_subnet_mask,
                    map_public_ip_on_launch=False,
                ),
            ],
            enable_dns_hostnames=True,
            enable_dns_support=True,
            restrict_default_security_group=True,
        )
        for subnet in self.vpc.private_subnets:
            Tags.of(subnet).add("kubernetes.io/role/internal-elb", "1")
            Tags.of(subnet).add("karpenter.sh/discovery", cluster_name)
        for subnet in self.vpc.public_subnets:
            Tags.of(subnet).add("kubernetes.io/role/elb", "1")
        for subnet in [*self.vpc.private_subnets, *self.vpc.public_subnets]:
            # Explicit AZ names are deliberate: synth runs offline (no AZ lookup), and the names are
            # validated config (network.availabilityZones), so cfn-lint's W3010 is acknowledged here.
            cfn_subnet = subnet.node.default_child
            assert isinstance(cfn_subnet, ec2.CfnSubnet)
            cfn_subnet.add_metadata("cfn-lint", {"config": {"ignore_checks": ["W3010"]}})
        acknowledge(
            self.vpc,
            "CloudFormation-Validate::W3010",
            "AZ names come from validated config (network.availabilityZones) so synth needs no AZ lookup",
        )

        self.flow_log_group: logs.LogGroup | None = None
        if config.flow_logs:
            self.flow_log_group = logs.LogGroup(
                self,
                "FlowLogGroup",
                retention=retention(config.flow_log_retention_days),
                removal_policy=RemovalPolicy.DESTROY,
            )
            self.vpc.add_flow_log(
                "FlowLog",
                destination=ec2.FlowLogDestination.to_cloud_watch_logs(self.flow_log_group),
                traffic_type=ec2.FlowLogTrafficType.ALL,
            )

        self.vpc.add_gateway_endpoint(
            "S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=[PRIVATE]
        )
        self.interface_endpoints: dict[str, ec2.InterfaceVpcEndpoint] = {}
        self.endpoint_security_group: ec2.SecurityGroup | None = None
        if config.interface_endpoints:
            # One group for all endpoints: HTTPS from inside the VPC only (the literal CIDR, so the rule is
            # reviewable in the template and by cdk-nag, unlike a GetAtt of the VPC's CIDR).
            sg = ec2.SecurityGroup(
                self,
                "EndpointSecurityGroup",
                vpc=self.vpc,
                description="Interface VPC endpoints: HTTPS from the VPC",
                allow_all_outbound=False,
            )
            sg.add_ingress_rule(ec2.Peer.ipv4(config.vpc_cidr), ec2.Port.tcp(443), "HTTPS from the VPC")
            self.endpoint_security_group = sg
        for name in config.interface_endpoints:
            endpoint_id, service = _INTERFACE_ENDPOINTS[name]
            self.interface_endpoints[name] = self.vpc.add_interface_endpoint(
                endpoint_id,
                service=service,
                subnets=PRIVATE,
                private_dns_enabled=True,
                security_groups=[self.endpoint_security_group],  # type: ignore[list-item]
                open=False,
            )
