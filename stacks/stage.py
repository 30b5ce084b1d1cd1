"""``LlamaStage``: one environment's stacks as a ``cdk.Stage``, for the pipeline to deploy.

The stage does not define stacks itself: it calls the same build function ``app.py`` uses for a laptop
``cdk deploy``, so both paths deploy one definition (same construct IDs, same CloudFormation stack names:
a pipeline can take over stacks first deployed from a laptop).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import aws_cdk as cdk
from constructs import Construct

#: The build function shared with app.py: creates every stack of one environment under ``scope``.
PlatformBuilder = Callable[[Construct, Any], Any]

#: Environment variable the smoke test reads the endpoint hostname from.
ENDPOINT_ENV = "LLAMA_ENDPOINT"


class LlamaStage(cdk.Stage):
    """The network, cluster, add-ons and inference stacks of one environment.

    ``config`` is that environment's ``AppConfig`` (its ``aws.account`` must be set: a pipeline deploys to
    explicit accounts). ``build`` is the app's build function; what it returns is kept as ``stacks``.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: Any, build: PlatformBuilder) -> None:
        super().__init__(
            scope,
            construct_id,
            env=cdk.Environment(account=config.aws.account, region=config.aws.region),
        )
        self.config = config
        self.stacks = build(self, config)

    def smoke_test_outputs(self) -> Mapping[str, cdk.CfnOutput]:
        """CfnOutputs the post-deploy smoke test reads (env var -> output); empty without an endpoint."""
        output = endpoint_output(self.stacks)
        return {ENDPOINT_ENV: output} if output is not None else {}


def endpoint_output(stacks: Any) -> cdk.CfnOutput | None:
    """The inference service's endpoint-hostname CfnOutput, if this build has an inference stack."""
    inference = getattr(stacks, "inference", None)
    output = getattr(inference, "endpoint_output", None) if inference is not None else None
    return output if isinstance(output, cdk.CfnOutput) else None
