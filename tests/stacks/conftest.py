"""Fixtures of the foundation's infra tests (the default app is the session fixture in tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

# The variant synth is shared with tests/helm, hence defined in tests/conftest.py.
from tests.conftest import ADMIN, BREAK_GLASS, REPO, VARIANT

__all__ = ["ADMIN", "BREAK_GLASS", "VARIANT"]

# ---------------------------------------------------------------- the real CDK CLI, in the background

CLI_ARGS = (
    "-c",
    "env=prod",
    "-c",
    "cluster.kubernetesVersion=1.34",
    "-c",
    "compute.systemNodegroup.maxSize=4",
)


@dataclass
class CliRun:
    """``npx cdk synth --no-lookups`` started at collection; :meth:`wait` gives (returncode, stderr)."""

    process: subprocess.Popen[str]
    outdir: Path

    def wait(self, timeout: float = 400) -> tuple[int, str]:
        _, stderr = self.process.communicate(timeout=timeout)
        return self.process.returncode, stderr


CLI_RUN_KEY = pytest.StashKey[CliRun]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cli_items = [item for item in items if item.nodeid.startswith("tests/stacks/test_cli_synth.py")]
    if not cli_items:
        return
    # Run the CLI test last, so its background process overlaps everything else.
    items[:] = [item for item in items if item not in cli_items] + cli_items
    npx = shutil.which("npx")
    if npx is None or not (REPO / "node_modules" / ".bin" / "cdk").exists():
        return
    outdir = Path(tempfile.mkdtemp(prefix="cli-synth-"))
    # No AWS credentials or profile and no instance-metadata probing: synth must be fully offline.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYTEST_"))}
    env["JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION"] = "20"
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    process = subprocess.Popen(
        [npx, "cdk", "synth", "--no-lookups", "--quiet", "-o", str(outdir), *CLI_ARGS],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    config.stash[CLI_RUN_KEY] = CliRun(process, outdir)


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(CLI_RUN_KEY, None)
    if run is not None:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()
        shutil.rmtree(run.outdir, ignore_errors=True)
