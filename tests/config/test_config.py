"""Configuration: defaults, environments, -c overrides, and every error path with its exact message."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from pydantic import ValidationError

from config import (
    DEFAULT_KUBERNETES_VERSION,
    KUBERNETES_VERSIONS,
    SECTIONS,
    ConfigError,
    EndpointAccess,
    GpuCapacity,
    NatGateways,
    Taint,
    load_config,
)
from config.versions import SupportStatus
from tests.conftest import cdk_json_context


def test_cdk_json_dev_matches_seed_chapter_3() -> None:
    config = load_config(cdk_json_context())
    assert config.env_name == "dev"
    assert config.aws.region == "us-west-2"
    assert config.aws.account is None
    net = config.network
    assert net.vpc_cidr == "10.0.0.0/16"
    assert net.availability_zones == ("us-west-2a", "us-west-2b", "us-west-2c")
    assert net.private_subnet_cidrs == ("10.0.0.0/20", "10.0.16.0/20", "10.0.32.0/20")
    assert net.public_subnet_cidrs == ("10.0.48.0/24", "10.0.49.0/24", "10.0.50.0/24")
    assert net.nat_gateways is NatGateways.SINGLE and net.nat_gateway_count == 1
    assert config.cluster.name == "llama-eks-dev"
    assert config.cluster.kubernetes_version == DEFAULT_KUBERNETES_VERSION == "1.35"
    assert config.cluster.endpoint_access is EndpointAccess.PUBLIC_AND_PRIVATE
    system = config.compute.system_nodegroup
    assert system.name == "eks-mng"
    assert system.instance_types == ("m5.large", "m6i.large", "m6a.large", "m7i.large", "m7a.large")
    assert (system.desired_size, system.max_size) == (2, 3)
    gpu = config.compute.gpu_nodegroup
    assert config.compute.gpu_capacity in GpuCapacity  # the default moves to Karpenter with the add-ons
    assert (gpu.instance_types, gpu.ami_type, gpu.capacity_type) == (
        ("g6.2xlarge",),
        "AL2023_X86_64_NVIDIA",
        "SPOT",
    )
    assert (gpu.disk_size_gib, gpu.max_size) == (100, 2)
    assert gpu.taints == (Taint("nvidia.com/gpu", "true", "NoSchedule"),)
    assert dict(config.tags) == {"project": "llama-eks", "environment": "dev"}


def test_empty_context_gives_the_documented_defaults() -> None:
    config = load_config({})
    assert config.env_name == "dev"
    assert config.cluster.name == "llama-eks"
    assert config.network.availability_zones == ("us-west-2a", "us-west-2b", "us-west-2c")
    assert config.cluster.managed_addons == (
        "vpc-cni",
        "kube-proxy",
        "coredns",
        "eks-pod-identity-agent",
        "metrics-server",
    )


#: Production needs someone who can use kubectl.
PROD_ADMIN = {"cluster.adminPrincipalArns": "arn:aws:iam::123456789012:role/platform-admin"}


def test_prod_environment_overrides_the_base() -> None:
    config = load_config({**cdk_json_context(), "env": "prod", **PROD_ADMIN})
    assert config.env_name == "prod"
    assert config.production is True
    assert config.cluster.name == "llama-eks-prod"
    assert config.cluster.log_retention_days == 365
    assert config.cluster.deletion_protection is True
    assert config.network.nat_gateways is NatGateways.ONE_PER_AZ and config.network.nat_gateway_count == 3
    assert config.network.interface_endpoints == ("ecr.api", "ecr.dkr", "sts", "ec2", "sqs")
    # keys the environment does not mention keep their base value
    assert config.network.vpc_cidr == "10.0.0.0/16"
    assert config.tags["environment"] == "prod"


def test_dotted_override_beats_environment_and_base() -> None:
    ctx = {
        **cdk_json_context(),
        "env": "prod",
        **PROD_ADMIN,
        "cluster.kubernetesVersion": "1.34",
        "cluster.name": "blue",
        "compute.systemNodegroup.maxSize": "5",  # -c values arrive as strings
        "compute.gpuNodegroup.instanceTypes": "g6.xlarge,g6.2xlarge",
        "network.flowLogs": "false",
        "tags.owner": "platform",
    }
    config = load_config(ctx)
    assert config.cluster.kubernetes_version == "1.34"
    assert config.cluster.name == "blue"
    assert config.compute.system_nodegroup.max_size == 5
    assert config.compute.gpu_nodegroup.instance_types == ("g6.xlarge", "g6.2xlarge")
    assert config.network.flow_logs is False
    assert config.tags["owner"] == "platform"


def test_config_is_frozen() -> None:
    config = load_config({})
    with pytest.raises(ValidationError, match="frozen"):
        config.cluster.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.compute.gpu_nodegroup.labels["x"] = "y"  # type: ignore[index]


# Each case: context -> exact message. The message always names key, value and what is allowed.
ERRORS: list[tuple[str, dict[str, Any], str]] = [
    (
        "prefix that is no prefix",
        {"network.vpcCidr": "10.0.0.0/33"},
        "Invalid config 'network.vpcCidr': '10.0.0.0/33'. Allowed: an IPv4 CIDR with a prefix from /16 to "
        "/24 (a VPC limit), such as 10.0.0.0/16.",
    ),
    (
        "not a CIDR",
        {"network.vpcCidr": "10.0.0.0"},
        "Invalid config 'network.vpcCidr': '10.0.0.0'. Allowed: an IPv4 CIDR with host bits zero, "
        "such as 10.0.0.0/16.",
    ),
    (
        "CIDR with host bits",
        {"network.vpcCidr": "10.0.0.1/16"},
        "Invalid config 'network.vpcCidr': '10.0.0.1/16'. Allowed: an IPv4 CIDR with host bits zero, "
        "such as 10.0.0.0/16.",
    ),
    (
        "VPC too small for AWS",
        {"network.vpcCidr": "10.0.0.0/8"},
        "Invalid config 'network.vpcCidr': '10.0.0.0/8'. Allowed: an IPv4 CIDR with a prefix from /16 to /24 "
        "(a VPC limit), such as 10.0.0.0/16.",
    ),
    (
        # The user changed the VPC: that key is named, with the VPC size and the masks that would fit.
        "default subnets do not fit a smaller VPC",
        {"network.vpcCidr": "10.0.0.0/19"},
        "Invalid config 'network.vpcCidr': '10.0.0.0/19'. Allowed: a prefix of /18 or shorter: 3 private /20 "
        "and 3 public /24 subnets need 13056 addresses, /19 has 8192; or keep /19 with "
        "network.privateSubnetMask=21 and network.publicSubnetMask=23.",
    ),
    (
        "default subnet masks wider than the VPC",
        {"network.vpcCidr": "10.0.0.0/24"},
        "Invalid config 'network.vpcCidr': '10.0.0.0/24'. Allowed: a prefix of /18 or shorter: 3 private /20 "
        "and 3 public /24 subnets need 13056 addresses, /24 has 256; or keep /24 with "
        "network.privateSubnetMask=26 and network.publicSubnetMask=28.",
    ),
    (
        # The user set a mask: the mask is named.
        "given subnet masks do not fit",
        {"network.vpcCidr": "10.0.0.0/20", "network.privateSubnetMask": "21"},
        "Invalid config 'network.privateSubnetMask': 21. Allowed: subnet masks whose 3 private /21 and 3 "
        "public /24 subnets (6912 addresses) fit in network.vpcCidr 10.0.0.0/20 (4096 addresses).",
    ),
    (
        "subnet mask wider than the VPC",
        {"network.vpcCidr": "10.0.0.0/20", "network.privateSubnetMask": "20"},
        "Invalid config 'network.privateSubnetMask': 20. Allowed: an integer from 21 to 28.",
    ),
    (
        "AZ of another region",
        {"network.availabilityZones": "us-west-2a,eu-west-1b"},
        "Invalid config 'network.availabilityZones': 'eu-west-1b'. Allowed: availability zone names of "
        "region "
        "us-west-2, such as us-west-2a.",
    ),
    (
        "one AZ",
        {"network.availabilityZones": "us-west-2a"},
        "Invalid config 'network.availabilityZones': ['us-west-2a']. Allowed: 2 to 6 distinct availability "
        "zones "
        "(EKS needs subnets in at least 2).",
    ),
    (
        "unknown NAT mode",
        {"network.natGateways": "two"},
        "Invalid config 'network.natGateways': 'two'. Allowed: one of ['onePerAz', 'single'].",
    ),
    (
        "unknown interface endpoint",
        {"network.interfaceEndpoints": "s3"},
        "Invalid config 'network.interfaceEndpoints': 's3'. Allowed: items from "
        "['ec2', 'ecr.api', 'ecr.dkr', 'sqs', 'sts'].",
    ),
    (
        "retention CloudWatch does not offer",
        {"network.flowLogRetentionDays": "10"},
        "Invalid config 'network.flowLogRetentionDays': 10. Allowed: one of [1, 3, 5, 7, 14, 30, 60, 90, "
        "120, "
        "150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653].",
    ),
    (
        "unknown Kubernetes version",
        {"cluster.kubernetesVersion": "1.37"},
        "Invalid config 'cluster.kubernetesVersion': '1.37'. Allowed: one of "
        "['1.32', '1.33', '1.34', '1.35', '1.36'] (a string).",
    ),
    (
        "Kubernetes version as a number",
        {"cluster": {"kubernetesVersion": 1.35}},
        "Invalid config 'cluster.kubernetesVersion': 1.35. Allowed: one of "
        "['1.32', '1.33', '1.34', '1.35', '1.36'] (a string).",
    ),
    (
        "bad cluster name",
        {"cluster.name": "9lives"},
        "Invalid config 'cluster.name': '9lives'. Allowed: 1-100 characters: letters, digits, '-' and '_', "
        "starting with a letter.",
    ),
    (
        "private endpoint with public CIDRs",
        {"cluster.endpointAccess": "private", "cluster.publicAccessCidrs": "203.0.113.0/24"},
        "Invalid config 'cluster.publicAccessCidrs': ['203.0.113.0/24']. Allowed: an empty list when "
        "cluster.endpointAccess is 'private'.",
    ),
    (
        "bad public CIDR",
        {"cluster.publicAccessCidrs": "203.0.113.7"},
        "Invalid config 'cluster.publicAccessCidrs': '203.0.113.7'. Allowed: an IPv4 CIDR with host bits "
        "zero, "
        "such as 10.0.0.0/16.",
    ),
    (
        "unknown endpoint access",
        {"cluster.endpointAccess": "public"},
        "Invalid config 'cluster.endpointAccess': 'public'. Allowed: one of ['private', 'publicAndPrivate'].",
    ),
    (
        "bad admin principal ARN",
        {"cluster.adminPrincipalArns": "arn:aws:iam::123:user/bob"},
        "Invalid config 'cluster.adminPrincipalArns': 'arn:aws:iam::123:user/bob'. Allowed: IAM role or user "
        "ARNs such as arn:aws:iam::123456789012:role/platform-admin or arn:aws:iam::123456789012:user/alice; "
        "find yours with `aws sts get-caller-identity`: an IAM user ARN (arn:aws:iam::ACCOUNT:user/NAME) is "
        "used as is; for an assumed role (arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION, e.g. an IAM "
        "Identity Center (SSO) permission set) give the role's IAM ARN, path included, as `aws iam get-role "
        "--role-name ROLE --query Role.Arn --output text` prints it, e.g. arn:aws:iam::123456789012:role/"
        "aws-reserved/sso.amazonaws.com/us-west-2/AWSReservedSSO_AdministratorAccess_0123456789abcdef.",
    ),
    (
        "unknown log type",
        {"cluster.logging": "api,kubelet"},
        "Invalid config 'cluster.logging': 'kubelet'. Allowed: items from "
        "['api', 'audit', 'authenticator', 'controllerManager', 'scheduler'].",
    ),
    (
        "required add-on left out",
        {"cluster.managedAddons": "vpc-cni,kube-proxy"},
        "Invalid config 'cluster.managedAddons': ['vpc-cni', 'kube-proxy']. Allowed: a list that includes "
        "['coredns', 'kube-proxy', 'vpc-cni'] (nodes need them to become Ready).",
    ),
    (
        "unknown support type",
        {"cluster.supportType": "EXTENDED"},
        "Invalid config 'cluster.supportType': 'EXTENDED'. Allowed: one of ['extended', 'standard'].",
    ),
    (
        "deletion protection not a boolean",
        {"cluster.deletionProtection": "yes"},
        "Invalid config 'cluster.deletionProtection': 'yes'. Allowed: true or false.",
    ),
    (
        "min > max",
        {"compute.systemNodegroup.minSize": "4"},
        "Invalid config 'compute.systemNodegroup.minSize': 4. Allowed: an integer <= "
        "compute.systemNodegroup.maxSize (3).",
    ),
    (
        "desired outside min..max",
        {"compute.gpuNodegroup.desiredSize": "3"},
        "Invalid config 'compute.gpuNodegroup.desiredSize': 3. Allowed: an integer from "
        "compute.gpuNodegroup.minSize (0) to compute.gpuNodegroup.maxSize (2).",
    ),
    (
        "empty instance list",
        {"compute": {"systemNodegroup": {"instanceTypes": []}}},
        "Invalid config 'compute.systemNodegroup.instanceTypes': []. Allowed: a non-empty list.",
    ),
    (
        "malformed instance type",
        {"compute.gpuNodegroup.instanceTypes": "g6-2xlarge"},
        "Invalid config 'compute.gpuNodegroup.instanceTypes': 'g6-2xlarge'. Allowed: EC2 instance type names "
        "such as m6i.large.",
    ),
    (
        "GPU nodegroup with a CPU AMI",
        {"compute.gpuNodegroup.amiType": "AL2023_X86_64_STANDARD"},
        "Invalid config 'compute.gpuNodegroup.amiType': 'AL2023_X86_64_STANDARD'. Allowed: one of "
        "['AL2023_ARM_64_NVIDIA', 'AL2023_X86_64_NVIDIA', 'BOTTLEROCKET_ARM_64_NVIDIA', "
        "'BOTTLEROCKET_X86_64_NVIDIA'].",
    ),
    (
        "CPU instance in the GPU nodegroup",
        {"compute.gpuNodegroup.instanceTypes": "g6.2xlarge,m5.large"},
        "Invalid config 'compute.gpuNodegroup.instanceTypes': 'm5.large'. Allowed: NVIDIA GPU x86_64 "
        "instance types for amiType AL2023_X86_64_NVIDIA, such as g6.2xlarge.",
    ),
    (
        "GPU instance in the system nodegroup",
        {"compute.systemNodegroup.instanceTypes": "g6.xlarge"},
        "Invalid config 'compute.systemNodegroup.instanceTypes': 'g6.xlarge'. Allowed: non-GPU x86_64 "
        "instance types for amiType AL2023_X86_64_STANDARD, such as m6i.large.",
    ),
    (
        "Graviton instance with an x86 AMI",
        {"compute.systemNodegroup.instanceTypes": "m7g.large"},
        "Invalid config 'compute.systemNodegroup.instanceTypes': 'm7g.large'. Allowed: non-GPU x86_64 "
        "instance types for amiType AL2023_X86_64_STANDARD, such as m6i.large.",
    ),
    (
        "x86 instance with an ARM AMI",
        {"compute.systemNodegroup.amiType": "AL2023_ARM_64_STANDARD"},
        "Invalid config 'compute.systemNodegroup.instanceTypes': 'm5.large'. Allowed: non-GPU arm64 "
        "(Graviton) instance types for amiType AL2023_ARM_64_STANDARD, such as m7g.large.",
    ),
    (
        "unknown capacity type",
        {"compute.gpuNodegroup.capacityType": "RESERVED"},
        "Invalid config 'compute.gpuNodegroup.capacityType': 'RESERVED'. Allowed: one of ['ON_DEMAND', "
        "'SPOT'].",
    ),
    (
        "unknown GPU capacity",
        {"compute.gpuCapacity": "fargate"},
        "Invalid config 'compute.gpuCapacity': 'fargate'. "
        f"Allowed: one of {sorted(g.value for g in GpuCapacity)}.",
    ),
    (
        "malformed taint",
        {"compute.gpuNodegroup.taints": "nvidia.com/gpu:NoSchedule"},
        "Invalid config 'compute.gpuNodegroup.taints': 'nvidia.com/gpu:NoSchedule'. Allowed: taints as "
        "key=value:Effect with Effect one of ['NoSchedule', 'PreferNoSchedule', 'NoExecute'], such as "
        "nvidia.com/gpu=true:NoSchedule.",
    ),
    (
        "count that is not a number",
        {"compute.systemNodegroup.maxSize": "three"},
        "Invalid config 'compute.systemNodegroup.maxSize': 'three'. Allowed: an integer from 1 to 450.",
    ),
    (
        "same nodegroup names",
        {"compute.gpuNodegroup.name": "eks-mng"},
        "Invalid config 'compute.gpuNodegroup.name': 'eks-mng'. Allowed: a name different from "
        "compute.systemNodegroup.name.",
    ),
    (
        "unknown environment",
        {"env": "staging"},
        "Invalid config 'env': 'staging'. Allowed: one of ['dev', 'prod'] (the keys of 'environments').",
    ),
    (
        "typo in a key",
        {"cluster.kubernetesVersoin": "1.34"},
        "Invalid config 'cluster.kubernetesVersoin': '1.34'. Allowed: known keys of 'cluster' are "
        "['adminPrincipalArns', 'deletionProtection', 'endpointAccess', 'kubernetesVersion', "
        "'logRetentionDays', 'logging', 'managedAddons', 'name', 'privateAccessCidrs', 'publicAccessCidrs', "
        "'supportType'].",
    ),
    (
        "typo in a section of a dotted key",
        {"clustr.name": "x"},
        "Invalid config 'clustr.name': 'x'. "
        f"Allowed: a dotted key under one of the sections {list(SECTIONS)}.",
    ),
    (
        "unknown section in an environment",
        {"environments": {"dev": {"netwrk": {}}}},
        f"Invalid config 'environments.dev.netwrk': {{}}. Allowed: sections {list(SECTIONS)} or the keys "
        "['production'].",
    ),
    (
        "bad account",
        {"aws.account": "1234"},
        "Invalid config 'aws.account': '1234'. Allowed: a 12-digit AWS account id, or null for the CLI's "
        "account.",
    ),
    (
        "bad region",
        {"aws.region": "mars-1"},
        "Invalid config 'aws.region': 'mars-1'. Allowed: an AWS region name such as us-west-2.",
    ),
    (
        "section that is not an object",
        {"cluster": "big"},
        "Invalid config 'cluster': 'big'. Allowed: a JSON object.",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_invalid_config_fails_with_key_value_and_allowed(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config({**cdk_json_context(), **overrides})
    assert str(err.value) == message


def test_error_carries_structured_fields() -> None:
    with pytest.raises(ConfigError) as err:
        load_config({"cluster.kubernetesVersion": "1.29"})
    assert (err.value.key, err.value.value) == ("cluster.kubernetesVersion", "1.29")
    assert "1.35" in err.value.allowed


def test_graviton_nodegroups_are_accepted() -> None:
    config = load_config(
        {
            **cdk_json_context(),
            "compute.systemNodegroup.amiType": "AL2023_ARM_64_STANDARD",
            "compute.systemNodegroup.instanceTypes": "m7g.large,c7gn.large,t4g.large",
            "compute.gpuNodegroup.amiType": "AL2023_ARM_64_NVIDIA",
            "compute.gpuNodegroup.instanceTypes": "g5g.2xlarge",
        }
    )
    assert config.compute.system_nodegroup.instance_types == ("m7g.large", "c7gn.large", "t4g.large")
    assert config.compute.gpu_nodegroup.instance_types == ("g5g.2xlarge",)


def test_region_change_requires_matching_azs() -> None:
    # Changing the region alone keeps the us-west-2 AZ list of cdk.json: that must fail, not synth
    # subnets in zones the region does not have.
    with pytest.raises(ConfigError, match="availability zone names of region eu-west-1"):
        load_config({**cdk_json_context(), "aws.region": "eu-west-1"})
    config = load_config(
        {
            **cdk_json_context(),
            "aws.region": "eu-west-1",
            "network.availabilityZones": "eu-west-1a,eu-west-1b",
        }
    )
    assert config.network.private_subnet_cidrs == ("10.0.0.0/20", "10.0.16.0/20")
    assert config.network.public_subnet_cidrs == ("10.0.32.0/24", "10.0.33.0/24")


# ---------------------------------------------------------------- Kubernetes versions table


def test_every_supported_version_has_its_own_kubectl_layer_package() -> None:
    assert list(KUBERNETES_VERSIONS) == ["1.32", "1.33", "1.34", "1.35", "1.36"]
    import importlib

    for version, info in KUBERNETES_VERSIONS.items():
        minor = version.split(".")[1]
        assert info.layer_module == f"aws_cdk.lambda_layer_kubectl_v{minor}"
        module = importlib.import_module(info.layer_module)  # pinned in requirements.txt
        assert hasattr(module, info.layer_class)
        assert info.end_of_standard_support < info.end_of_extended_support
        # EKS: 14 months of standard support, then 12 of extended support.
        assert info.end_of_extended_support.replace(year=info.end_of_extended_support.year - 1) == (
            info.end_of_standard_support
        )
        assert info.al2023_release.startswith(f"{version}.")


def test_default_is_in_standard_support_and_one_behind_the_newest() -> None:
    today = datetime.date(2026, 11, 23)
    standard = [v for v, i in KUBERNETES_VERSIONS.items() if i.status(today) is SupportStatus.STANDARD]
    assert standard == ["1.34", "1.35", "1.36"]
    # 1.36 is one key away; moving the default upgrades every cluster that does not pin a version.
    assert DEFAULT_KUBERNETES_VERSION == "1.35" == standard[-2]


def test_helm_of_each_kubectl_layer() -> None:
    # The helm binary the kubectl handler runs (tests/helm renders with the same one).
    assert {v: i.helm_major for v, i in KUBERNETES_VERSIONS.items()} == {
        "1.32": 3,
        "1.33": 4,
        "1.34": 4,
        "1.35": 4,
        "1.36": 4,
    }


@pytest.mark.parametrize(
    ("version", "today", "expected"),
    [
        ("1.35", datetime.date(2026, 11, 23), None),
        ("1.34", datetime.date(2026, 12, 2), None),  # last day of standard support
        (
            "1.34",
            datetime.date(2026, 12, 3),
            "Kubernetes 1.34 is past the end of EKS standard support (2026-12-02); extended support (6 times "
            "the standard control plane price per cluster hour) ends 2027-12-02. Upgrade "
            "cluster.kubernetesVersion one minor version at a time (default: 1.35).",
        ),
        (
            "1.32",
            datetime.date(2026, 11, 23),
            "Kubernetes 1.32 is past the end of EKS standard support (2026-03-23); extended support (6 times "
            "the standard control plane price per cluster hour) ends 2027-03-23. Upgrade "
            "cluster.kubernetesVersion one minor version at a time (default: 1.35).",
        ),
        ("1.32", datetime.date(2027, 3, 24), None),  # past extended support: an error, not a warning
    ],
)
def test_support_warning_depends_on_injected_today(
    version: str, today: datetime.date, expected: str | None
) -> None:
    assert KUBERNETES_VERSIONS[version].support_warning(today) == expected


def test_a_version_past_extended_support_is_refused_with_its_date() -> None:
    info = KUBERNETES_VERSIONS["1.32"]
    assert info.ended_problem(datetime.date(2027, 3, 23)) is None
    assert info.ended_problem(datetime.date(2027, 3, 24)) == (
        "one of ['1.32', '1.33', '1.34', '1.35', '1.36'] (a string): EKS extended support for 1.32 ended "
        "2027-03-23, EKS no longer creates 1.32 clusters and upgrades existing ones; an existing cluster "
        "moves one minor version at a time (a 1.32 cluster: set the next one)"
    )
