"""Pipeline wiring with a cheap stage (one small stack with an endpoint output): the smoke-test step,
the other source provider, same-account artifacts, the mode switch. No EKS here: each synth is small."""

from __future__ import annotations

import copy
import json
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Match, Template

from config import ConfigError
from stacks.modes import build_for_mode
from stacks.pipeline.stage import LlamaStage
from tests.stacks.pipeline.conftest import (
    API_KEY_SECRET,
    INTERNET_FACING,
    PIPELINE_SECTION,
    PipelineSynth,
    pipeline_context,
    platform,
    synth_pipeline,
    tiny_builder,
)


def build(app: cdk.App, calls: list[Any] | None = None) -> Any:
    """app.py's build with the cheap stage."""
    with platform(tiny_builder(calls)):
        return build_for_mode(app, app.node.get_all_context())


def _section(**changes: Any) -> dict[str, Any]:
    section = copy.deepcopy(PIPELINE_SECTION)
    section.update(changes)
    return section


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> PipelineSynth:
    """dev -> prod across two accounts, GitHub source, smoke tests on (the defaults)."""
    return synth_pipeline(
        tmp_path_factory.mktemp("tiny"),
        pipeline_context(_section(smokeTest={"apiKeySecretArn": API_KEY_SECRET}), **INTERNET_FACING),
        builder=tiny_builder(),
        nag=False,
    )


def test_smoke_test_runs_after_every_stage_with_the_endpoint_output(tiny: PipelineSynth) -> None:
    for sid in ("Dev", "Prod"):
        actions = tiny.stage(sid)["Actions"]
        (smoke,) = [a for a in actions if a["Name"] == "SmokeTest"]
        (deploy,) = [a for a in actions if a["Name"].endswith("-inference.Deploy")]
        assert smoke["RunOrder"] == deploy["RunOrder"] + 1
        # The stack's outputs are exported as action variables and passed to the step.
        assert deploy["Namespace"]
        env = {e["name"]: e for e in json.loads(smoke["Configuration"]["EnvironmentVariables"])}
        assert env["LLAMA_ENDPOINT"]["value"] == f"#{{{deploy['Namespace']}.EndpointUrl}}"
        (project,) = [
            r
            for lid, r in tiny.template["Resources"].items()
            if r["Type"] == "AWS::CodeBuild::Project" and lid.startswith(f"Pipeline{sid}SmokeTest")
        ]
        spec = json.loads(project["Properties"]["Source"]["BuildSpec"])
        assert spec["phases"]["build"]["commands"] == ["python3 stacks/pipeline/codebuild/smoke.py"]
        assert project["Properties"]["TimeoutInMinutes"] == (1200 + 300 + 300) // 60
        static = {e["Name"]: e["Value"] for e in project["Properties"]["Environment"]["EnvironmentVariables"]}
        assert static == {
            "LLAMA_SMOKE_VIA": "endpoint",
            "LLAMA_API_KEY": API_KEY_SECRET,
            "READY_TIMEOUT_S": "1200",
            "PREDICT_TIMEOUT_S": "300",
        }


def test_smoke_test_reads_the_source_of_the_deployed_commit(tiny: PipelineSynth) -> None:
    (smoke,) = [a for a in tiny.stage("Prod")["Actions"] if a["Name"] == "SmokeTest"]
    (source,) = [a for a in tiny.stage("Source")["Actions"] if a["Name"] == "Source"]
    assert [i["Name"] for i in smoke["InputArtifacts"]] == [o["Name"] for o in source["OutputArtifacts"]]


DOCKER_HUB_SECRET = "arn:aws:secretsmanager:us-west-2:111111111111:secret:dockerhub-AbCdEf"


@pytest.fixture(scope="module")
def codecommit_one_account(tmp_path_factory: pytest.TempPathFactory) -> PipelineSynth:
    """CodeCommit source, a single stage in the pipeline's account, no approval, Docker Hub credentials."""
    section = _section(
        source={"provider": "codecommit", "repository": "llama-eks", "branch": "release"},
        stages=["dev"],
        approvalStages=[],
        dockerHubSecretArn=DOCKER_HUB_SECRET,
        smokeTest={"apiKeySecretArn": API_KEY_SECRET},
    )
    return synth_pipeline(
        tmp_path_factory.mktemp("codecommit"),
        pipeline_context(section, **INTERNET_FACING),
        builder=tiny_builder(),
        nag=False,
    )


@pytest.fixture(scope="module")
def reversed_no_smoke(tmp_path_factory: pytest.TempPathFactory) -> PipelineSynth:
    """prod before dev, approval on dev, smoke tests off."""
    section = _section(stages=["prod", "dev"], approvalStages=["dev"], smokeTest={"enabled": False})
    return synth_pipeline(
        tmp_path_factory.mktemp("reversed"),
        pipeline_context(section, **INTERNET_FACING),
        builder=tiny_builder(),
        nag=False,
    )


def test_smoke_test_off_leaves_no_step(reversed_no_smoke: PipelineSynth) -> None:
    for sid in ("Dev", "Prod"):
        assert "SmokeTest" not in {a["Name"] for a in reversed_no_smoke.stage(sid)["Actions"]}


def test_stages_follow_the_configured_order(reversed_no_smoke: PipelineSynth) -> None:
    assert [s["Name"] for s in reversed_no_smoke.codepipeline["Stages"]][-2:] == ["Prod", "Dev"]
    approvals = [
        a["Name"]
        for sid in ("Prod", "Dev")
        for a in reversed_no_smoke.stage(sid)["Actions"]
        if a["ActionTypeId"]["Category"] == "Approval"
    ]
    assert approvals == ["ApproveDev"]
    (approval,) = [a for a in reversed_no_smoke.stage("Dev")["Actions"] if a["Name"] == "ApproveDev"]
    assert approval["Configuration"]["CustomData"] == (
        "Deploy this commit to 'dev' (account 111111111111, us-west-2)? It is deployed in prod."
    )


def test_codecommit_source(codecommit_one_account: PipelineSynth) -> None:
    synth = codecommit_one_account
    (action,) = synth.stage("Source")["Actions"]
    assert action["ActionTypeId"]["Provider"] == "CodeCommit"
    assert action["Configuration"]["RepositoryName"] == "llama-eks"
    assert action["Configuration"]["BranchName"] == "release"
    names = [s["Name"] for s in synth.codepipeline["Stages"]]
    assert names == ["Source", "Build", "UpdatePipeline", "Dev"]  # the tiny stage has no assets
    assert not [a for a in synth.stage("Dev")["Actions"] if a["ActionTypeId"]["Category"] == "Approval"]


def test_one_account_uses_the_aws_managed_key(codecommit_one_account: PipelineSynth) -> None:
    t = Template.from_json(codecommit_one_account.template)
    # One account: no customer-managed key; artifacts still KMS-encrypted (aws/s3 key).
    t.resource_count_is("AWS::KMS::Key", 0)
    t.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}
                ]
            }
        },
    )
    assert codecommit_one_account.stack.cross_account_keys is False


def test_smoke_test_gets_the_api_key_from_secrets_manager(codecommit_one_account: PipelineSynth) -> None:
    (project,) = [
        r
        for lid, r in codecommit_one_account.template["Resources"].items()
        if r["Type"] == "AWS::CodeBuild::Project" and lid.startswith("PipelineDevSmokeTest")
    ]
    env = {e["Name"]: e for e in project["Properties"]["Environment"]["EnvironmentVariables"]}
    assert env["LLAMA_API_KEY"] == {
        "Name": "LLAMA_API_KEY",
        "Type": "SECRETS_MANAGER",
        "Value": API_KEY_SECRET,
    }
    Template.from_json(codecommit_one_account.template).has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": "secretsmanager:GetSecretValue",
                                "Resource": Match.string_like_regexp("llama-api-key"),
                            }
                        )
                    ]
                )
            }
        },
    )


def test_docker_hub_credentials_are_used_when_configured(codecommit_one_account: PipelineSynth) -> None:
    spec = next(
        json.loads(r["Properties"]["Source"]["BuildSpec"])
        for lid, r in codecommit_one_account.template["Resources"].items()
        if lid.startswith("PipelineBuildSynthCdkBuildProject") and r["Type"] == "AWS::CodeBuild::Project"
    )
    commands = json.dumps(spec["phases"])
    assert "cdk-docker-creds.json" in commands
    assert "dockerhub-AbCdEf" in commands


# ------------------------------------------------------------ the mode switch (no synth)


def test_direct_mode_builds_the_stacks_and_no_pipeline() -> None:
    calls: list[Any] = []
    context = pipeline_context()
    context["deployMode"] = "direct"
    app = cdk.App(context=context)
    result = build(app, calls)
    assert [child.node.id for child in app.node.children] == ["Inference"]
    ((scope, config),) = calls
    assert scope is app and config.env_name == "dev"
    assert result.inference.node.try_find_child("EndpointHostname") is not None


def test_pipeline_mode_builds_each_stage_once_with_its_own_config() -> None:
    calls: list[Any] = []
    app = cdk.App(
        context=pipeline_context(_section(smokeTest={"apiKeySecretArn": API_KEY_SECRET}), **INTERNET_FACING)
    )
    build(app, calls)
    assert [child.node.id for child in app.node.children] == ["Pipeline"]
    assert [(type(scope), scope.node.id, config.env_name, config.aws.account) for scope, config in calls] == [
        (LlamaStage, "Dev", "dev", "111111111111"),
        (LlamaStage, "Prod", "prod", "222222222222"),
    ]
    assert calls[1][0].account == "222222222222"


def test_pipeline_mode_rejects_a_stage_without_an_environment() -> None:
    app = cdk.App(context=pipeline_context(_section(stages=["dev", "staging"], approvalStages=[])))
    with pytest.raises(ConfigError) as err:
        build(app)
    assert str(err.value) == (
        "Invalid config 'pipeline.stages': 'staging'. "
        "Allowed: one of ['dev', 'prod'] (the keys of 'environments')."
    )


def test_pipeline_mode_rejects_a_stage_without_an_account() -> None:
    context = pipeline_context()
    del context["environments"]["prod"]["aws"]
    app = cdk.App(context=context)
    with pytest.raises(ConfigError) as err:
        build(app)
    assert str(err.value) == (
        "Invalid config 'environments.prod.aws.account': None. "
        "Allowed: a 12-digit AWS account id: a pipeline deploys each stage to an explicit account."
    )


def test_pipeline_mode_rejects_never_cross_account_keys_across_accounts() -> None:
    app = cdk.App(context=pipeline_context(_section(crossAccountKeys="never")))
    with pytest.raises(ConfigError) as err:
        build(app)
    assert str(err.value) == (
        "Invalid config 'pipeline.crossAccountKeys': 'never'. Allowed: 'auto' or 'always' when stages "
        "deploy to another account than the pipeline's (prod)."
    )
