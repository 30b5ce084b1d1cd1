"""NetworkStack: the seed chapter 3 VPC, read from the session's one synth."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match, Template

from tests.conftest import Synthesized


def _resources(template: dict[str, Any], rtype: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == rtype}


def _tags(props: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in props.get("Tags", [])}


def test_vpc_cidr_and_dns(synthesized: Synthesized) -> None:
    Template.from_json(synthesized.template("Network")).has_resource_properties(
        "AWS::EC2::VPC", {"CidrBlock": "10.0.0.0/16", "EnableDnsHostnames": True, "EnableDnsSupport": True}
    )


def test_subnets_cidrs_azs_and_tags(synthesized: Synthesized) -> None:
    subnets = [
        v["Properties"] for v in _resources(synthesized.template("Network"), "AWS::EC2::Subnet").values()
    ]
    private = sorted(
        (s["CidrBlock"], s["AvailabilityZone"], s["MapPublicIpOnLaunch"], _tags(s)["aws-cdk:subnet-type"])
        for s in subnets
        if _tags(s).get("kubernetes.io/role/internal-elb") == "1"
    )
    public = sorted(
        (s["CidrBlock"], s["AvailabilityZone"], s["MapPublicIpOnLaunch"], _tags(s)["aws-cdk:subnet-type"])
        for s in subnets
        if _tags(s).get("kubernetes.io/role/elb") == "1"
    )
    assert private == [
        ("10.0.0.0/20", "us-west-2a", False, "Private"),
        ("10.0.16.0/20", "us-west-2b", False, "Private"),
        ("10.0.32.0/20", "us-west-2c", False, "Private"),
    ]
    assert public == [
        ("10.0.48.0/24", "us-west-2a", False, "Public"),
        ("10.0.49.0/24", "us-west-2b", False, "Public"),
        ("10.0.50.0/24", "us-west-2c", False, "Public"),
    ]
    assert len(subnets) == 6
    for s in subnets:
        tags = _tags(s)
        is_private = tags["aws-cdk:subnet-type"] == "Private"
        # Karpenter discovers only the private subnets; the ELB role tags are exclusive.
        assert (tags.get("karpenter.sh/discovery") == "llama-eks-dev") is is_private
        assert ("kubernetes.io/role/elb" in tags) is not is_private
        assert tags["environment"] == "dev" and tags["project"] == "llama-eks"


def test_subnet_cidrs_match_what_config_computes(synthesized: Synthesized) -> None:
    net = synthesized.config.network
    cidrs = sorted(
        v["Properties"]["CidrBlock"]
        for v in _resources(synthesized.template("Network"), "AWS::EC2::Subnet").values()
    )
    assert cidrs == sorted(net.private_subnet_cidrs + net.public_subnet_cidrs)


def test_one_nat_gateway_by_default(synthesized: Synthesized) -> None:
    t = Template.from_json(synthesized.template("Network"))
    t.resource_count_is("AWS::EC2::NatGateway", 1)
    t.resource_count_is("AWS::EC2::InternetGateway", 1)


def test_flow_logs_all_traffic_to_cloudwatch_with_retention(synthesized: Synthesized) -> None:
    t = Template.from_json(synthesized.template("Network"))
    t.has_resource_properties(
        "AWS::EC2::FlowLog",
        {"ResourceType": "VPC", "TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs"},
    )
    t.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 90})


def test_s3_gateway_endpoint_on_private_route_tables_and_no_interface_endpoints_in_dev(
    synthesized: Synthesized,
) -> None:
    t = Template.from_json(synthesized.template("Network"))
    endpoints = t.find_resources("AWS::EC2::VPCEndpoint")
    assert len(endpoints) == 1
    (endpoint,) = endpoints.values()
    props = endpoint["Properties"]
    assert props["VpcEndpointType"] == "Gateway"
    assert "s3" in str(props["ServiceName"])
    private_rts = {
        k for k in _resources(synthesized.template("Network"), "AWS::EC2::RouteTable") if "PrivateSubnet" in k
    }
    assert {r["Ref"] for r in props["RouteTableIds"]} == private_rts


def test_default_security_group_is_restricted(synthesized: Synthesized) -> None:
    Template.from_json(synthesized.template("Network")).resource_count_is("Custom::VpcRestrictDefaultSG", 1)


def test_vpc_id_output(synthesized: Synthesized) -> None:
    Template.from_json(synthesized.template("Network")).has_output(
        "VpcId", {"Value": {"Ref": Match.string_like_regexp("^NetworkVpc")}}
    )


def test_stateful_logical_ids_are_pinned(synthesized: Synthesized) -> None:
    # Changing these replaces the VPC (and so every subnet, node and load balancer): never casually.
    resources = synthesized.template("Network")["Resources"]
    assert resources["NetworkVpc7FB7348F"]["Type"] == "AWS::EC2::VPC"
    for logical_id in (
        "NetworkVpcPrivateSubnet1Subnet6DD86AE6",
        "NetworkVpcPrivateSubnet2Subnet1BDBE877",
        "NetworkVpcPrivateSubnet3Subnet8ABFAF5C",
        "NetworkVpcPublicSubnet1Subnet36933139",
        "NetworkVpcPublicSubnet2SubnetC427CCE0",
        "NetworkVpcPublicSubnet3Subnet4BBF7F47",
    ):
        assert resources[logical_id]["Type"] == "AWS::EC2::Subnet"


def test_stack_name_and_env(synthesized: Synthesized) -> None:
    stack = synthesized.stacks.network
    assert stack.stack_name == "llama-eks-dev-network"
    assert (stack.account, stack.region) == ("111111111111", "us-west-2")
    assert stack.availability_zones == ["us-west-2a", "us-west-2b", "us-west-2c"]
