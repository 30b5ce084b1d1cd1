#!/usr/bin/env python3
"""Compare two cloud assemblies written by ``tools/synth_compare.sh synth`` file by file.

    python tools/synth_compare.py /tmp/before /tmp/after

Templates, manifests, asset manifests and everything else must be byte-identical, except what differs between
any two synths of the same code: ``performance-counters.json`` (synth timings) is skipped and the
creation stack traces in ``*.metadata.json`` (they name the jsii kernel's random temp folder), which
are dropped before comparing. Asset folders are compared by name (their names are content hashes).
Exit 0 when identical; else the differing files are listed and the exit code is 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _without_traces(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_traces(v) for k, v in value.items() if k != "trace"}
    if isinstance(value, list):
        return [
            _without_traces(v)
            for v in value
            if not (isinstance(v, dict) and v.get("type") == "aws:cdk:creationStack")
        ]
    return value


def _files(root: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith("asset.") for part in rel.parts[:-1]):
            continue  # inside an asset folder: compared by the folder's name
        if path.name == "performance-counters.json":
            continue  # synth timings, written by the CLI's first synth only
        if path.is_file() or path.name.startswith("asset."):
            found[str(rel)] = path
    return found


def _content(path: Path) -> Any:
    if path.is_dir():
        return None
    if path.name.endswith(".metadata.json"):
        return _without_traces(json.loads(path.read_text()))
    return path.read_bytes()


def compare(a: Path, b: Path) -> list[str]:
    fa, fb = _files(a), _files(b)
    problems = [f"only in {a}: {n}" for n in sorted(fa.keys() - fb.keys())]
    problems += [f"only in {b}: {n}" for n in sorted(fb.keys() - fa.keys())]
    for name in sorted(fa.keys() & fb.keys()):
        if _content(fa[name]) != _content(fb[name]):
            problems.append(f"differs: {name}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    a, b = (Path(p) for p in argv)
    problems = compare(a, b)
    for line in problems:
        print(line)
    if not problems:
        print(f"identical: every template, manifest and asset hash of {a} and {b}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
