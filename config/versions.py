"""Supported Kubernetes versions: the one table of kubectl layers, EKS support dates and node AMI releases.

Dates are Amazon EKS's published release calendar (standard support: 14 months after the EKS release;
extended support: 12 months more, at extra cost per cluster hour), checked against the EKS user guide's
"Kubernetes version lifecycle" page. 1.36 is not in the calendar copy this was checked against: its dates are
14 + 12 months from its EKS release on 2026-06-02 (the rule every other row follows); confirm with
``aws eks describe-cluster-versions --cluster-versions 1.36``.

Adding a version means one row here plus one pinned ``aws-cdk.lambda-layer-kubectl-vNN`` line in
``requirements.txt``. A version whose extended support has ended leaves the table for :data:`RETIRED`
(EKS no longer creates clusters on it), with its kubectl layer line.

Node AMIs: both managed nodegroups pin an EKS-optimized AL2023 AMI release (``releaseVersion``); the
AL2023 SSM parameter names live here (:func:`al2023_ami_parameter`), one format for every consumer.
"""

from __future__ import annotations

import datetime
import enum
import importlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pragma: no cover - typing only
    from aws_cdk import aws_lambda
    from constructs import Construct


class SupportStatus(enum.Enum):
    STANDARD = "standard"
    EXTENDED = "extended"
    ENDED = "ended"


@dataclass(frozen=True)
class KubernetesVersionInfo:
    """One supported Kubernetes minor version.

    ``layer_module``/``layer_class`` name the kubectl Lambda layer whose kubectl matches this version
    (the kubectl handler must be within one minor version of the API server). ``helm_major``: the Helm
    that layer ships (the kubectl handler installs the add-ons' charts with it). ``al2023_release``: the
    EKS-optimized AL2023 AMI release (``<kubernetes patch>-<YYYYMMDD>``) the managed nodegroups default to.
    """

    version: str
    layer_module: str
    layer_class: str
    end_of_standard_support: datetime.date
    end_of_extended_support: datetime.date
    al2023_release: str
    helm_major: int

    def status(self, today: datetime.date) -> SupportStatus:
        if today <= self.end_of_standard_support:
            return SupportStatus.STANDARD
        if today <= self.end_of_extended_support:
            return SupportStatus.EXTENDED
        return SupportStatus.ENDED

    def kubectl_layer(self, scope: Construct, construct_id: str) -> aws_lambda.ILayerVersion:
        """Instantiate this version's kubectl layer (imported lazily: only the chosen one is loaded)."""
        module = importlib.import_module(self.layer_module)
        layer: aws_lambda.ILayerVersion = getattr(module, self.layer_class)(scope, construct_id)
        return layer

    def support_warning(self, today: datetime.date) -> str | None:
        """The synth warning for ``today`` while the version is in extended support, else None (see
        :meth:`ended_problem` for a version past its extended support)."""
        if self.status(today) is not SupportStatus.EXTENDED:
            return None
        return (
            f"Kubernetes {self.version} is past the end of EKS standard support "
            f"({self.end_of_standard_support.isoformat()}); extended support (6 times the standard control "
            f"plane price per cluster hour) ends {self.end_of_extended_support.isoformat()}. Upgrade "
            f"cluster.kubernetesVersion one minor version at a time (default: {DEFAULT_KUBERNETES_VERSION})."
        )

    def ended_problem(self, today: datetime.date) -> str | None:
        """What is allowed instead, once ``today`` is past the end of extended support (else None)."""
        if self.status(today) is not SupportStatus.ENDED:
            return None
        return retired_text(self.version, self.end_of_extended_support)


def _row(minor: int, std: str, ext: str, al2023: str, *, helm: int) -> KubernetesVersionInfo:
    return KubernetesVersionInfo(
        version=f"1.{minor}",
        layer_module=f"aws_cdk.lambda_layer_kubectl_v{minor}",
        layer_class=f"KubectlV{minor}Layer",
        end_of_standard_support=datetime.date.fromisoformat(std),
        end_of_extended_support=datetime.date.fromisoformat(ext),
        al2023_release=al2023,
        helm_major=helm,
    )


# version -> end of standard support, end of extended support (EKS release calendar), the AL2023 AMI release
# of amazon-eks-ami v20260714 for that version (its CHANGELOG's "Release version" column).
KUBERNETES_VERSIONS: dict[str, KubernetesVersionInfo] = {
    row.version: row
    for row in (
        # The kubectl layer of 1.32 ships Helm 3.17; those of 1.33 to 1.35 Helm 4.1, 1.36's Helm 4.2.
        _row(32, "2026-03-23", "2027-03-23", "1.32.13-20260714", helm=3),
        _row(33, "2026-07-29", "2027-07-29", "1.33.13-20260714", helm=4),
        _row(34, "2026-12-02", "2027-12-02", "1.34.9-20260714", helm=4),
        _row(35, "2027-03-27", "2028-03-27", "1.35.6-20260714", helm=4),
        _row(36, "2027-08-02", "2028-08-02", "1.36.2-20260714", helm=4),
    )
}

#: Versions EKS no longer creates clusters on, with the end of their extended support.
RETIRED: dict[str, datetime.date] = {
    "1.29": datetime.date(2026, 3, 23),
    "1.30": datetime.date(2026, 7, 23),
    "1.31": datetime.date(2026, 11, 26),
}

#: The default. 1.36 is one key away but not the default yet: a new default upgrades, on its next deploy,
#: every cluster that does not pin cluster.kubernetesVersion, which deserves its own change; and its
#: support dates are derived (module docstring). Move it when both are settled.
DEFAULT_KUBERNETES_VERSION = "1.35"

SUPPORTED_VERSIONS: tuple[str, ...] = tuple(KUBERNETES_VERSIONS)


def retired_text(version: str, ended: datetime.date) -> str:
    """What ``cluster.kubernetesVersion`` allows instead of a retired ``version``."""
    return (
        f"one of {list(KUBERNETES_VERSIONS)} (a string): EKS extended support for {version} ended "
        f"{ended.isoformat()}, EKS no longer creates {version} clusters and upgrades existing ones; an "
        f"existing cluster moves one minor version at a time (a {version} cluster: set the next one)"
    )


def version_allowed(value: str) -> str:
    """What ``cluster.kubernetesVersion`` allows, with the reason when ``value`` is a retired version."""
    ended = RETIRED.get(value)
    if ended is not None:
        return retired_text(value, ended)
    return f"one of {list(KUBERNETES_VERSIONS)} (a string)"


# ---------------------------------------------------------------- EKS-optimized AL2023 node AMIs

#: An AL2023 AMI release as managed nodegroups take it (``releaseVersion``): Kubernetes patch and date.
AL2023_RELEASE_PATTERN = r"1\.(\d+)\.(\d+)-(\d{8})"
Arch = Literal["x86_64", "arm64"]
Variant = Literal["standard", "nvidia", "neuron"]


def al2023_release_date(release: str) -> str:
    """``1.35.6-20260714`` -> ``v20260714`` (the tag of the amazon-eks-ami release and of the AMI names)."""
    match = re.fullmatch(AL2023_RELEASE_PATTERN, release)
    if match is None:
        raise ValueError(f"not an AL2023 AMI release: {release!r}")
    return f"v{match[3]}"


#: The date tag of an EKS-optimized AL2023 AMI release, as Karpenter's ``al2023@<tag>`` alias takes it.
AL2023_DATE_TAG_PATTERN = r"v\d{8}"


def _al2023_folder(kubernetes_version: str, arch: Arch, variant: Variant) -> str:
    return f"/aws/service/eks/optimized-ami/{kubernetes_version}/amazon-linux-2023/{arch}/{variant}"


def al2023_ami_parameter(kubernetes_version: str, arch: Arch, variant: Variant, date_tag: str) -> str:
    """The public SSM parameter holding the image id of one EKS-optimized AL2023 AMI release, e.g.
    ``/aws/service/eks/optimized-ami/1.35/amazon-linux-2023/x86_64/nvidia/amazon-eks-node-al2023-x86_64-
    nvidia-1.35-v20260714/image_id``. It exists exactly when that release was published for that version,
    architecture and variant (Karpenter's ``al2023@<tag>`` alias resolves the same parameter; a
    CloudFormation parameter of type ``AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>`` on it fails a
    deploy whose pin does not exist). ``date_tag`` ``latest`` is the ``recommended`` image."""
    folder = _al2023_folder(kubernetes_version, arch, variant)
    if date_tag == "latest":
        return f"{folder}/recommended/image_id"
    return f"{folder}/amazon-eks-node-al2023-{arch}-{variant}-{kubernetes_version}-{date_tag}/image_id"


def al2023_recommended_release_parameter(kubernetes_version: str, arch: Arch, variant: Variant) -> str:
    """The public SSM parameter with the newest AL2023 release for a version (what to pin next)."""
    return f"{_al2023_folder(kubernetes_version, arch, variant)}/recommended/release_version"
