"""The cluster's default StorageClass: encrypted gp3 volumes from the Amazon EBS CSI driver.

EKS creates no default StorageClass for the EBS CSI driver (the in-tree ``gp2`` class is not default on
new clusters), so a PersistentVolumeClaim without ``storageClassName`` would stay Pending. This one is the
default; Prometheus names it explicitly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import cdk8s
from cdk8s_plus_30 import k8s
from constructs import Construct

#: The class every persistent volume of this product uses (Prometheus's included).
STORAGE_CLASS_NAME = "gp3-encrypted"
EBS_CSI_PROVISIONER = "ebs.csi.aws.com"
#: Tag on every volume the driver creates for this cluster: leftovers after a teardown are easy to find.
CLUSTER_TAG = "llama-eks/cluster"


@dataclass(frozen=True)
class StorageClassProps:
    """``cluster_name`` tags the volumes; ``reclaim_policy`` ``Delete`` (default): deleting a claim
    deletes its volume."""

    cluster_name: str
    reclaim_policy: str = "Delete"


class EbsStorageClasses(cdk8s.Chart):
    """StorageClass ``gp3-encrypted``: gp3, encrypted with the account's EBS key (``aws/ebs`` unless the
    account's EBS default encryption names a customer key), bound when the pod is scheduled (its zone),
    expandable, marked default. Invalid props fail here."""

    def __init__(self, scope: Construct, construct_id: str, *, props: StorageClassProps) -> None:
        super().__init__(scope, construct_id, disable_resource_name_hashes=True)
        if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9-_]{0,99}", props.cluster_name):
            raise ValueError(
                f"StorageClassProps.cluster_name: {props.cluster_name!r} is invalid; allowed: an "
                "EKS cluster name"
            )
        if props.reclaim_policy not in ("Delete", "Retain"):
            raise ValueError(
                f"StorageClassProps.reclaim_policy: {props.reclaim_policy!r} is invalid; "
                "allowed: Delete, Retain"
            )
        self.storage_class = k8s.KubeStorageClass(
            self,
            "Gp3Encrypted",
            metadata=k8s.ObjectMeta(
                name=STORAGE_CLASS_NAME,
                annotations={"storageclass.kubernetes.io/is-default-class": "true"},
            ),
            provisioner=EBS_CSI_PROVISIONER,
            parameters={
                "type": "gp3",
                "encrypted": "true",
                "csi.storage.k8s.io/fstype": "ext4",
                "tagSpecification_1": f"{CLUSTER_TAG}={props.cluster_name}",
            },
            reclaim_policy=props.reclaim_policy,
            # The volume is created in the zone the scheduler picked for the pod, not in a random one.
            volume_binding_mode="WaitForFirstConsumer",
            allow_volume_expansion=True,
        )
