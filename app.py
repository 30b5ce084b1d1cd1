#!/usr/bin/env python3
"""CDK entry point: read the configuration once from cdk.json context, then build what deployMode asks for.

npx cdk synth                                    # env "dev" (the default of `env`)
npx cdk synth -c env=prod                        # another named environment
npx cdk synth -c cluster.kubernetesVersion=1.34  # one key overridden
"""

from __future__ import annotations

import os

import aws_cdk as cdk

from config import ConfigError
from stacks.modes import build_for_mode


def main(app: cdk.App | None = None) -> None:
    """Entry point of ``cdk.json``'s app command (the CLI passes context through the environment)."""
    app = app or cdk.App()
    try:
        # The CLI's account (when it has credentials) for a direct deploy whose aws.account is null.
        build_for_mode(app, app.node.get_all_context(), default_account=os.environ.get("CDK_DEFAULT_ACCOUNT"))
    except ConfigError as err:
        raise SystemExit(f"cdk.json / -c context: {err}") from None
    app.synth()


if __name__ == "__main__":
    main()
