"""Typed configuration of the delivery pipeline: the ``deployMode`` switch and the ``pipeline`` section.

Context layout (top level of ``cdk.json`` context; both are global, not per environment)::

    "deployMode": "direct",          # "direct": app.py builds the stacks (laptop `cdk deploy`)
                                     # "pipeline": app.py builds only the PipelineStack
    "pipeline": {
      "name": "llama-eks-pipeline",  # CodePipeline name and CloudFormation stack name
      "account": "111111111111",     # where the pipeline runs (required in pipeline mode)
      "region": "us-west-2",
      "source": {
        "provider": "github",        # github | gitlab | bitbucket (CodeStar Connections) | codecommit
        "connectionArn": "arn:aws:codeconnections:us-west-2:111111111111:connection/<uuid>",
        "repository": "my-org/llama-eks",   # owner/name (GitLab: group/subgroup/name); CodeCommit: name
        "branch": "main",
        "triggerOnPush": true,
        "sharedData": {"repository": "my-org/llama-eks-shared", "branch": "main"}  # -> ../shared
      },
      "stages": ["dev", "prod"],     # environments (keys of "environments"), deployed in this order
      "approvalStages": ["prod"],    # stages that wait for a ManualApprovalStep before they deploy
      "crossAccountKeys": "auto",    # auto: a customer-managed KMS key when any stage is in another account
      "synthComputeType": "large",   # CodeBuild size of the synth step (it runs `make test`)
      "dockerHubSecretArn": null,    # Secrets Manager secret {username, secret} for Docker Hub pulls
      "smokeTest": {
        "enabled": true,
        "via": "auto",               # endpoint (internet-facing NLB) | vpc (CodeBuild in the cluster VPC)
                                     # | kubernetesApi (API server proxy)
        "readyTimeoutSeconds": 1200,
        "predictTimeoutSeconds": 300,
        "apiKeySecretArn": null      # Secrets Manager secret with the API key (inference.apiKey.enabled)
      }
    }

Every value is validated on load; errors name the dotted key, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
import enum
import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, Strict, ValidationInfo, model_validator

from .base import (
    ACCOUNT_PATTERN,
    REGION_PATTERN,
    SECRET_ARN_PATTERN,
    Bool,
    ConfigModel,
    Given,
    Int,
    Str,
    StrList,
)
from .errors import Allowed, ConfigError, Invalid, matches, raise_all

_REPO_ROOT = Path(__file__).resolve().parents[1]

#: Top-level context keys of this module (global: not overridable per environment).
PIPELINE_SECTION = "pipeline"
DEPLOY_MODE_KEY = "deployMode"

# CodeStar Connections ARNs kept both service prefixes after the 2024 rename to CodeConnections.
_CONNECTION_ARN = (
    r"arn:aws(-cn|-us-gov)?:(codestar-connections|codeconnections):[a-z]{2}(-gov)?-[a-z]+-\d:\d{12}:"
    r"connection/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)
_CONNECTION_ARN_ALLOWED = (
    "a CodeStar Connections ARN: arn:aws:codeconnections:REGION:ACCOUNT:connection/UUID "
    "(or codestar-connections)"
)
_SECRET_ALLOWED = "null or a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)"
# owner/name; GitLab allows nested groups (group/subgroup/name).
_CONNECTION_REPO = r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+"
_CODECOMMIT_REPO = r"[\w.-]{1,100}"
# Git ref names: no spaces, no "..", no leading "-" or "/", no "~^:?*[\".
_BRANCH = r"(?![-/])(?!.*\.\.)[^\s~^:?*\[\\]{1,255}(?<![/.])"

_REPOSITORY_ALLOWED = "'owner/name' (GitLab: 'group/subgroup/name'); for CodeCommit a repository name"
SecretArn = Annotated[str, Strict(), matches(SECRET_ARN_PATTERN, _SECRET_ALLOWED)]
Branch = Annotated[str, Strict(), matches(_BRANCH, "a git branch name")]


@functools.cache
def pinned_cdk_cli_version() -> str:
    """The aws-cdk CLI version pinned in ``package.json`` (the pipeline installs exactly this one)."""
    package = json.loads((_REPO_ROOT / "package.json").read_text())
    return str(package["devDependencies"]["aws-cdk"])


#: cdk-assets (the asset publisher the pipeline installs). Pinned: the pipelines default is "latest".
CDK_ASSETS_VERSION = "4.7.3"


class DeployMode(enum.StrEnum):
    """What ``app.py`` builds: the stacks themselves, or the pipeline that deploys them."""

    DIRECT = "direct"
    PIPELINE = "pipeline"


class SourceProvider(enum.StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"
    BITBUCKET = "bitbucket"
    CODECOMMIT = "codecommit"

    @property
    def uses_connection(self) -> bool:
        return self is not SourceProvider.CODECOMMIT


class SmokeVia(enum.StrEnum):
    """How the post-deploy smoke test reaches a stage's service."""

    AUTO = "auto"  # endpoint for an internet-facing NLB, vpc for an internal one
    ENDPOINT = "endpoint"  # straight to the NLB hostname, from the pipeline's CodeBuild
    VPC = "vpc"  # from a CodeBuild project of the stage in the cluster VPC's private subnets
    KUBERNETES_API = "kubernetesApi"  # through the EKS API server's service proxy (public API endpoint)


class CrossAccountKeys(enum.StrEnum):
    AUTO = "auto"  # a customer-managed key exactly when some stage deploys to another account
    ALWAYS = "always"
    NEVER = "never"


#: CodeBuild compute types by config name.
ComputeType = Literal["small", "medium", "large", "xlarge", "2xlarge"]


def _repository_problem(key: str, repository: str, provider: SourceProvider) -> Invalid | None:
    if provider.uses_connection and not re.fullmatch(_CONNECTION_REPO, repository):
        return Invalid(f"'owner/name' of the {provider.value} repository", key=key, value=repository)
    if not provider.uses_connection and not re.fullmatch(_CODECOMMIT_REPO, repository):
        return Invalid("a CodeCommit repository name (letters, digits, . _ -)", key=key, value=repository)
    return None


class SharedDataConfig(ConfigModel):
    """A second repository (same provider and connection) checked out beside the source as ``../shared``:
    the CRDs and IAM reference files that synth and the tests read (CI has them beside the clone)."""

    path = "pipeline.source.sharedData"

    repository: Annotated[Str, Allowed(_REPOSITORY_ALLOWED)] = Field(
        description="The shared-data repository, on the same provider as the source."
    )
    branch: Branch = Field("main", description="Its branch.")


class SourceConfig(ConfigModel):
    """Where commits come from. ``connectionArn`` is null exactly for CodeCommit."""

    path = "pipeline.source"

    provider: SourceProvider = Field(
        description="`github`, `gitlab`, `bitbucket` (through a CodeStar Connection) or `codecommit`."
    )
    repository: Annotated[Str, Allowed(_REPOSITORY_ALLOWED)] = Field(description="The repository.")
    branch: Branch = Field("main", description="The branch the pipeline deploys.")
    connection_arn: Annotated[str, Strict(), matches(_CONNECTION_ARN, _CONNECTION_ARN_ALLOWED)] | None = (
        Field(
            None,
            description="The CodeStar Connection (required except for CodeCommit, where it must be null).",
        )
    )
    trigger_on_push: Bool = Field(True, description="Start the pipeline on every push to `branch`.")
    shared_data: SharedDataConfig | None = Field(
        None, description="The shared-data repository checked out as `../shared` (table below)."
    )

    @model_validator(mode="after")
    def _fits_the_provider(self) -> SourceConfig:
        key = "pipeline.source.{}".format
        problems = [_repository_problem(key("repository"), self.repository, self.provider)]
        if self.shared_data is not None:
            problems.append(
                _repository_problem(key("sharedData.repository"), self.shared_data.repository, self.provider)
            )
        if self.provider.uses_connection and self.connection_arn is None:
            problems.append(Invalid(_CONNECTION_ARN_ALLOWED, key=key("connectionArn"), value=None))
        if not self.provider.uses_connection and self.connection_arn is not None:
            problems.append(
                Invalid("null for provider 'codecommit'", key=key("connectionArn"), value=self.connection_arn)
            )
        raise_all([p for p in problems if p is not None])
        return self


class SmokeTestConfig(ConfigModel):
    """Post-deploy check of each stage: GET /readyz until ready, then the seed's POST /predict."""

    path = "pipeline.smokeTest"

    enabled: Bool = Field(True, description="Smoke-test every stage after its deploy.")
    via: SmokeVia = Field(
        SmokeVia.AUTO,
        description="`endpoint` (the NLB hostname from the pipeline's CodeBuild: an internet-facing NLB "
        "whose source ranges admit it), `vpc` (a CodeBuild project of the stage in the cluster VPC's "
        "private subnets requests the internal NLB; works with a private cluster endpoint), "
        "`kubernetesApi` (the EKS API server's service proxy; needs the public API endpoint) or `auto` "
        "(`endpoint` for an internet-facing NLB, else `vpc`).",
    )
    ready_timeout_s: Int = Field(
        1200,
        ge=30,
        le=3600,
        alias="readyTimeoutSeconds",
        description="Wait this long for /readyz (a GPU node from Karpenter plus the model download and load "
        "take minutes).",
    )
    predict_timeout_s: Int = Field(
        300,
        ge=10,
        le=900,
        alias="predictTimeoutSeconds",
        description="Wait this long for the /predict answer.",
    )
    api_key_secret_arn: SecretArn | None = Field(
        None,
        description="Secrets Manager secret with the service's API key "
        "(stages with `inference.apiKey.enabled`; with `vpc`, a secret of the stage's account).",
    )


class PipelineConfig(ConfigModel):
    """The delivery pipeline: the ``pipeline`` section. Used only when ``deployMode`` is ``pipeline``
    (``load_pipeline_config`` reads both); in ``direct`` mode a present section is still validated."""

    path = "pipeline"

    name: Annotated[
        str,
        Strict(),
        matches(r"[A-Za-z][A-Za-z0-9-]{0,99}", "a name of letters, digits and '-', starting with a letter"),
    ] = Field("llama-eks-pipeline", description="CodePipeline name and CloudFormation stack name.")
    account: Annotated[str, Strict(), matches(ACCOUNT_PATTERN, "a 12-digit AWS account id")] | None = Field(
        None,
        description="Where the pipeline runs.",
        json_schema_extra={"defaultDoc": "`null`; required when `deployMode` is `pipeline`"},
    )
    region: Annotated[str, Strict(), matches(REGION_PATTERN, "an AWS region name such as us-west-2")] = Field(
        "us-west-2", description="The pipeline's region."
    )
    source: SourceConfig | None = Field(
        None, description="Where commits come from (table below; required in pipeline mode)."
    )
    stages: StrList = Field(
        ("dev", "prod"), description="Environments (keys of `environments`) deployed in this order."
    )
    approval_stages: StrList = Field(
        ("prod",), description="Stages that wait for a manual approval before they deploy."
    )
    cross_account_keys: CrossAccountKeys = Field(
        CrossAccountKeys.AUTO,
        description="`auto`: a customer-managed KMS key for artifacts when any stage is in another account; "
        "`always`; `never`.",
    )
    synth_compute_type: ComputeType = Field(
        "large", description="CodeBuild size of the synth step (it runs the tests)."
    )
    docker_hub_secret_arn: SecretArn | None = Field(
        None, description="Secrets Manager secret `{username, secret}` for Docker Hub pulls."
    )
    smoke_test: SmokeTestConfig = Field(
        default_factory=SmokeTestConfig, description="The smoke test (table below)."
    )

    _deploy_mode: DeployMode = PrivateAttr(DeployMode.DIRECT)

    @classmethod
    def dependent_defaults(cls, given: Given) -> Mapping[str, Any]:
        # In pipeline mode the source is required: validate a missing one as empty (naming its keys).
        return {"source": {}} if given.context.get(DEPLOY_MODE_KEY) is DeployMode.PIPELINE else {}

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> PipelineConfig:
        self._deploy_mode = (info.context or {}).get(DEPLOY_MODE_KEY, DeployMode.DIRECT)
        problems = []
        if self.enabled and self.account is None:
            problems.append(
                Invalid(
                    "a 12-digit AWS account id (required when deployMode=pipeline)",
                    key="pipeline.account",
                    value=None,
                )
            )
        duplicates = sorted({x for x in self.stages if self.stages.count(x) > 1})
        if not self.stages:
            problems.append(
                Invalid(
                    "a non-empty list of environment names (deploy order)", key="pipeline.stages", value=[]
                )
            )
        elif duplicates:
            problems.append(
                Invalid(
                    f"each environment once (repeated: {duplicates})",
                    key="pipeline.stages",
                    value=list(self.stages),
                )
            )
        unknown = [s for s in self.approval_stages if s not in self.stages]
        if unknown and self.stages:
            problems.append(
                Invalid(
                    f"one of the stages {list(self.stages)}", key="pipeline.approvalStages", value=unknown[0]
                )
            )
        raise_all(problems)
        return self

    @property
    def deploy_mode(self) -> DeployMode:
        return self._deploy_mode

    @property
    def enabled(self) -> bool:
        return self._deploy_mode is DeployMode.PIPELINE

    @property
    def cli_version(self) -> str:
        return pinned_cdk_cli_version()

    @property
    def cdk_assets_version(self) -> str:
        return CDK_ASSETS_VERSION

    def needs_cross_account_keys(self, stage_accounts: dict[str, str]) -> bool:
        """Whether artifacts need a customer-managed KMS key, given each stage's account.

        Raises ConfigError when stages span accounts but ``crossAccountKeys`` is ``never`` (other accounts
        cannot decrypt artifacts under the AWS-managed S3 key).
        """
        foreign = sorted(name for name, account in stage_accounts.items() if account != self.account)
        if self.cross_account_keys is CrossAccountKeys.NEVER and foreign:
            raise ConfigError(
                "pipeline.crossAccountKeys",
                self.cross_account_keys.value,
                f"'auto' or 'always' when stages deploy to another account than the pipeline's "
                f"({', '.join(foreign)})",
            )
        return self.cross_account_keys is CrossAccountKeys.ALWAYS or bool(foreign)


def load_pipeline_config(context: Mapping[str, Any]) -> PipelineConfig:
    """The pipeline part of the context: ``deployMode``, the ``pipeline`` section and its dotted overrides.

    ``-c pipeline.source.branch=release`` overrides one key, like the other sections' ``-c`` overrides.
    """
    raw_mode = context.get(DEPLOY_MODE_KEY, DeployMode.DIRECT.value)
    if raw_mode not in {m.value for m in DeployMode}:
        raise ConfigError(DEPLOY_MODE_KEY, raw_mode, f"one of {sorted(m.value for m in DeployMode)}")
    section = context.get(PIPELINE_SECTION)
    if section is not None and not isinstance(section, Mapping):
        raise ConfigError(PIPELINE_SECTION, section, "a JSON object")
    merged: dict[str, Any] = copy.deepcopy(dict(section or {}))
    for key in sorted(k for k in context if k.startswith(PIPELINE_SECTION + ".")):
        *parents, leaf = key.split(".")[1:]
        target = merged
        for part in parents:
            nxt = target.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(key, context[key], f"a key whose parent '{part}' is a JSON object")
            target = nxt
        target[leaf] = context[key]
    return PipelineConfig.load(merged, context={DEPLOY_MODE_KEY: DeployMode(raw_mode)})
