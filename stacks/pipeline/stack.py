"""PipelineStack: a self-mutating CDK Pipeline that tests, synthesizes and deploys every environment.

Source (CodeStar Connections or CodeCommit) -> Synth (`npm ci`, `make test`, `npx cdk synth` with the
pinned CLI) -> UpdatePipeline (self-mutation) -> Assets (file and Docker image assets, the model server
image among them) -> one stage per configured environment in order, each optionally behind a manual
approval, each followed by a smoke test against its endpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codecommit as codecommit
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import pipelines
from constructs import Construct, IConstruct

from config.pipeline import PipelineConfig, SourceConfig
from stacks.common import acknowledge
from stacks.pipeline.stage import SmokeTestSpec

#: CodeBuild image of every step: Amazon Linux based standard 7.0 (Python 3.11 and Node 20 available).
BUILD_IMAGE = codebuild.LinuxBuildImage.STANDARD_7_0

_COMPUTE = {
    "small": codebuild.ComputeType.SMALL,
    "medium": codebuild.ComputeType.MEDIUM,
    "large": codebuild.ComputeType.LARGE,
    "xlarge": codebuild.ComputeType.X_LARGE,
    "2xlarge": codebuild.ComputeType.X2_LARGE,
}

#: Context the synth step passes so the pipeline always synthesizes itself, whatever cdk.json's default.
SYNTH_COMMAND = "npx cdk synth -c deployMode=pipeline"
#: The README's test command: lint, types and every test, as CI runs it.
TEST_COMMAND = "make check"


@dataclass(frozen=True)
class StageTarget:
    """One environment the pipeline deploys: where, and how to build its ``cdk.Stage``.

    ``create(scope, construct_id)`` returns the stage (``LlamaStage``); a stage whose ``smoke_test`` is a
    :class:`SmokeTestSpec` gets a post-deploy smoke test.
    """

    env_name: str
    account: str
    region: str
    create: Callable[[Construct, str], cdk.Stage]


def stage_id(env_name: str) -> str:
    """PascalCase construct ID of an environment's stage: ``dev`` -> ``Dev``, ``eu-prod`` -> ``EuProd``."""
    return "".join(part[:1].upper() + part[1:] for part in env_name.replace("_", "-").split("-") if part)


class PipelineStack(cdk.Stack):
    """The delivery pipeline. ``targets`` are deployed in order; approval per ``config.approval_stages``."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: PipelineConfig,
        targets: Sequence[StageTarget],
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        if config.source is None:
            raise ValueError("PipelineStack needs config.source (validated by load_pipeline_config)")
        self.config = config
        self.source = self._source(config.source)
        # The tests in the synth step (`make test`) validate against the CRDs and upstream IAM reference
        # files in ../shared, as in CI; `cdk synth` itself needs nothing outside the repository.
        additional = {}
        if config.source.shared_data is not None:
            shared = config.source.shared_data
            additional["../shared"] = self._source(
                config.source, shared.repository, shared.branch, "SharedData"
            )
        else:
            cdk.Annotations.of(self).add_warning_v2(
                "llama-eks:noSharedData",
                "pipeline.source.sharedData is not set: the tests in the synth step expect ../shared (CRDs, "
                "IAM reference files) to come from the source itself.",
            )
        self.synth_step = pipelines.CodeBuildStep(
            "Synth",
            input=self.source,
            additional_inputs=additional or None,
            install_commands=["npm ci --no-audit --no-fund"],
            commands=[TEST_COMMAND, SYNTH_COMMAND],
            primary_output_directory="cdk.out",
            env={"JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20", "CI": "true"},
            build_environment=codebuild.BuildEnvironment(
                build_image=BUILD_IMAGE,
                compute_type=_COMPUTE[config.synth_compute_type],
                # Docker for the image tests of `make test` (the model server image is built there too).
                privileged=True,
            ),
            partial_build_spec=codebuild.BuildSpec.from_object(
                {"phases": {"install": {"runtime-versions": {"python": "3.11", "nodejs": "20"}}}}
            ),
            timeout=cdk.Duration.minutes(90),
        )
        self.cross_account_keys = config.needs_cross_account_keys({t.env_name: t.account for t in targets})
        docker_credentials = []
        if config.docker_hub_secret_arn:
            secret = secretsmanager.Secret.from_secret_complete_arn(
                self, "DockerHubSecret", config.docker_hub_secret_arn
            )
            docker_credentials.append(pipelines.DockerCredential.docker_hub(secret))

        self.pipeline = pipelines.CodePipeline(
            self,
            "Pipeline",
            pipeline_name=config.name,
            pipeline_type=codepipeline.PipelineType.V2,
            synth=self.synth_step,
            self_mutation=True,
            cli_version=config.cli_version,
            cdk_assets_cli_version=config.cdk_assets_version,
            cross_account_keys=self.cross_account_keys,
            # Key rotation needs the customer-managed key that cross-account keys create.
            enable_key_rotation=True if self.cross_account_keys else None,
            docker_enabled_for_synth=True,
            docker_credentials=docker_credentials,
            # One publishing project per asset type instead of one per asset (the kubectl layer, handlers and
            # the model image would otherwise each get a CodeBuild project).
            publish_assets_in_parallel=False,
            code_build_defaults=pipelines.CodeBuildOptions(
                build_environment=codebuild.BuildEnvironment(
                    build_image=BUILD_IMAGE, compute_type=codebuild.ComputeType.SMALL
                ),
            ),
            asset_publishing_code_build_defaults=pipelines.CodeBuildOptions(
                # The model server image (llama.cpp, CUDA variant) is built here: give it room.
                build_environment=codebuild.BuildEnvironment(
                    build_image=BUILD_IMAGE, compute_type=codebuild.ComputeType.LARGE
                ),
                timeout=cdk.Duration.minutes(120),
            ),
        )

        self.stages: dict[str, cdk.Stage] = {}
        self.smoke_tests: dict[str, pipelines.CodeBuildStep] = {}
        self.approvals: dict[str, pipelines.Step] = {}
        for target in targets:
            sid = stage_id(target.env_name)
            stage = target.create(self, sid)
            self.stages[target.env_name] = stage
            pre: list[pipelines.Step] = []
            if target.env_name in config.approval_stages:
                done = [n for n in self.stages if n != target.env_name]
                checked = " and smoke-tested" if self.smoke_tests else ""
                before = f" It is deployed{checked} in {', '.join(done)}." if done else ""
                approval = pipelines.ManualApprovalStep(
                    f"Approve{sid}",
                    comment=(
                        f"Deploy this commit to '{target.env_name}' (account {target.account}, "
                        f"{target.region})?{before}"
                    ),
                )
                self.approvals[target.env_name] = approval
                pre.append(approval)
            post: list[pipelines.Step] = []
            smoke = self._smoke_test(stage, sid)
            if smoke is not None:
                self.smoke_tests[target.env_name] = smoke
                post.append(smoke)
            elif config.smoke_test.enabled:
                cdk.Annotations.of(self).add_warning_v2(
                    "llama-eks:noSmokeTest",
                    f"Stage {sid} has no inference endpoint output: no post-deploy smoke test for it.",
                )
            self.pipeline.add_stage(stage, pre=pre, post=post)
        # Build now (instead of at synth) so the generated constructs exist for acknowledgments and tests.
        self.pipeline.build_pipeline()
        self._acknowledge_generated_permissions()

    def _acknowledge_generated_permissions(self) -> None:
        """cdk-nag findings on what CDK Pipelines generates, each with why it is right here."""
        account, region = self.config.account, self.config.region
        partition = (
            "aws-cn" if region.startswith("cn-") else "aws-us-gov" if region.startswith("us-gov-") else "aws"
        )
        bucket = self.pipeline.pipeline.artifact_bucket

        def lid(construct: IConstruct) -> str:
            return str(self.resolve(self.get_logical_id(construct.node.default_child)))  # type: ignore[arg-type]

        artifacts = (
            "The pipeline's roles read and write stage artifacts only in this pipeline's own artifacts "
            "bucket (the statement's resources are that bucket and its objects); object keys are generated "
            "per execution, so the object-level wildcard cannot be narrower."
        )
        for action in ("s3:GetObject*", "s3:GetBucket*", "s3:List*", "s3:DeleteObject*", "s3:Abort*"):
            acknowledge(self.pipeline, f"AwsSolutions-IAM5[Action::{action}]", artifacts)
        acknowledge(self.pipeline, f"AwsSolutions-IAM5[Resource::<{lid(bucket)}.Arn>/*]", artifacts)
        for action in ("kms:GenerateDataKey*", "kms:ReEncrypt*"):
            acknowledge(
                self.pipeline,
                f"AwsSolutions-IAM5[Action::{action}]",
                "Limited to the pipeline's own artifacts key (the statement's only resource): writing an "
                "encrypted artifact needs a data key per object.",
            )
        projects = [self.pipeline.synth_project, self.pipeline.self_mutation_project]
        projects += [step.project for step in self.smoke_tests.values()]
        for project in projects:
            name = lid(project)
            own = (
                f"CodeBuild writes this project's logs and test reports under names it derives from the "
                f"project ({name}); the wildcard covers that project's log streams and report groups only."
            )
            logs = f"arn:{partition}:logs:{region}:{account}:log-group:/aws/codebuild/<{name}>:*"
            reports = f"arn:{partition}:codebuild:{region}:{account}:report-group/<{name}>-*"
            acknowledge(self.pipeline, f"AwsSolutions-IAM5[Resource::{logs}]", own)
            acknowledge(self.pipeline, f"AwsSolutions-IAM5[Resource::{reports}]", own)
        shared = (
            "One asset-publishing role serves every publishing project of the pipeline (their names are "
            "generated); scoped to CodeBuild's log groups and report groups in the pipeline's account and "
            "region."
        )
        acknowledge(
            self.pipeline,
            f"AwsSolutions-IAM5[Resource::arn:{partition}:logs:{region}:{account}:log-group:/aws/codebuild/*]",
            shared,
        )
        acknowledge(
            self.pipeline,
            f"AwsSolutions-IAM5[Resource::arn:{partition}:codebuild:{region}:{account}:report-group/*]",
            shared,
        )
        acknowledge(
            self.pipeline,
            "AwsSolutions-IAM5[Resource::*]",
            "Read-only discovery the CDK CLI and cdk-assets need before they assume a bootstrap role "
            "(cloudformation:DescribeStacks of the bootstrap stack, s3:ListBucket) and CodeBuild build "
            "control of the publishing projects; every write goes through the bootstrap roles.",
        )
        acknowledge(
            self.pipeline,
            f"AwsSolutions-IAM5[Resource::arn:*:iam::{account}:role/*]",
            "Self-mutation may assume only roles tagged aws-cdk:bootstrap-role (deploy, file- and "
            "image-publishing; an IAM condition on the statement): the CDK bootstrap roles of the pipeline "
            "account, whose names carry the bootstrap qualifier.",
        )
        acknowledge(
            bucket,
            "AwsSolutions-S1",
            "Transient pipeline artifacts, reachable only by this pipeline's roles over TLS and "
            "KMS-encrypted; access is audited with CloudTrail (S3 data events where required) rather than "
            "server access logs, which would need another bucket that is itself unlogged.",
        )

    def _source(
        self,
        source: SourceConfig,
        repository: str | None = None,
        branch: str | None = None,
        action_name: str = "Source",
    ) -> pipelines.CodePipelineSource:
        """A source action of the configured provider (the main repository unless ``repository``)."""
        repository = repository or source.repository
        branch = branch or source.branch
        if source.connection_arn is None:  # CodeCommit
            repo = codecommit.Repository.from_repository_name(self, f"{action_name}Repository", repository)
            return pipelines.CodePipelineSource.code_commit(repo, branch, action_name=action_name)
        return pipelines.CodePipelineSource.connection(
            repository,
            branch,
            connection_arn=source.connection_arn,
            trigger_on_push=source.trigger_on_push,
            action_name=action_name,
        )

    def _smoke_test(self, stage: cdk.Stage, sid: str) -> pipelines.CodeBuildStep | None:
        smoke = self.config.smoke_test
        spec: SmokeTestSpec | None = getattr(stage, "smoke_test", None)
        if not smoke.enabled or spec is None:
            return None
        vpc = spec.env.get("LLAMA_SMOKE_VIA") == "vpc"
        env_vars: dict[str, codebuild.BuildEnvironmentVariable] = {}
        if smoke.api_key_secret_arn and spec.env.get("LLAMA_SMOKE_VIA") == "endpoint":
            env_vars["LLAMA_API_KEY"] = codebuild.BuildEnvironmentVariable(
                type=codebuild.BuildEnvironmentVariableType.SECRETS_MANAGER, value=smoke.api_key_secret_arn
            )
        statements = []
        if spec.assume_role_arn:
            statements.append(
                iam.PolicyStatement(actions=["sts:AssumeRole"], resources=[spec.assume_role_arn])
            )
        return pipelines.CodeBuildStep(
            "SmokeTest",
            # The deployed commit's own smoke script (stdlib + the AWS CLI of the image; no install step).
            input=self.source,
            env_from_cfn_outputs=dict(spec.outputs),
            env={
                **spec.env,
                "READY_TIMEOUT_S": str(smoke.ready_timeout_s),
                "PREDICT_TIMEOUT_S": str(smoke.predict_timeout_s),
            },
            build_environment=codebuild.BuildEnvironment(environment_variables=env_vars)
            if env_vars
            else None,
            role_policy_statements=statements or None,
            commands=["python3 stacks/pipeline/codebuild/smoke.py"],
            # In-VPC: the stage's project queues, starts in the VPC and runs its own bounded wait.
            timeout=cdk.Duration.seconds(
                smoke.ready_timeout_s + smoke.predict_timeout_s + (900 if vpc else 300)
            ),
        )
