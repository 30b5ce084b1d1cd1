"""Pipeline fixtures: the real app in pipeline mode, synthesized ONCE per session (every stage's stacks
are synthesized with it, so it is the expensive one), plus a cheap stage builder for wiring tests.

Accounts: the pipeline and ``dev`` live in 111111111111, ``prod`` in 222222222222 (cross-account).
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_TODAY, cdk_json_context
from tests.helpers.cfn import NO_FAIL_CONTEXT, Finding, add_nag_plugins, validation_findings

PIPELINE_ACCOUNT = "111111111111"
DEV_ACCOUNT = "111111111111"
PROD_ACCOUNT = "222222222222"
REGION = "us-west-2"
CONNECTION_ARN = (
    "arn:aws:codeconnections:us-west-2:111111111111:connection/0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"
)

PIPELINE_SECTION: dict[str, Any] = {
    "name": "llama-eks-pipeline",
    "account": PIPELINE_ACCOUNT,
    "region": REGION,
    "source": {
        "provider": "github",
        "connectionArn": CONNECTION_ARN,
        "repository": "acme/llama-eks",
        "branch": "main",
        "sharedData": {"repository": "acme/llama-eks-shared", "branch": "main"},
    },
    "stages": ["dev", "prod"],
    "approvalStages": ["prod"],
}


def pipeline_context(pipeline: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """cdk.json context in pipeline mode, with explicit accounts per environment."""
    context = copy.deepcopy(cdk_json_context())
    envs = context.setdefault("environments", {})
    envs.setdefault("dev", {})["aws"] = {"account": DEV_ACCOUNT, "region": REGION}
    envs.setdefault("prod", {})["aws"] = {"account": PROD_ACCOUNT, "region": REGION}
    context["deployMode"] = "pipeline"
    context["pipeline"] = copy.deepcopy(PIPELINE_SECTION if pipeline is None else pipeline)
    context.update(NO_FAIL_CONTEXT)
    context.update(extra)
    return context


@dataclass
class PipelineSynth:
    stack: Any  # PipelineStack
    assembly: Any
    template: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)

    @property
    def codepipeline(self) -> dict[str, Any]:
        (props,) = [
            r["Properties"]
            for r in self.template["Resources"].values()
            if r["Type"] == "AWS::CodePipeline::Pipeline"
        ]
        return props

    def stage(self, name: str) -> dict[str, Any]:
        return next(s for s in self.codepipeline["Stages"] if s["Name"] == name)

    def stage_templates(self, stage_id: str) -> dict[str, dict[str, Any]]:
        """Templates of one stage's stacks by construct id ("Network", "Cluster", ...)."""
        nested = self.assembly.get_nested_assembly(f"assembly-Pipeline-{stage_id}")
        return {s.hierarchical_id.split("/")[-1]: s.template for s in nested.stacks}


@contextlib.contextmanager
def platform(build: Callable[..., Any]) -> Iterator[None]:
    """Stages (and direct mode) are built by ``build`` instead of ``stacks.platform.build_app``."""
    import stacks.modes
    import stacks.pipeline.stage

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stacks.pipeline.stage, "build_app", build)
        patch.setattr(stacks.modes, "build_app", build)
        yield


def synth_pipeline(
    outdir: Path, context: dict[str, Any], *, builder: Any = None, nag: bool = True
) -> PipelineSynth:
    """Build ``app.py``'s pipeline mode with ``context`` (and ``builder`` for the stages, default: the
    real ``build_app`` on the tests' fixed date) and synthesize it."""
    import aws_cdk as cdk

    from stacks.modes import build_for_mode
    from stacks.platform import build_app

    app = cdk.App(context=context, outdir=str(outdir))
    with platform(builder or functools.partial(build_app, today=TEST_TODAY)):
        stack = build_for_mode(app, app.node.get_all_context())
    if nag:
        add_nag_plugins(app)
    assembly = app.synth()
    (artifact,) = [s for s in assembly.stacks if s.hierarchical_id == "Pipeline"]
    return PipelineSynth(
        stack=stack,
        assembly=assembly,
        template=artifact.template,
        findings=validation_findings(assembly.directory),
    )


@pytest.fixture(scope="session")
def pipeline_synth(tmp_path_factory: pytest.TempPathFactory) -> PipelineSynth:
    """The real app (cdk.json + test accounts) in pipeline mode, dev -> prod, with cdk-nag."""
    return synth_pipeline(tmp_path_factory.mktemp("pipeline.out"), pipeline_context())


# ------------------------------------------------------------ a cheap stage for wiring tests


@dataclass
class TinyStacks:
    inference: Any


class TinyInference:
    """Stands in for the inference stack in wiring tests only: one stack with an endpoint output."""

    def __new__(cls, scope: Any, config: Any) -> Any:
        import aws_cdk as cdk
        from aws_cdk import aws_ssm as ssm

        stack = cdk.Stack(scope, "Inference", stack_name=f"{config.stack_prefix}-inference")
        param = ssm.StringParameter(stack, "Endpoint", string_value="llama.example.internal")
        cdk.CfnOutput(stack, "EndpointHostname", value=param.string_value)
        cdk.CfnOutput(stack, "EndpointUrl", value=f"http://{param.string_value}")
        return stack


#: Wiring tests expose the (stand-in) service on an internet-facing NLB: the smoke test goes to the endpoint.
#: TLS, as env=prod requires there; internet-facing turns the API key on, so the smoke test needs its secret.
INTERNET_FACING = {
    "inference.exposure.scheme": "internet-facing",
    "inference.exposure.sourceRanges": ["203.0.113.0/24"],
    "inference.exposure.certificateArn": (
        "arn:aws:acm:us-west-2:111111111111:certificate/0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"
    ),
}
API_KEY_SECRET = "arn:aws:secretsmanager:us-west-2:111111111111:secret:llama-api-key-AbCdEf"


def tiny_builder(calls: list[Any] | None = None) -> Any:
    def build(scope: Any, config: Any, **_: Any) -> TinyStacks:
        if calls is not None:
            calls.append((scope, config))
        return TinyStacks(inference=TinyInference(scope, config))

    return build
