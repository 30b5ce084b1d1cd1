"""The ``deployMode`` switch and the ``pipeline`` section: defaults, overrides and every error path."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from config import ConfigError, load_config
from config.pipeline import (
    CrossAccountKeys,
    DeployMode,
    SourceProvider,
    load_pipeline_config,
    pinned_cdk_cli_version,
)
from tests.conftest import REPO, cdk_json_context
from tests.stacks.pipeline.conftest import CONNECTION_ARN, PIPELINE_SECTION

CODECOMMIT = {"provider": "codecommit", "repository": "llama-eks"}


def _ctx(mode: str = "pipeline", **changes: Any) -> dict[str, Any]:
    section = copy.deepcopy(PIPELINE_SECTION)
    for key, value in changes.items():
        if value is None:
            section.pop(key, None)
        else:
            section[key] = value
    return {"deployMode": mode, "pipeline": section}


def _source(**changes: Any) -> dict[str, Any]:
    source = copy.deepcopy(PIPELINE_SECTION["source"])
    for key, value in changes.items():
        if value is None:
            source.pop(key, None)
        else:
            source[key] = value
    return source


def _error(context: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        load_pipeline_config(context)
    return str(err.value)


def test_defaults_of_the_repository_are_direct_mode() -> None:
    # cdk.json as committed: laptop mode, so `make synth` never needs a pipeline account.
    config = load_pipeline_config(cdk_json_context())
    assert config.deploy_mode is DeployMode.DIRECT
    assert not config.enabled
    assert config.stages == ("dev", "prod")
    assert config.approval_stages == ("prod",)


def test_pipeline_section_parsed() -> None:
    config = load_pipeline_config(_ctx())
    assert config.enabled
    assert config.account == "111111111111"
    assert config.source is not None
    assert config.source.provider is SourceProvider.GITHUB
    assert config.source.connection_arn == CONNECTION_ARN
    assert config.source.repository == "acme/llama-eks"
    assert config.source.branch == "main"
    assert config.source.trigger_on_push is True
    assert config.cross_account_keys is CrossAccountKeys.AUTO
    assert config.synth_compute_type == "large"
    assert (
        config.smoke_test.enabled,
        config.smoke_test.ready_timeout_s,
        config.smoke_test.predict_timeout_s,
    ) == (
        True,
        1200,
        300,
    )


def test_cli_version_is_the_one_pinned_in_package_json() -> None:
    package = json.loads((REPO / "package.json").read_text())
    assert pinned_cdk_cli_version() == package["devDependencies"]["aws-cdk"]
    assert pinned_cdk_cli_version().startswith("2.")  # npm `latest` (3.0.0) cannot read our assemblies
    assert load_pipeline_config(_ctx()).cli_version == pinned_cdk_cli_version()


def test_dotted_overrides_apply_to_the_pipeline_section() -> None:
    context = {**_ctx(), "pipeline.source.branch": "release", "pipeline.smokeTest.enabled": "false"}
    config = load_pipeline_config(context)
    assert config.source is not None and config.source.branch == "release"
    assert config.smoke_test.enabled is False


def test_pipeline_overrides_do_not_disturb_the_environment_config() -> None:
    # `-c pipeline.x=y` is the pipeline's; the per-environment loader must not reject it.
    context = {**cdk_json_context(), "pipeline.source.branch": "release", "aws.account": "111111111111"}
    assert load_config(context).aws.account == "111111111111"


@pytest.mark.parametrize(
    "arn",
    [
        CONNECTION_ARN,
        ""
        "arn:aws:codestar-connections:eu-central-1:123456789012:connection/0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d",
    ],
)
def test_both_connection_arn_prefixes_accepted(arn: str) -> None:
    config = load_pipeline_config(_ctx(source=_source(connectionArn=arn)))
    assert config.source is not None and config.source.connection_arn == arn


def test_codecommit_source() -> None:
    config = load_pipeline_config(_ctx(source=CODECOMMIT))
    assert config.source is not None
    assert config.source.provider is SourceProvider.CODECOMMIT
    assert config.source.connection_arn is None


def test_gitlab_nested_group_repository() -> None:
    config = load_pipeline_config(
        _ctx(source=_source(provider="gitlab", repository="acme/platform/llama-eks"))
    )
    assert config.source is not None and config.source.repository == "acme/platform/llama-eks"


# ------------------------------------------------------------ error paths: exact messages

ARN_ALLOWED = (
    "Allowed: a CodeStar Connections ARN: arn:aws:codeconnections:REGION:ACCOUNT:connection/UUID "
    "(or codestar-connections)."
)


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (
            {"deployMode": "both"},
            "Invalid config 'deployMode': 'both'. Allowed: one of ['direct', 'pipeline'].",
        ),
        (
            _ctx(account=None),
            "Invalid config 'pipeline.account': None. Allowed: a 12-digit AWS account id "
            "(required when deployMode=pipeline).",
        ),
        (
            _ctx(account="1234"),
            "Invalid config 'pipeline.account': '1234'. Allowed: a 12-digit AWS account id.",
        ),
        (
            _ctx(region="mars-1"),
            "Invalid config 'pipeline.region': 'mars-1'. Allowed: an AWS region name such as us-west-2.",
        ),
        (
            _ctx(source=None),
            "2 invalid config values:\n"
            "- Invalid config 'pipeline.source.provider': None. Allowed: a value is required.\n"
            "- Invalid config 'pipeline.source.repository': None. Allowed: a value is required.",
        ),
        (
            _ctx(source=_source(provider="svn")),
            "Invalid config 'pipeline.source.provider': 'svn'. "
            "Allowed: one of ['bitbucket', 'codecommit', 'github', 'gitlab'].",
        ),
        (
            _ctx(source=_source(connectionArn="arn:aws:iam::111111111111:role/x")),
            "Invalid config 'pipeline.source.connectionArn': 'arn:aws:iam::111111111111:role/x'. "
            + ARN_ALLOWED,
        ),
        (
            _ctx(source=_source(connectionArn=None)),
            f"Invalid config 'pipeline.source.connectionArn': None. {ARN_ALLOWED}",
        ),
        (
            _ctx(source=_source(repository="llama-eks")),
            "Invalid config 'pipeline.source.repository': 'llama-eks'. "
            "Allowed: 'owner/name' of the github repository.",
        ),
        (
            _ctx(source={**CODECOMMIT, "connectionArn": CONNECTION_ARN}),
            f"Invalid config 'pipeline.source.connectionArn': '{CONNECTION_ARN}'. "
            "Allowed: null for provider 'codecommit'.",
        ),
        (
            _ctx(source={**CODECOMMIT, "repository": "acme/llama-eks"}),
            "Invalid config 'pipeline.source.repository': 'acme/llama-eks'. "
            "Allowed: a CodeCommit repository name (letters, digits, . _ -).",
        ),
        (
            _ctx(source=_source(branch="feature..x")),
            "Invalid config 'pipeline.source.branch': 'feature..x'. Allowed: a git branch name.",
        ),
        (
            _ctx(source=_source(banch="main")),
            "Invalid config 'pipeline.source.banch': 'main'. Allowed: known keys of 'pipeline.source' are "
            "['branch', 'connectionArn', 'provider', 'repository', 'sharedData', 'triggerOnPush'].",
        ),
        (
            _ctx(stages=[]),
            "Invalid config 'pipeline.stages': []. "
            "Allowed: a non-empty list of environment names (deploy order).",
        ),
        (
            _ctx(stages=["dev", "prod", "dev"]),
            "Invalid config 'pipeline.stages': ['dev', 'prod', 'dev']. Allowed: each environment once "
            "(repeated: ['dev']).",
        ),
        (
            _ctx(approvalStages=["staging"]),
            "Invalid config 'pipeline.approvalStages': 'staging'. "
            "Allowed: one of the stages ['dev', 'prod'].",
        ),
        (
            _ctx(crossAccountKeys="yes"),
            "Invalid config 'pipeline.crossAccountKeys': 'yes'. Allowed: one of ['always', 'auto', 'never'].",
        ),
        (
            _ctx(synthComputeType="huge"),
            "Invalid config 'pipeline.synthComputeType': 'huge'. "
            "Allowed: one of ['2xlarge', 'large', 'medium', 'small', 'xlarge'].",
        ),
        (
            _ctx(dockerHubSecretArn="dockerhub"),
            "Invalid config 'pipeline.dockerHubSecretArn': 'dockerhub'. Allowed: null or a Secrets Manager "
            "secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME).",
        ),
        (
            _ctx(smokeTest={"readyTimeoutSeconds": 5}),
            "Invalid config 'pipeline.smokeTest.readyTimeoutSeconds': 5. "
            "Allowed: an integer from 30 to 3600.",
        ),
        (
            _ctx(name="my pipeline"),
            "Invalid config 'pipeline.name': 'my pipeline'. "
            "Allowed: a name of letters, digits and '-', starting with a letter.",
        ),
        (
            _ctx(stagez=["dev"]),
            "Invalid config 'pipeline.stagez': ['dev']. Allowed: known keys of 'pipeline' are "
            "['account', 'approvalStages', 'crossAccountKeys', 'dockerHubSecretArn', 'name', 'region', "
            "'smokeTest', 'source', 'stages', 'synthComputeType'].",
        ),
        (
            {"deployMode": "pipeline", "pipeline": "on"},
            "Invalid config 'pipeline': 'on'. Allowed: a JSON object.",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None,
)
def test_errors(context: dict[str, Any], message: str) -> None:
    assert _error(context) == message


def test_direct_mode_still_validates_a_present_section() -> None:
    # A typo in the pipeline section fails synth even in laptop mode (it would bite on the switch).
    assert _error(_ctx("direct", source=_source(provider="svn"))).startswith(
        "Invalid config 'pipeline.source.provider': 'svn'."
    )


def test_direct_mode_needs_no_pipeline_account() -> None:
    assert not load_pipeline_config(_ctx("direct", account=None, source=None)).enabled


# ------------------------------------------------------------ how the smoke test reaches each stage


def _stage(pipeline_changes: dict[str, Any], **overrides: Any) -> tuple[Any, Any]:
    from tests.stacks.pipeline.conftest import pipeline_context

    context = pipeline_context({**PIPELINE_SECTION, **pipeline_changes}, **overrides)
    return load_config({**context, "env": "prod"}), load_pipeline_config(context)


#: Internet-facing as env=prod allows it (TLS); the API key is on there by default.
INTERNET = {
    "inference.exposure.scheme": "internet-facing",
    "inference.exposure.sourceRanges": ["203.0.113.0/24"],
    "inference.exposure.certificateArn": (
        "arn:aws:acm:us-west-2:111111111111:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
    ),
}
API_KEY_SECRET = "arn:aws:secretsmanager:us-west-2:111111111111:secret:llama-api-key-AbCdEf"


@pytest.mark.parametrize(
    ("via", "overrides", "expected"),
    [
        ("auto", {}, "kubernetes-api"),
        ("auto", INTERNET, "endpoint"),
        ("endpoint", INTERNET, "endpoint"),
    ],
)
def test_smoke_via(via: str, overrides: dict[str, Any], expected: str) -> None:
    from stacks.pipeline.compose import smoke_access

    config, pipeline = _stage({"smokeTest": {"via": via, "apiKeySecretArn": API_KEY_SECRET}}, **overrides)
    access = smoke_access("prod", config, pipeline)
    assert access is not None
    assert (access.via, access.pipeline_account, access.pipeline_name) == (
        expected,
        "111111111111",
        "llama-eks-pipeline",
    )


def test_smoke_off_means_no_access() -> None:
    from stacks.pipeline.compose import smoke_access

    config, pipeline = _stage({"smokeTest": {"enabled": False}})
    assert smoke_access("prod", config, pipeline) is None


@pytest.mark.parametrize(
    ("smoke", "overrides", "message"),
    [
        (
            {"via": "endpoint"},
            {},
            "Invalid config 'pipeline.smokeTest.via': 'endpoint'. "
            "Allowed: 'auto' or 'kubernetesApi' for stage 'prod': its NLB is internal "
            "(inference.exposure.scheme), CodeBuild cannot reach it.",
        ),
        (
            {},
            {"cluster.endpointAccess": "private"},
            "Invalid config 'pipeline.smokeTest.enabled': True. "
            "Allowed: false for stage 'prod': its cluster API is private (cluster.endpointAccess) and its "
            "NLB internal, so CodeBuild outside the VPC reaches "
            "neither.",
        ),
        (
            {},
            {"inference.apiKey.enabled": True},
            "Invalid config 'pipeline.smokeTest.via': 'auto'. "
            "Allowed: 'endpoint' (with an internet-facing NLB) for stage 'prod': inference.apiKey.enabled "
            "needs the bearer header, which the API server's proxy does not pass on.",
        ),
        (
            # Internet-facing turns the API key on: the API server's proxy cannot carry it.
            {"via": "kubernetesApi"},
            INTERNET,
            "Invalid config 'pipeline.smokeTest.via': 'kubernetesApi'. "
            "Allowed: 'endpoint' (with an internet-facing NLB) for stage 'prod': inference.apiKey.enabled "
            "needs the bearer header, which the API server's proxy does not pass on.",
        ),
        (
            {},
            {**INTERNET, "inference.apiKey.enabled": True},
            "Invalid config 'pipeline.smokeTest.apiKeySecretArn': None. "
            "Allowed: a Secrets Manager secret ARN holding the API key of stage 'prod' "
            "(inference.apiKey.enabled).",
        ),
        (
            {"via": "ssh"},
            {},
            "Invalid config 'pipeline.smokeTest.via': 'ssh'. Allowed: one of ['auto', 'endpoint', "
            "'kubernetesApi'].",
        ),
        (
            {"apiKeySecretArn": "my-key"},
            {},
            "Invalid config 'pipeline.smokeTest.apiKeySecretArn': 'my-key'. "
            "Allowed: null or a Secrets Manager secret ARN "
            "(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME).",
        ),
    ],
)
def test_smoke_errors(smoke: dict[str, Any], overrides: dict[str, Any], message: str) -> None:
    from stacks.pipeline.compose import smoke_access

    with pytest.raises(ConfigError) as err:
        config, pipeline = _stage({"smokeTest": smoke}, **overrides)
        smoke_access("prod", config, pipeline)
    assert str(err.value) == message


def test_shared_data_repository() -> None:
    source = load_pipeline_config(_ctx()).source
    assert source is not None and source.shared_data is not None
    assert (source.shared_data.repository, source.shared_data.branch) == ("acme/llama-eks-shared", "main")
    assert load_pipeline_config(_ctx(source=_source(sharedData=None))).source.shared_data is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("shared", "message"),
    [
        (
            {"repository": "shared"},
            "Invalid config 'pipeline.source.sharedData.repository': 'shared'. "
            "Allowed: 'owner/name' of the github repository.",
        ),
        (
            {"repository": "acme/shared", "tag": "v1"},
            "Invalid config 'pipeline.source.sharedData.tag': 'v1'. "
            "Allowed: known keys of 'pipeline.source.sharedData' are ['branch', 'repository'].",
        ),
    ],
)
def test_shared_data_errors(shared: dict[str, Any], message: str) -> None:
    assert _error(_ctx(source=_source(sharedData=shared))) == message
