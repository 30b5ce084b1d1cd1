"""The model server image: built from ``model_server/`` by the CDK CLI and pushed to the bootstrap ECR."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

MODEL_SERVER_DIR = Path(__file__).resolve().parents[2] / "model_server"

#: CUDA variant (docs/image.md): devel image to compile llama.cpp with GGML_CUDA, runtime image to run it.
CUDA_BUILDER_IMAGE = "nvidia/cuda:12.6.3-devel-ubuntu24.04"
CUDA_BASE_IMAGE = "nvidia/cuda:12.6.3-runtime-ubuntu24.04"
CUDA_BUILD_ARGS = {"BUILDER_IMAGE": CUDA_BUILDER_IMAGE, "BASE_IMAGE": CUDA_BASE_IMAGE, "GGML_CUDA": "on"}

#: The CDK bootstrap's image asset repositories: ``cdk-<qualifier>-container-assets-<account>-<region>``.
ASSET_REPOSITORY_FILTER = "cdk-*-container-assets-*"


class ModelServerImage(Construct):
    """``DockerImageAsset`` of ``model_server/Dockerfile`` for linux/amd64 (the GPU and system nodes).

    ``gpu``: the CUDA build args. The asset lands in the CDK bootstrap's container-assets repository
    (``cdk-<qualifier>-container-assets-<account>-<region>``: tag-immutable, the tag is the content hash; the
    bootstrap template sets no scanning on it), so what scans it is the account's ECR registry scanning
    configuration. ``scan_on_push`` (default off, ``inference.registryScanOnPush``) creates that
    configuration: BASIC scan on push for the asset repositories. It is one setting per account and region:
    it replaces whatever is there (Inspector enhanced scanning too) and two stacks with it overwrite each
    other, so a security team's scanning is left alone unless you ask.
    """

    def __init__(self, scope: Construct, construct_id: str, *, gpu: bool, scan_on_push: bool = False) -> None:
        super().__init__(scope, construct_id)
        self.asset = ecr_assets.DockerImageAsset(
            self,
            "Asset",
            directory=str(MODEL_SERVER_DIR),
            platform=ecr_assets.Platform.LINUX_AMD64,
            build_args=dict(CUDA_BUILD_ARGS) if gpu else {},
            display_name="llama model server" + (" (CUDA)" if gpu else " (CPU)"),
        )
        self.image_uri: str = self.asset.image_uri
        self.scanning: ecr.CfnRegistryScanningConfiguration | None = None
        if scan_on_push:
            self.scanning = ecr.CfnRegistryScanningConfiguration(
                self,
                "ScanOnPush",
                scan_type="BASIC",
                rules=[
                    ecr.CfnRegistryScanningConfiguration.ScanningRuleProperty(
                        scan_frequency="SCAN_ON_PUSH",
                        repository_filters=[
                            ecr.CfnRegistryScanningConfiguration.RepositoryFilterProperty(
                                filter=ASSET_REPOSITORY_FILTER, filter_type="WILDCARD"
                            )
                        ],
                    )
                ],
            )
