"""Before ``make deploy`` / ``diff`` / ``destroy`` / ``bootstrap``: are there AWS credentials, and whose?

``cdk deploy`` without credentials synthesizes for half a minute and then says only "Unable to resolve AWS
account to use". This check runs first and, in a few seconds, either prints who is about to deploy where, or
says which credentials are missing and how to set them. Exit codes: 0 ready, 2 not ready.

Usage: ``python -m tools.aws_preflight [-c key=value ...]``: the same ``-c`` flags as the cdk command (the
Makefile passes ``$(CONTEXT)``), so the region and account are those of the configuration being deployed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

HOW_TO = """\
How to give this shell AWS credentials (any one of these):
  - IAM Identity Center (SSO):  aws configure sso             # once, creates a profile
                                aws sso login --profile NAME   # each day
                                export AWS_PROFILE=NAME
  - a named profile:            export AWS_PROFILE=NAME        # from ~/.aws/config or ~/.aws/credentials
  - access keys:                export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... [AWS_SESSION_TOKEN=...]
Then check with:                aws sts get-caller-identity
(Synth needs none of this: `make synth` runs offline.)"""


def _source(env: Mapping[str, str]) -> str:
    """Where boto3 looks first, in words (for the messages)."""
    if env.get("AWS_ACCESS_KEY_ID"):
        return "the AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY environment variables"
    if env.get("AWS_PROFILE"):
        return f"the profile AWS_PROFILE={env['AWS_PROFILE']}"
    return "the default credential chain (no AWS_PROFILE or AWS_ACCESS_KEY_ID set)"


def check(region: str, account: str | None = None, env: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """(ready, message). Calls STS GetCallerIdentity once (no permissions needed) with short timeouts.

    ``account``: the account the configuration deploys to (``aws.account``); None accepts any.
    """
    env = os.environ if env is None else env
    source = _source(env)
    try:
        session = boto3.Session(region_name=region)
        credentials = session.get_credentials()
    except botocore.exceptions.ProfileNotFound as err:
        return False, f"AWS profile not found: {err}.\n{HOW_TO}"
    except botocore.exceptions.BotoCoreError as err:
        return False, f"AWS credentials from {source} could not be loaded: {err}\n{HOW_TO}"
    if credentials is None:
        return False, f"No AWS credentials found in {source}.\n{HOW_TO}"
    sts = session.client(
        "sts",
        config=Config(connect_timeout=5, read_timeout=10, retries={"max_attempts": 2, "mode": "standard"}),
    )
    try:
        identity = sts.get_caller_identity()
    except botocore.exceptions.ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        hint = (
            "The session has expired: run `aws sso login` (SSO) or get new temporary keys."
            if "Expired" in code
            else "The credentials were refused."
        )
        return False, f"AWS credentials from {source} do not work ({code}). {hint}\n{HOW_TO}"
    except botocore.exceptions.SSOTokenLoadError:
        return False, f"The SSO session of {source} is not logged in: run `aws sso login`.\n{HOW_TO}"
    except botocore.exceptions.BotoCoreError as err:
        return False, f"Could not reach AWS STS in {region} with credentials from {source}: {err}"
    who = f"{identity['Arn']} (account {identity['Account']}), region {region}, from {source}"
    if account is not None and identity["Account"] != account:
        return False, (
            f"AWS credentials are for {who}, but the configuration deploys to account {account} "
            "(aws.account): use credentials of that account (another AWS_PROFILE), or change aws.account."
        )
    return True, f"AWS credentials OK: {who}."


def target(context_flags: list[str], cdk_json: Path) -> tuple[str, str | None]:
    """(region, account or None) of the configuration the cdk command would deploy."""
    from config import load_config  # the app's own loader: same environments, same overrides

    context: dict[str, Any] = dict(json.loads(cdk_json.read_text(encoding="utf-8")).get("context", {}))
    for flag in context_flags:
        key, sep, value = flag.partition("=")
        if not sep:
            raise SystemExit(f"-c {flag}: expected key=value")
        context[key] = value
    config = load_config(context)
    return config.aws.region, config.aws.account


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--cdk-json", type=Path, default=Path(__file__).resolve().parents[1] / "cdk.json")
    args = parser.parse_args(argv)
    from config import ConfigError

    try:
        region, account = target(args.context, args.cdk_json)
    except ConfigError as err:
        print(f"cdk.json / -c context: {err}", file=sys.stderr)
        return 2
    ready, message = check(region, account)
    print(message, file=sys.stdout if ready else sys.stderr)
    return 0 if ready else 2


if __name__ == "__main__":
    sys.exit(main())
