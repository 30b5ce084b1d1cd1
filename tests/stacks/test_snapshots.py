"""JSON snapshots of each stack, normalized (asset hashes, CDK metadata, CDK-managed Lambda runtimes).

A diff here is a reviewed change: update with ``pytest tests/stacks/test_snapshots.py --snapshot-update``
and read the diff before committing.
"""

from __future__ import annotations

import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from tests.conftest import Synthesized
from tests.helpers.cfn import normalize_template


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


@pytest.mark.parametrize("stack_id", ["Network", "Cluster"])
def test_stack_snapshot(synthesized: Synthesized, stack_id: str, snapshot_json: SnapshotAssertion) -> None:
    assert normalize_template(synthesized.template(stack_id)) == snapshot_json


def test_normalization_masks_only_churn() -> None:
    template = {
        "Parameters": {"BootstrapVersion": {"Type": "String"}, "Keep": {"Type": "String"}},
        "Outputs": {"PublishOutputRefVpc1234": {"Value": {"Ref": "Vpc"}}, "VpcId": {"Value": {"Ref": "Vpc"}}},
        "Resources": {
            "CDKMetadata": {"Type": "AWS::CDK::Metadata", "Properties": {"Analytics": "v2:deflate64:abc"}},
            "Fn": {
                "Type": "AWS::Lambda::Function",
                "Metadata": {"aws:asset:path": "asset.x", "cfn-lint": {"config": {}}},
                "Properties": {"Runtime": "nodejs22.x", "Code": {"S3Key": "a" * 64 + ".zip"}},
            },
            "Image": {"Type": "AWS::Lambda::Function", "Properties": {"PackageType": "Image"}},
        },
    }
    normalized = normalize_template(template)
    assert normalized == {
        "Parameters": {"Keep": {"Type": "String"}},
        "Outputs": {"VpcId": {"Value": {"Ref": "Vpc"}}},
        "Resources": {
            "Fn": {
                "Type": "AWS::Lambda::Function",
                "Metadata": {"cfn-lint": {"config": {}}},
                "Properties": {"Runtime": "<cdk-managed-runtime>", "Code": {"S3Key": "<asset-hash>.zip"}},
            },
            "Image": {"Type": "AWS::Lambda::Function", "Properties": {"PackageType": "Image"}},
        },
    }
