"""tools/build_llama_wheel.sh: progress while it builds, the wheel's path on stdout, reuse, failures.

A stand-in `python -m pip wheel` (a shell script) plays the compiler's output, so the test takes seconds;
the real build is exercised by every fresh `make serve` / `make test`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import REPO

SCRIPT = REPO / "tools" / "build_llama_wheel.sh"

FAKE_PIP = """#!/usr/bin/env bash
# Called as: python -m pip wheel -v --no-deps --no-cache-dir --wheel-dir DIR SPEC
set -eu
[[ "$FAIL" == 1 ]] && { echo "CMake Error: no compiler"; exit 1; }
while [[ "$1" != --wheel-dir ]]; do shift; done
dir="$2"
echo "Collecting llama-cpp-python==0.3.36"
sleep 1.5
echo "  [ 10%] Building C object vendor/llama.cpp/ggml/src/CMakeFiles/ggml-base.dir/ggml.c.o"
sleep 1.5
echo "  [ 55%] Building CXX object vendor/llama.cpp/src/CMakeFiles/llama.dir/llama-vocab.cpp.o"
sleep 1.5
# ninja -v (scikit-build-core's generator): the whole compiler command line
echo "  [212/340] /usr/bin/c++ -DGGML_BUILD -O3 -c /tmp/pip-x/vendor/llama.cpp/src/llama-model.cpp"
sleep 1.5
touch "$dir/llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl"
"""


def run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_PIP)
    fake.chmod(0o755)
    full = {
        **os.environ,
        "PYTHON": str(fake),
        "LLAMA_WHEELHOUSE": str(tmp_path / "wheels"),
        "BUILD_HEARTBEAT_S": "1",
        "FAIL": "0",
        **env,
    }
    return subprocess.run(["bash", str(SCRIPT)], env=full, capture_output=True, text=True, timeout=60)


def test_progress_lines_then_the_wheel_path_and_reuse(tmp_path):
    out = run(tmp_path)
    assert out.returncode == 0, out.stderr
    wheel = Path(out.stdout.strip())
    assert wheel.is_file() and wheel.parent.parent == tmp_path / "wheels"
    lines = out.stderr.splitlines()
    assert "5-30 minutes" in lines[0] and "last-build.log" in lines[0]
    progress = [line for line in lines if "still building" in line]
    assert len(progress) >= 3, out.stderr
    # Elapsed time and the compiler's last step, not pip's chatter once compiling has started.
    assert any("[ 55%] Building CXX object" in line and "0m0" in line for line in progress), progress
    assert any(line.endswith("[212/340] compiling llama-model.cpp") for line in progress), progress
    assert "built in" in lines[-1]
    again = run(tmp_path)
    assert again.returncode == 0 and again.stdout == out.stdout and "building" not in again.stderr


def test_failed_build_exits_1_with_the_log_tail(tmp_path):
    out = run(tmp_path, FAIL="1")
    assert out.returncode == 1
    assert "the build failed" in out.stderr and "CMake Error: no compiler" in out.stderr
    assert not list((tmp_path / "wheels").glob("*/*.whl"))
    assert "CMake Error" in (tmp_path / "wheels" / "last-build.log").read_text()
