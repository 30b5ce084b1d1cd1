"""NetworkStack: the VPC the cluster and every later stack run in."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_ec2 as ec2
from constructs import Construct

from config import NetworkConfig
from stacks.network import EksVpc


class NetworkStack(Stack):
    """Composes :class:`EksVpc`. Later stacks take ``vpc`` (an object, not an id)."""

    def __init__(
        self, scope: Construct, construct_id: str, *, config: NetworkConfig, cluster_name: str, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self._azs = list(config.availability_zones)
        network = EksVpc(self, "Network", config=config, cluster_name=cluster_name)
        self.vpc: ec2.Vpc = network.vpc
        self.network = network
        CfnOutput(self, "VpcId", value=self.vpc.vpc_id, description="VPC of the EKS cluster")

    @property
    def availability_zones(self) -> list[str]:
        """The configured AZs: never a lookup, never CDK's dummy placeholders."""
        return self._azs
