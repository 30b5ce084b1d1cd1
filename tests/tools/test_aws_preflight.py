"""tools/aws_preflight.py: `make deploy`'s credential check says what is missing before any synth.

The failure paths run the real command in a subprocess with an empty credential chain (no profile, no keys,
instance metadata off, so nothing leaves this machine); the success and wrong-account paths call STS through
moto's in-process mock.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from moto import mock_aws

from tools.aws_preflight import check, target

REPO = Path(__file__).resolve().parents[2]
MOTO_ACCOUNT = "123456789012"


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        HOME=str(tmp_path),
        AWS_CONFIG_FILE=str(tmp_path / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        **extra,
    )
    return env


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.aws_preflight", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_no_credentials_says_how_to_set_them(tmp_path: Path) -> None:
    result = _run(_clean_env(tmp_path))
    assert result.returncode == 2
    assert result.stderr.startswith("No AWS credentials found in the default credential chain")
    for hint in (
        "aws configure sso",
        "aws sso login",
        "export AWS_PROFILE=",
        "AWS_ACCESS_KEY_ID=",
        "make synth",
    ):
        assert hint in result.stderr


def test_unknown_profile_is_named(tmp_path: Path) -> None:
    result = _run(_clean_env(tmp_path, AWS_PROFILE="no-such-profile"))
    assert result.returncode == 2
    assert "AWS profile not found" in result.stderr
    assert "no-such-profile" in result.stderr


def test_bad_context_fails_like_synth(tmp_path: Path) -> None:
    result = _run(_clean_env(tmp_path), "-c", "env=nope")
    assert result.returncode == 2
    assert result.stderr.startswith("cdk.json / -c context: Invalid config 'env': 'nope'.")


def test_target_reads_the_configured_environment() -> None:
    region, account = target([], REPO / "cdk.json")
    assert (region, account) == ("us-west-2", None)
    assert target(["aws.account=111122223333"], REPO / "cdk.json") == ("us-west-2", "111122223333")


@pytest.fixture
def fake_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key, value in _clean_env(
        tmp_path, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing"
    ).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@mock_aws
def test_credentials_ok_names_the_identity_and_region(fake_keys: None) -> None:
    ready, message = check("eu-central-1")
    assert ready
    assert message == (
        f"AWS credentials OK: arn:aws:sts::{MOTO_ACCOUNT}:user/moto (account {MOTO_ACCOUNT}), region "
        "eu-central-1, from the AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY environment variables."
    )
    assert check("eu-central-1", MOTO_ACCOUNT)[0]


@mock_aws
def test_credentials_of_another_account_are_refused(fake_keys: None) -> None:
    ready, message = check("us-west-2", "111122223333")
    assert not ready
    assert f"(account {MOTO_ACCOUNT})" in message
    assert "the configuration deploys to account 111122223333 (aws.account)" in message
