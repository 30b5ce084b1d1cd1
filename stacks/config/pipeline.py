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
        "via": "auto",               # endpoint (internet-facing NLB) | kubernetesApi (API server proxy)
        "readyTimeoutSeconds": 1200,
        "predictTimeoutSeconds": 300,
        "apiKeySecretArn": null      # Secrets Manager secret with the API key (inference.apiKey.enabled)
      }
    }

Every value is validated on load; errors name the dotted key, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ._parse import Section
from .errors import ConfigError

_REPO_ROOT = Path(__file__).resolve().parents[2]

#: Top-level context keys of this module (global: not overridable per environment).
PIPELINE_SECTION = "pipeline"
DEPLOY_MODE_KEY = "deployMode"

_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d$")
# CodeStar Connections ARNs kept both service prefixes after the 2024 rename to CodeConnections.
_CONNECTION_ARN = re.compile(
    r"^arn:aws(-cn|-us-gov)?:(codestar-connections|codeconnections):[a-z]{2}(-gov)?-[a-z]+-\d:\d{12}:"
    r"connection/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
)
_SECRET_ARN = re.compile(r"^arn:aws(-cn|-us-gov)?:secretsmanager:[a-z]{2}(-gov)?-[a-z]+-\d:\d{12}:secret:.+$")
# owner/name; GitLab allows nested groups (group/subgroup/name).
_CONNECTION_REPO = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$")
_CODECOMMIT_REPO = re.compile(r"^[\w.-]{1,100}$")
# Git ref names: no spaces, no "..", no leading "-" or "/", no "~^:?*[\".
_BRANCH = re.compile(r"^(?![-/])(?!.*\.\.)[^\s~^:?*\[\\]{1,255}(?<![/.])$")
_PIPELINE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,99}$")


def pinned_cdk_cli_version() -> str:
    """The aws-cdk CLI version pinned in ``package.json`` (the pipeline installs exactly this one)."""
    package = json.loads((_REPO_ROOT / "package.json").read_text())
    return str(package["devDependencies"]["aws-cdk"])


#: cdk-assets (the asset publisher the pipeline installs). Pinned: the pipelines default is "latest".
CDK_ASSETS_VERSION = "4.7.3"


class DeployMode(StrEnum):
    """What ``app.py`` builds: the stacks themselves, or the pipeline that deploys them."""

    DIRECT = "direct"
    PIPELINE = "pipeline"


class SourceProvider(StrEnum):
    GITHUB = "github"
    GITLAB = "gitlab"
    BITBUCKET = "bitbucket"
    CODECOMMIT = "codecommit"

    @property
    def uses_connection(self) -> bool:
        return self is not SourceProvider.CODECOMMIT


class SmokeVia(StrEnum):
    """How the post-deploy smoke test reaches a stage's service."""

    AUTO = "auto"  # endpoint for an internet-facing NLB, kubernetesApi for an internal one
    ENDPOINT = "endpoint"  # straight to the NLB hostname
    KUBERNETES_API = "kubernetesApi"  # through the EKS API server's service proxy


class CrossAccountKeys(StrEnum):
    AUTO = "auto"  # a customer-managed key exactly when some stage deploys to another account
    ALWAYS = "always"
    NEVER = "never"


#: CodeBuild compute types by config name.
COMPUTE_TYPES: tuple[str, ...] = ("small", "medium", "large", "xlarge", "2xlarge")


@dataclass(frozen=True)
class SharedDataConfig:
    """A second repository (same provider and connection) checked out beside the source as ``../shared``:
    the CRDs and IAM reference files that synth and the tests read (CI has them beside the clone)."""

    repository: str
    branch: str = "main"


@dataclass(frozen=True)
class SourceConfig:
    """Where commits come from. ``connection_arn`` is None exactly for CodeCommit."""

    provider: SourceProvider
    repository: str
    branch: str = "main"
    connection_arn: str | None = None
    trigger_on_push: bool = True
    shared_data: SharedDataConfig | None = None


@dataclass(frozen=True)
class SmokeTestConfig:
    """Post-deploy check of each stage: GET /readyz until ready, then the seed's POST /predict.

    Defaults: enabled; ``via`` auto (see :class:`SmokeVia`); wait up to 1200 s for readiness (a GPU node
    from Karpenter plus the model download and load take minutes), 300 s for the /predict answer;
    ``api_key_secret_arn`` (a Secrets Manager secret with the service's API key) only needed for stages
    with ``inference.apiKey.enabled``.
    """

    enabled: bool = True
    via: SmokeVia = SmokeVia.AUTO
    ready_timeout_s: int = 1200
    predict_timeout_s: int = 300
    api_key_secret_arn: str | None = None


@dataclass(frozen=True)
class PipelineConfig:
    """The delivery pipeline. Only used when ``deploy_mode`` is ``pipeline``."""

    deploy_mode: DeployMode
    name: str
    account: str | None
    region: str
    source: SourceConfig | None
    stages: tuple[str, ...]
    approval_stages: tuple[str, ...]
    cross_account_keys: CrossAccountKeys
    synth_compute_type: str
    docker_hub_secret_arn: str | None
    smoke_test: SmokeTestConfig
    cli_version: str
    cdk_assets_version: str = CDK_ASSETS_VERSION

    @property
    def enabled(self) -> bool:
        return self.deploy_mode is DeployMode.PIPELINE

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


def from_section(s: Section, deploy_mode: str = DeployMode.DIRECT.value) -> PipelineConfig:
    """Validate the ``pipeline`` section. In ``direct`` mode only its shape is checked, loosely.

    ``deploy_mode`` is the top-level ``deployMode`` context value (default ``direct``).
    """
    if deploy_mode not in {m.value for m in DeployMode}:
        raise ConfigError("deployMode", deploy_mode, f"one of {sorted(m.value for m in DeployMode)}")
    mode = DeployMode(deploy_mode)
    enabled = mode is DeployMode.PIPELINE

    name = s.string("name", "llama-eks-pipeline")
    if not _PIPELINE_NAME.match(name):
        raise ConfigError(s.key("name"), name, "a name of letters, digits and '-', starting with a letter")
    account = s.raw("account", None)
    if account is not None:
        account = str(account)
        if not _ACCOUNT.match(account):
            raise ConfigError(s.key("account"), account, "a 12-digit AWS account id")
    elif enabled:
        raise ConfigError(
            s.key("account"), None, "a 12-digit AWS account id (required when deployMode=pipeline)"
        )
    region = s.string("region", "us-west-2")
    if not _REGION.match(region):
        raise ConfigError(s.key("region"), region, "an AWS region name such as us-west-2")

    source = _source(s.section("source")) if (enabled or s.has("source")) else None

    stages = s.string_list("stages", ["dev", "prod"], non_empty=False)
    if not stages:
        raise ConfigError(
            s.key("stages"), list(stages), "a non-empty list of environment names (deploy order)"
        )
    duplicates = sorted({x for x in stages if stages.count(x) > 1})
    if duplicates:
        raise ConfigError(s.key("stages"), list(stages), f"each environment once (repeated: {duplicates})")
    approval = s.string_list("approvalStages", ["prod"], non_empty=False)
    for stage in approval:
        if stage not in stages:
            raise ConfigError(s.key("approvalStages"), stage, f"one of the stages {list(stages)}")

    keys = s.string(
        "crossAccountKeys", CrossAccountKeys.AUTO.value, choices=[m.value for m in CrossAccountKeys]
    )
    compute = s.string("synthComputeType", "large", choices=COMPUTE_TYPES)
    docker_secret = s.raw("dockerHubSecretArn", None)
    if docker_secret is not None and (
        not isinstance(docker_secret, str) or not _SECRET_ARN.match(docker_secret)
    ):
        raise ConfigError(
            s.key("dockerHubSecretArn"),
            docker_secret,
            "null or a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)",
        )
    smoke = _smoke(s.section("smokeTest"))
    s.reject_unknown()
    return PipelineConfig(
        deploy_mode=mode,
        name=name,
        account=account,
        region=region,
        source=source,
        stages=stages,
        approval_stages=approval,
        cross_account_keys=CrossAccountKeys(keys),
        synth_compute_type=compute,
        docker_hub_secret_arn=docker_secret,
        smoke_test=smoke,
        cli_version=pinned_cdk_cli_version(),
    )


def _repository(s: Section, name: str, provider: SourceProvider) -> str:
    repository = s.string(name)
    if provider.uses_connection and not _CONNECTION_REPO.match(repository):
        raise ConfigError(s.key(name), repository, f"'owner/name' of the {provider.value} repository")
    if not provider.uses_connection and not _CODECOMMIT_REPO.match(repository):
        raise ConfigError(s.key(name), repository, "a CodeCommit repository name (letters, digits, . _ -)")
    return repository


def _branch(s: Section) -> str:
    branch = s.string("branch", "main")
    if not _BRANCH.match(branch):
        raise ConfigError(s.key("branch"), branch, "a git branch name")
    return branch


def _source(s: Section) -> SourceConfig:
    provider = SourceProvider(s.string("provider", choices=[p.value for p in SourceProvider]))
    repository = _repository(s, "repository", provider)
    arn = s.raw("connectionArn", None)
    if provider.uses_connection:
        if not isinstance(arn, str) or not _CONNECTION_ARN.match(arn):
            raise ConfigError(
                s.key("connectionArn"),
                arn,
                "a CodeStar Connections ARN: arn:aws:codeconnections:REGION:ACCOUNT:connection/UUID "
                "(or codestar-connections)",
            )
    elif arn is not None:
        raise ConfigError(s.key("connectionArn"), arn, "null for provider 'codecommit'")
    branch = _branch(s)
    trigger = s.boolean("triggerOnPush", True)
    shared = None
    if s.has("sharedData"):
        d = s.section("sharedData")
        shared = SharedDataConfig(repository=_repository(d, "repository", provider), branch=_branch(d))
        d.reject_unknown()
    s.reject_unknown()
    return SourceConfig(
        provider=provider,
        repository=repository,
        branch=branch,
        connection_arn=arn,
        trigger_on_push=trigger,
        shared_data=shared,
    )


def _smoke(s: Section) -> SmokeTestConfig:
    secret = s.raw("apiKeySecretArn", None)
    if secret is not None and (not isinstance(secret, str) or not _SECRET_ARN.match(secret)):
        raise ConfigError(
            s.key("apiKeySecretArn"),
            secret,
            "null or a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)",
        )
    cfg = SmokeTestConfig(
        enabled=s.boolean("enabled", SmokeTestConfig.enabled),
        via=SmokeVia(s.string("via", SmokeTestConfig.via.value, choices=[v.value for v in SmokeVia])),
        ready_timeout_s=s.integer(
            "readyTimeoutSeconds", SmokeTestConfig.ready_timeout_s, minimum=30, maximum=3600
        ),
        predict_timeout_s=s.integer(
            "predictTimeoutSeconds", SmokeTestConfig.predict_timeout_s, minimum=10, maximum=900
        ),
        api_key_secret_arn=secret,
    )
    s.reject_unknown()
    return cfg


def load_pipeline_config(context: Mapping[str, Any]) -> PipelineConfig:
    """The pipeline part of the context: ``deployMode``, the ``pipeline`` section and its dotted overrides.

    ``-c pipeline.source.branch=release`` overrides one key, like the other sections' ``-c`` overrides.
    """
    mode = context.get(DEPLOY_MODE_KEY, DeployMode.DIRECT.value)
    section = context.get("pipeline")
    if section is not None and not isinstance(section, Mapping):
        raise ConfigError("pipeline", section, "a JSON object")
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
    return from_section(Section(merged, PIPELINE_SECTION), mode)
