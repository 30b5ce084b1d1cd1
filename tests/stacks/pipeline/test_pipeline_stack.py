"""The PipelineStack of the real app (cdk.json, dev -> prod, prod in another account): one session synth."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from aws_cdk.assertions import Match, Template
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from config.pipeline import CDK_ASSETS_VERSION, pinned_cdk_cli_version
from stacks.pipeline.stack import TEST_COMMAND
from tests.conftest import REPO
from tests.helpers.cfn import cfn_lint, normalize_template, unacknowledged
from tests.stacks.pipeline.conftest import (
    CONNECTION_ARN,
    DEV_ACCOUNT,
    PIPELINE_ACCOUNT,
    PROD_ACCOUNT,
    PipelineSynth,
)


def _buildspec(synth: PipelineSynth, project_logical_id_prefix: str) -> dict[str, Any]:
    """The buildspec of one CodeBuild project: inline JSON, or the YAML file CDK writes when it is large."""
    (res,) = [
        r
        for lid, r in synth.template["Resources"].items()
        if r["Type"] == "AWS::CodeBuild::Project" and lid.startswith(project_logical_id_prefix)
    ]
    spec = res["Properties"]["Source"]["BuildSpec"]
    if spec.lstrip().startswith("{"):
        return json.loads(spec)
    return yaml.safe_load((Path(synth.assembly.directory) / spec).read_text())


def _action_names(stage: dict[str, Any]) -> list[tuple[int, str, str]]:
    return sorted((a["RunOrder"], a["ActionTypeId"]["Provider"], a["Name"]) for a in stage["Actions"])


def test_stages_in_order(pipeline_synth: PipelineSynth) -> None:
    names = [s["Name"] for s in pipeline_synth.codepipeline["Stages"]]
    assert names == ["Source", "Build", "UpdatePipeline", "Assets", "Dev", "Prod"]
    assert pipeline_synth.codepipeline["Name"] == "llama-eks-pipeline"
    assert pipeline_synth.codepipeline["PipelineType"] == "V2"


def test_source_is_the_codestar_connection(pipeline_synth: PipelineSynth) -> None:
    source, shared = sorted(pipeline_synth.stage("Source")["Actions"], key=lambda a: a["Name"] != "Source")
    for action in (source, shared):
        assert action["ActionTypeId"] == {
            "Category": "Source",
            "Owner": "AWS",
            "Provider": "CodeStarSourceConnection",
            "Version": "1",
        }
    assert source["Configuration"] == {
        "ConnectionArn": CONNECTION_ARN,
        "FullRepositoryId": "acme/llama-eks",
        "BranchName": "main",
        "DetectChanges": True,
    }
    assert shared["Name"] == "SharedData"
    assert shared["Configuration"]["FullRepositoryId"] == "acme/llama-eks-shared"


def test_shared_data_is_checked_out_beside_the_source(pipeline_synth: PipelineSynth) -> None:
    (synth,) = pipeline_synth.stage("Build")["Actions"]
    assert len(synth["InputArtifacts"]) == 2
    spec = _buildspec(pipeline_synth, "PipelineBuildSynthCdkBuildProject")
    link, npm_ci = spec["phases"]["install"]["commands"]
    assert link.startswith('[ ! -d "../shared" ] || {')
    assert link.endswith('&& ln -s -- "$CODEBUILD_SRC_DIR_acme_llama_eks_shared_Source" "../shared"')
    assert npm_ci == "npm ci --no-audit --no-fund"


def test_synth_runs_the_tests_then_the_pinned_cli(pipeline_synth: PipelineSynth) -> None:
    spec = _buildspec(pipeline_synth, "PipelineBuildSynthCdkBuildProject")
    assert spec["phases"]["install"]["runtime-versions"] == {"python": "3.11", "nodejs": "20"}
    assert spec["phases"]["install"]["commands"][-1] == "npm ci --no-audit --no-fund"
    assert spec["phases"]["build"]["commands"] == ["make check", "npx cdk synth -c deployMode=pipeline"]
    # The same test command as CI's (.ci/run's last line) and the README's quick start.
    ci = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1] == TEST_COMMAND == "make check"
    assert f"\n{TEST_COMMAND}   #" in (REPO / "README.md").read_text()
    assert spec["artifacts"]["base-directory"] == "cdk.out"
    # npm ci installs the CLI pinned in package.json / package-lock.json (npx uses it, not `latest`).
    lock = json.loads((REPO / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/aws-cdk"]["version"] == pinned_cdk_cli_version()
    Template.from_json(pipeline_synth.template).has_resource_properties(
        "AWS::CodeBuild::Project",
        {
            "Environment": Match.object_like(
                {
                    "ComputeType": "BUILD_GENERAL1_LARGE",
                    "Image": "aws/codebuild/standard:7.0",
                    "PrivilegedMode": True,  # Docker for the image tests in `make check`
                    "EnvironmentVariables": Match.array_with(
                        [
                            {
                                "Name": "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION",
                                "Type": "PLAINTEXT",
                                "Value": "20",
                            }
                        ]
                    ),
                }
            ),
            "Source": Match.object_like({"Type": "CODEPIPELINE"}),
            "TimeoutInMinutes": 90,
        },
    )


def test_self_mutation_deploys_the_pipeline_with_the_pinned_cli(pipeline_synth: PipelineSynth) -> None:
    (action,) = pipeline_synth.stage("UpdatePipeline")["Actions"]
    assert action["Name"] == "SelfMutate"
    spec = _buildspec(pipeline_synth, "PipelineUpdatePipelineSelfMutation")
    assert spec["phases"]["install"]["commands"] == [f"npm install -g aws-cdk@{pinned_cdk_cli_version()}"]
    assert spec["phases"]["build"]["commands"] == [
        "cdk -a . deploy Pipeline --require-approval=never --verbose"
    ]


def test_assets_are_published_with_the_pinned_cdk_assets(pipeline_synth: PipelineSynth) -> None:
    actions = pipeline_synth.stage("Assets")["Actions"]
    assert {a["Name"] for a in actions} == {"FileAssets", "DockerAssets"}
    spec = _buildspec(pipeline_synth, "PipelineAssetsFileAsset")
    assert spec["phases"]["install"]["commands"] == [f"npm install -g cdk-assets@{CDK_ASSETS_VERSION}"]
    publish = spec["phases"]["build"]["commands"]
    assert publish and all(c.startswith("cdk-assets --path ") and " publish " in c for c in publish)


def test_docker_image_assets_publish_in_privileged_codebuild(pipeline_synth: PipelineSynth) -> None:
    docker_projects = [
        (lid, r)
        for lid, r in pipeline_synth.template["Resources"].items()
        if r["Type"] == "AWS::CodeBuild::Project" and lid.startswith("PipelineAssetsDockerAsset")
    ]
    if not any(_stage_has_docker_asset(pipeline_synth, sid) for sid in ("Dev", "Prod")):
        pytest.skip(
            "no stage stack has a Docker image asset yet (the inference stack brings the model image)"
        )
    assert docker_projects, "a Docker image asset exists but no DockerAsset publishing project"
    for _, res in docker_projects:
        assert res["Properties"]["Environment"]["PrivilegedMode"] is True


def _stage_has_docker_asset(synth: PipelineSynth, stage_id: str) -> bool:
    nested = synth.assembly.get_nested_assembly(f"assembly-Pipeline-{stage_id}")
    manifest_dir = nested.directory
    for stack in nested.stacks:
        for dep in stack.dependencies:
            if dep.id.endswith(".assets"):
                assets = json.loads(Path(f"{manifest_dir}/{dep.id}.json").read_text())
                if assets.get("dockerImages"):
                    return True
    return False


def test_each_stage_deploys_its_stacks_with_explicit_stack_names(pipeline_synth: PipelineSynth) -> None:
    for sid, prefix in (("Dev", "llama-eks-dev"), ("Prod", "llama-eks-prod")):
        deploys = [
            a
            for a in pipeline_synth.stage(sid)["Actions"]
            if a["ActionTypeId"]["Provider"] == "CloudFormation"
        ]
        stacks = {a["Configuration"]["StackName"] for a in deploys}
        assert {f"{prefix}-network", f"{prefix}-cluster"} <= stacks
        # network before cluster: the change set of the cluster runs after the network is deployed
        order = {a["Name"]: a["RunOrder"] for a in deploys}
        assert order[f"{prefix}-network.Deploy"] < order[f"{prefix}-cluster.Prepare"]


def test_prod_waits_for_manual_approval_dev_does_not(pipeline_synth: PipelineSynth) -> None:
    prod = pipeline_synth.stage("Prod")["Actions"]
    approvals = [a for a in prod if a["ActionTypeId"]["Category"] == "Approval"]
    assert [a["Name"] for a in approvals] == ["ApproveProd"]
    assert approvals[0]["ActionTypeId"]["Provider"] == "Manual"
    assert approvals[0]["Configuration"]["CustomData"] == (
        f"Deploy this commit to 'prod' (account {PROD_ACCOUNT}, us-west-2)? "
        "It is deployed and smoke-tested in dev."
    )
    first_deploy = min(a["RunOrder"] for a in prod if a["ActionTypeId"]["Provider"] == "CloudFormation")
    assert approvals[0]["RunOrder"] < first_deploy
    dev = pipeline_synth.stage("Dev")["Actions"]
    assert not [a for a in dev if a["ActionTypeId"]["Category"] == "Approval"]


def test_prod_deploys_through_its_own_accounts_bootstrap_roles(pipeline_synth: PipelineSynth) -> None:
    for action in pipeline_synth.stage("Prod")["Actions"]:
        if action["ActionTypeId"]["Provider"] != "CloudFormation":
            continue
        role = json.dumps(action["RoleArn"])
        assert f":iam::{PROD_ACCOUNT}:role/cdk-hnb659fds-deploy-role-{PROD_ACCOUNT}-us-west-2" in role


def test_artifacts_are_encrypted_with_a_rotated_customer_key_when_accounts_differ(
    pipeline_synth: PipelineSynth,
) -> None:
    t = Template.from_json(pipeline_synth.template)
    t.resource_count_is("AWS::KMS::Key", 1)
    t.has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})
    t.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {
                        "ServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": Match.any_value(),
                        }
                    }
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
        },
    )
    store = pipeline_synth.codepipeline["ArtifactStore"]
    assert store["Type"] == "S3" and store["EncryptionKey"]["Type"] == "KMS"
    assert pipeline_synth.stack.cross_account_keys is True


def test_smoke_test_follows_each_stage_deploy_from_inside_the_vpc(pipeline_synth: PipelineSynth) -> None:
    # cdk.json's NLB is internal and prod's API endpoint private: `via: auto` runs the stage's own CodeBuild
    # project in the cluster VPC, which the pipeline's step starts as the stage's smoke-test role.
    for sid, account, prefix in (
        ("Dev", DEV_ACCOUNT, "llama-eks-dev"),
        ("Prod", PROD_ACCOUNT, "llama-eks-prod"),
    ):
        actions = pipeline_synth.stage(sid)["Actions"]
        (smoke,) = [a for a in actions if a["Name"] == "SmokeTest"]
        deploys = [a for a in actions if a["ActionTypeId"]["Provider"] == "CloudFormation"]
        assert smoke["RunOrder"] > max(a["RunOrder"] for a in deploys)
        assert f"{prefix}-smoke-test" in {a["Configuration"]["StackName"] for a in deploys}
        (inference_deploy,) = [a for a in deploys if a["Name"] == f"{prefix}-inference.Deploy"]
        env = {e["name"]: e["value"] for e in json.loads(smoke["Configuration"]["EnvironmentVariables"])}
        assert env == {"LLAMA_ENDPOINT": f"#{{{inference_deploy['Namespace']}.EndpointUrl}}"}
        role_arn = f"arn:aws:iam::{account}:role/{prefix}-smoke-test"
        (project,) = [
            r
            for lid, r in pipeline_synth.template["Resources"].items()
            if r["Type"] == "AWS::CodeBuild::Project" and lid.startswith(f"Pipeline{sid}SmokeTest")
        ]
        static = {e["Name"]: e["Value"] for e in project["Properties"]["Environment"]["EnvironmentVariables"]}
        assert static == {
            "LLAMA_SMOKE_VIA": "vpc",
            "LLAMA_CLUSTER_REGION": "us-west-2",
            "LLAMA_SMOKE_ROLE_ARN": role_arn,
            "LLAMA_SMOKE_PROJECT": f"{prefix}-smoke-test-in-vpc",
            "READY_TIMEOUT_S": "1200",
            "PREDICT_TIMEOUT_S": "300",
        }
        # the in-VPC build's own bound (30 min) plus its queue and start
        assert project["Properties"]["TimeoutInMinutes"] == (1200 + 300 + 900) // 60
        Template.from_json(pipeline_synth.template).has_resource_properties(
            "AWS::IAM::Policy",
            {
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [{"Action": "sts:AssumeRole", "Effect": "Allow", "Resource": role_arn}]
                    )
                }
            },
        )


@pytest.mark.parametrize(
    ("sid", "prefix", "account"),
    [("Dev", "llama-eks-dev", DEV_ACCOUNT), ("Prod", "llama-eks-prod", PROD_ACCOUNT)],
)
def test_in_vpc_smoke_project_requests_the_nlb_from_the_private_subnets(
    pipeline_synth: PipelineSynth, sid: str, prefix: str, account: str
) -> None:
    from config.names import SEED_PREDICT_REQUEST

    template = pipeline_synth.stage_templates(sid)["SmokeTest"]
    resources = template["Resources"]
    (project,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::CodeBuild::Project"]
    assert project["Name"] == f"{prefix}-smoke-test-in-vpc"
    subnets = json.dumps(project["VpcConfig"]["Subnets"])
    assert subnets.count("PrivateSubnet") == 3 and "PublicSubnet" not in subnets
    (group_id,) = project["VpcConfig"]["SecurityGroupIds"]
    group = resources[group_id["Fn::GetAtt"][0]]["Properties"]
    assert "SecurityGroupIngress" not in group  # nothing connects to it
    assert group["SecurityGroupEgress"] == [
        {"CidrIp": "0.0.0.0/0", "Description": "Allow all outbound traffic by default", "IpProtocol": "-1"}
    ]
    env = {e["Name"]: e for e in project["Environment"]["EnvironmentVariables"]}
    assert {k: v["Value"] for k, v in env.items()} == {
        "LLAMA_SMOKE_VIA": "endpoint",  # the script itself, straight to the internal NLB
        "READY_TIMEOUT_S": "1200",
        "PREDICT_TIMEOUT_S": "300",
        "LLAMA_SEED_REQUEST": json.dumps(SEED_PREDICT_REQUEST, separators=(",", ":")),
    }
    assert json.loads(project["Source"]["BuildSpec"]) == {
        "version": "0.2",
        "phases": {"build": {"commands": ["python3 smoke.py"]}},
    }
    assert project["Source"]["Type"] == "S3"
    assert project["TimeoutInMinutes"] == (1200 + 300 + 300) // 60
    assert project["Artifacts"] == {"Type": "NO_ARTIFACTS"}
    # The pipeline's role may start this project, read its builds and its log; no cluster access at all.
    policy = next(
        r["Properties"]["PolicyDocument"]["Statement"]
        for lid, r in resources.items()
        if r["Type"] == "AWS::IAM::Policy" and lid.startswith("RoleDefaultPolicy")
    )
    (project_id,) = [lid for lid, r in resources.items() if r["Type"] == "AWS::CodeBuild::Project"]
    (logs_id,) = [lid for lid, r in resources.items() if r["Type"] == "AWS::Logs::LogGroup"]
    assert policy == [
        {
            "Action": ["codebuild:BatchGetBuilds", "codebuild:StartBuild"],
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [project_id, "Arn"]},
        },
        {"Action": "logs:GetLogEvents", "Effect": "Allow", "Resource": {"Fn::GetAtt": [logs_id, "Arn"]}},
    ]
    Template.from_json(template).resource_count_is("AWS::EKS::AccessEntry", 0)


def test_in_vpc_smoke_project_source_is_the_script_folder(pipeline_synth: PipelineSynth) -> None:
    template = pipeline_synth.stage_templates("Prod")["SmokeTest"]
    (project,) = [
        r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::CodeBuild::Project"
    ]
    asset_hash = project["Source"]["Location"].rsplit("/", 1)[1].removesuffix(".zip")
    staged = Path(pipeline_synth.assembly.directory) / f"asset.{asset_hash}"
    assert sorted(p.name for p in staged.iterdir()) == ["__init__.py", "smoke.py"]
    assert (staged / "smoke.py").read_text() == (REPO / "stacks/pipeline/codebuild/smoke.py").read_text()


def test_smoke_test_role_is_scoped_to_the_pipeline(pipeline_synth: PipelineSynth) -> None:
    t = Template.from_json(pipeline_synth.stage_templates("Prod")["SmokeTest"])
    t.has_resource_properties(
        "AWS::IAM::Role",
        {
            "RoleName": "llama-eks-prod-smoke-test",
            "MaxSessionDuration": 3600,
            "AssumeRolePolicyDocument": {
                "Statement": [
                    {
                        "Action": "sts:AssumeRole",
                        "Effect": "Allow",
                        "Principal": {"AWS": Match.string_like_regexp(PIPELINE_ACCOUNT)},
                        "Condition": {
                            "ArnLike": {
                                "aws:PrincipalArn": {
                                    "Fn::Join": [
                                        "",
                                        [
                                            "arn:",
                                            {"Ref": "AWS::Partition"},
                                            f":iam::{PIPELINE_ACCOUNT}:role/llama-eks-pipeline-*",
                                        ],
                                    ]
                                }
                            }
                        },
                    }
                ],
            },
        },
    )


def test_pipeline_stack_is_the_only_top_level_stack(pipeline_synth: PipelineSynth) -> None:
    # Pipeline mode never also builds the stacks directly: they exist only inside the stages.
    assert [s.hierarchical_id for s in pipeline_synth.assembly.stacks] == ["Pipeline"]
    for sid in ("Dev", "Prod"):
        assert set(pipeline_synth.stage_templates(sid)) == {
            "Network",
            "Cluster",
            "Addons",
            "Inference",
            "SmokeTest",
        }


def test_pinned_logical_ids(pipeline_synth: PipelineSynth) -> None:
    # Stateful: the artifacts bucket and its key (renaming them would orphan artifacts and re-encrypt).
    resources = pipeline_synth.template["Resources"]
    assert resources["PipelineArtifactsBucketAEA9A052"]["Type"] == "AWS::S3::Bucket"
    assert resources["PipelineArtifactsBucketEncryptionKeyF5BF0670"]["Type"] == "AWS::KMS::Key"
    assert resources["Pipeline9850B417"]["Type"] == "AWS::CodePipeline::Pipeline"


# ------------------------------------------------------------ validators

#: cfn-lint E3703 checks Configuration.RoleArn with the IAM role ARN format, which it cannot apply to the
#: Fn::Join CDK renders for the target accounts' bootstrap roles (arn:${Partition}:iam::ACCOUNT:role/...).
#: Only that exact message on that exact property is excused; the test below proves each is a bootstrap role.
_JOIN_ROLE_ARN = re.compile(
    r"^E3703 Resources/Pipeline9850B417/Properties/Stages/\d+/Actions/\d+/Configuration/RoleArn: "
    r"Prefer using Fn::Sub over Fn::Join with an empty delimiter$"
)


def test_cfn_lint_clean(pipeline_synth: PipelineSynth) -> None:
    findings = cfn_lint(pipeline_synth.template)
    excused = [f for f in findings if _JOIN_ROLE_ARN.match(f)]
    assert [f for f in findings if f not in excused] == []
    stages = pipeline_synth.codepipeline["Stages"]
    for f in excused:
        i, j = (int(x) for x in re.findall(r"/(\d+)/", f.split(":")[0])[:2])
        joined = stages[i]["Actions"][j]["Configuration"]["RoleArn"]["Fn::Join"]
        assert joined[0] == "" and joined[1][:2] == ["arn:", {"Ref": "AWS::Partition"}]
        assert re.fullmatch(r":iam::\d{12}:role/cdk-hnb659fds-cfn-exec-role-\d{12}-[a-z0-9-]+", joined[1][2])


def test_cfn_lint_clean_smoke_test_stacks(pipeline_synth: PipelineSynth) -> None:
    for sid in ("Dev", "Prod"):
        assert cfn_lint(pipeline_synth.stage_templates(sid)["SmokeTest"]) == []


def test_cdk_nag_aws_solutions_clean(pipeline_synth: PipelineSynth) -> None:
    # The whole assembly: the pipeline, its stages' SmokeTest stacks, and every stack with the prod config.
    assert [str(f) for f in unacknowledged(pipeline_synth.findings, "AwsSolutions")] == []


def test_nag_acknowledgements_have_product_reasons(pipeline_synth: PipelineSynth) -> None:
    # cdk-nag drops acknowledged findings from the report; the acknowledgements live in construct metadata.
    acks: dict[str, str] = {}
    for construct in pipeline_synth.stack.node.find_all():
        if construct.node.path.startswith(("Pipeline/Dev", "Pipeline/Prod")):
            continue
        for entry in construct.node.metadata:
            if entry.type == "aws:cdk:acknowledged-rules":
                acks.update({k.removeprefix("Annotation::"): v for k, v in entry.data.items()})
    assert {
        "AwsSolutions-S1",
        "AwsSolutions-IAM5[Action::s3:GetObject*]",
        "AwsSolutions-IAM5[Resource::<PipelineArtifactsBucketAEA9A052.Arn>/*]",
        "AwsSolutions-IAM5[Resource::arn:*:iam::111111111111:role/*]",
    } <= set(acks)
    for rule, reason in acks.items():
        assert len(reason) >= 80, (rule, reason)
        assert "pipeline" in reason.lower() or "CodeBuild" in reason, (rule, reason)


def test_snapshot(pipeline_synth: PipelineSynth, snapshot: SnapshotAssertion) -> None:
    assert normalize_pipeline(pipeline_synth.template) == snapshot.use_extension(JSONSnapshotExtension)


def normalize_pipeline(template: dict[str, Any]) -> dict[str, Any]:
    """The harness's normalization, plus: the asset publishing buildspecs list one command per asset of
    every stage, which other stacks change without a pipeline change; masked (tested above instead)."""
    t = normalize_template(template)
    for lid, res in t["Resources"].items():
        if res["Type"] == "AWS::CodeBuild::Project" and lid.startswith("PipelineAssets"):
            res["Properties"]["Source"]["BuildSpec"] = "<asset publishing buildspec>"
    return t
