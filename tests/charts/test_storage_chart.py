"""charts/storage.py on its own: the default encrypted gp3 StorageClass, schema-valid on every version."""

from __future__ import annotations

import cdk8s
import kubernetes_validate
import pytest

from charts.storage import EbsStorageClasses, StorageClassProps
from config.versions import SUPPORTED_VERSIONS


def _synth(props: StorageClassProps) -> list[dict]:
    return EbsStorageClasses(cdk8s.App(), "Storage", props=props).to_json()


def test_the_default_class_is_encrypted_gp3_bound_in_the_pods_zone_and_tags_its_volumes():
    (storage_class,) = _synth(StorageClassProps(cluster_name="llama-eks-dev"))
    assert storage_class == {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": "gp3-encrypted",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "ebs.csi.aws.com",
        "parameters": {
            "type": "gp3",
            "encrypted": "true",
            "csi.storage.k8s.io/fstype": "ext4",
            "tagSpecification_1": "llama-eks/cluster=llama-eks-dev",
        },
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": True,
    }
    for version in SUPPORTED_VERSIONS:
        assert kubernetes_validate.validate(storage_class, version, strict=True) == version


@pytest.mark.parametrize(
    ("props", "message"),
    [
        (
            StorageClassProps(cluster_name="bad name"),
            "StorageClassProps.cluster_name: 'bad name' is invalid; allowed: an EKS cluster name",
        ),
        (
            StorageClassProps(cluster_name="c", reclaim_policy="Recycle"),
            "StorageClassProps.reclaim_policy: 'Recycle' is invalid; allowed: Delete, Retain",
        ),
    ],
)
def test_invalid_props_fail_in_the_constructor(props, message):
    with pytest.raises(ValueError) as info:
        _synth(props)
    assert str(info.value) == message
