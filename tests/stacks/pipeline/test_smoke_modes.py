"""The smoke test's other settings with the real dev stage: ``via: kubernetesApi`` (dev has the public API
endpoint: the smoke-test role gets an access entry scoped to the service's namespace, the step goes through
the API server's proxy), and the in-VPC project of a service with an API key."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match, Template

from tests.helpers.cfn import AWS_SOLUTIONS, unacknowledged
from tests.stacks.pipeline.conftest import (
    DEV_ACCOUNT,
    PIPELINE_SECTION,
    PipelineSynth,
    pipeline_context,
    synth_pipeline,
)


@pytest.fixture(scope="module")
def through_the_api(tmp_path_factory: pytest.TempPathFactory) -> PipelineSynth:
    section = {
        **PIPELINE_SECTION,
        "stages": ["dev"],
        "approvalStages": [],
        "smokeTest": {"via": "kubernetesApi"},
    }
    return synth_pipeline(tmp_path_factory.mktemp("kubernetes-api"), pipeline_context(section), nag=False)


def test_step_goes_through_the_service_proxy_as_the_smoke_role(through_the_api: PipelineSynth) -> None:
    actions = through_the_api.stage("Dev")["Actions"]
    (smoke,) = [a for a in actions if a["Name"] == "SmokeTest"]
    (cluster_deploy,) = [a for a in actions if a["Name"] == "llama-eks-dev-cluster.Deploy"]
    env = {e["name"]: e["value"] for e in json.loads(smoke["Configuration"]["EnvironmentVariables"])}
    assert env == {"LLAMA_CLUSTER_NAME": f"#{{{cluster_deploy['Namespace']}.ClusterName}}"}
    (project,) = [
        r
        for lid, r in through_the_api.template["Resources"].items()
        if r["Type"] == "AWS::CodeBuild::Project" and lid.startswith("PipelineDevSmokeTest")
    ]
    static = {e["Name"]: e["Value"] for e in project["Properties"]["Environment"]["EnvironmentVariables"]}
    assert static == {
        "LLAMA_SMOKE_VIA": "kubernetes-api",
        "LLAMA_CLUSTER_REGION": "us-west-2",
        "LLAMA_SMOKE_ROLE_ARN": f"arn:aws:iam::{DEV_ACCOUNT}:role/llama-eks-dev-smoke-test",
        "LLAMA_NAMESPACE": "llama",
        "LLAMA_SERVICE": "my-llama-svc",
        "LLAMA_SERVICE_PORT": "80",
        "READY_TIMEOUT_S": "1200",
        "PREDICT_TIMEOUT_S": "300",
    }


def test_role_may_edit_only_the_service_namespace(through_the_api: PipelineSynth) -> None:
    template = through_the_api.stage_templates("Dev")["SmokeTest"]
    t = Template.from_json(template)
    (entry,) = t.find_resources("AWS::EKS::AccessEntry").values()
    (policy,) = entry["Properties"]["AccessPolicies"]
    assert policy["AccessScope"] == {"Namespaces": ["llama"], "Type": "namespace"}
    assert json.dumps(policy["PolicyArn"]).endswith(':eks::aws:cluster-access-policy/AmazonEKSEditPolicy"]]}')
    assert entry["Properties"]["PrincipalArn"] == {"Fn::GetAtt": ["Role1ABCC5F0", "Arn"]}
    t.resource_count_is("AWS::CodeBuild::Project", 0)  # no in-VPC project in this mode


API_KEY_SECRET = "arn:aws:secretsmanager:us-west-2:111111111111:secret:llama-api-key-AbCdEf"


@pytest.fixture(scope="module")
def with_api_key(tmp_path_factory: pytest.TempPathFactory) -> PipelineSynth:
    section = {
        **PIPELINE_SECTION,
        "stages": ["dev"],
        "approvalStages": [],
        "smokeTest": {"apiKeySecretArn": API_KEY_SECRET},
    }
    context = pipeline_context(section, **{"inference.apiKey.enabled": True})
    return synth_pipeline(tmp_path_factory.mktemp("api-key"), context)


def test_in_vpc_project_sends_the_api_key_from_secrets_manager(with_api_key: PipelineSynth) -> None:
    template = with_api_key.stage_templates("Dev")["SmokeTest"]
    (project,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::CodeBuild::Project"]
    env = {e["Name"]: e for e in project["Properties"]["Environment"]["EnvironmentVariables"]}
    assert env["LLAMA_API_KEY"] == {
        "Name": "LLAMA_API_KEY",
        "Type": "SECRETS_MANAGER",
        "Value": API_KEY_SECRET,
    }
    read_key = {
        "Action": "secretsmanager:GetSecretValue",
        "Effect": "Allow",
        "Resource": f"{API_KEY_SECRET}*",
    }
    Template.from_json(template).has_resource_properties(
        "AWS::IAM::Policy", {"PolicyDocument": {"Statement": Match.array_with([read_key])}}
    )
    # The pipeline's own step does not hold the key in this mode: the stage's project reads it.
    (step,) = [
        r
        for lid, r in with_api_key.template["Resources"].items()
        if r["Type"] == "AWS::CodeBuild::Project" and lid.startswith("PipelineDevSmokeTest")
    ]
    names = {e["Name"] for e in step["Properties"]["Environment"]["EnvironmentVariables"]}
    assert "LLAMA_API_KEY" not in names


def test_in_vpc_smoke_stack_has_no_unacknowledged_findings(with_api_key: PipelineSynth) -> None:
    assert [
        str(f) for f in unacknowledged(with_api_key.findings, AWS_SOLUTIONS, "Pipeline/Dev/SmokeTest")
    ] == []
