#!/usr/bin/env bash
# Build llama.cpp's `llama-server` from the llama.cpp sources vendored in the llama-cpp-python sdist (same
# version as the wheel, same portable flags) into bench/.build/. Never committed. Shares the wheelhouse's
# lock so it never compiles at the same time as tools/build_llama_wheel.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="$(realpath -s -m "${PYTHON:-$here/../.venv/bin/python}")"
cd "$here"
version="${LLAMA_CPP_VERSION:-0.3.36}"
build=".build"
bin="$build/llama.cpp-build/bin/llama-server"
mkdir -p "$build"
if [[ -x "$bin" ]]; then echo "$bin"; exit 0; fi
lock_root="${LLAMA_WHEELHOUSE:-$HOME/.cache/llama-eks/wheels}"
mkdir -p "$lock_root"
exec 9>"$lock_root/.build.lock"
flock 9
if [[ ! -d "$build/src" ]]; then
  "$python" -m pip download -q --no-deps --no-binary llama-cpp-python --dest "$build/sdist" "llama-cpp-python==$version" >&2
  mkdir -p "$build/src"
  tar -xzf "$build"/sdist/llama_cpp_python-"$version".tar.gz -C "$build/src" --strip-components=1
fi
cmake -S "$build/src/vendor/llama.cpp" -B "$build/llama.cpp-build" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$build/llama.cpp-build" --target llama-server -j "${CMAKE_BUILD_PARALLEL_LEVEL:-2}" >&2
echo "$bin"
