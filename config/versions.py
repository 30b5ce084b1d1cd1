"""Supported Kubernetes versions: the one table of kubectl layers and EKS support dates.

Dates are Amazon EKS's published release calendar (standard support: 14 months after EKS release;
extended support: 12 months more, at extra cost per cluster hour). Adding a version means one row here
plus one pinned ``aws-cdk.lambda-layer-kubectl-vNN`` line in ``requirements.txt``.
"""

from __future__ import annotations

import datetime
import enum
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
    (the kubectl handler must be within one minor version of the API server).
    """

    version: str
    layer_module: str
    layer_class: str
    end_of_standard_support: datetime.date
    end_of_extended_support: datetime.date

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
        """The synth warning for ``today``, or None while the version is in standard support."""
        status = self.status(today)
        if status is SupportStatus.STANDARD:
            return None
        newest = DEFAULT_KUBERNETES_VERSION
        if status is SupportStatus.EXTENDED:
            return (
                f"Kubernetes {self.version} is past the end of EKS standard support "
                f"({self.end_of_standard_support.isoformat()}); extended support (extra cost per cluster "
                f"hour) ends {self.end_of_extended_support.isoformat()}. Upgrade cluster.kubernetesVersion "
                f"(newest supported: {newest})."
            )
        return (
            f"Kubernetes {self.version} is past the end of EKS extended support "
            f"({self.end_of_extended_support.isoformat()}); EKS will not create clusters on it and "
            f"auto-upgrades existing ones. Set cluster.kubernetesVersion to {newest}."
        )


def _row(minor: int, std: str, ext: str) -> KubernetesVersionInfo:
    return KubernetesVersionInfo(
        version=f"1.{minor}",
        layer_module=f"aws_cdk.lambda_layer_kubectl_v{minor}",
        layer_class=f"KubectlV{minor}Layer",
        end_of_standard_support=datetime.date.fromisoformat(std),
        end_of_extended_support=datetime.date.fromisoformat(ext),
    )


# version -> kubectl layer, end of standard support, end of extended support (EKS release calendar).
KUBERNETES_VERSIONS: dict[str, KubernetesVersionInfo] = {
    row.version: row
    for row in (
        _row(31, "2025-11-26", "2026-11-26"),
        _row(32, "2026-03-23", "2027-03-23"),
        _row(33, "2026-07-29", "2027-07-29"),
        _row(34, "2026-12-02", "2027-12-02"),
        _row(35, "2027-03-27", "2028-03-27"),
    )
}

#: The newest version EKS offers in standard support.
DEFAULT_KUBERNETES_VERSION = "1.35"

SUPPORTED_VERSIONS: tuple[str, ...] = tuple(KUBERNETES_VERSIONS)
