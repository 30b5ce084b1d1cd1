"""chat_ui/requirements.txt: every runtime dependency pinned, and the packages it shares with the model
server's and the dev requirements pinned alike (the dev venv installs them all side by side)."""

from __future__ import annotations

import re
from importlib.metadata import version

from .conftest import REPO

PIN = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]+\])?==([^\s;#]+)$")


def pins(path: str) -> dict[str, str]:
    out = {}
    for raw in (REPO / path).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"{path}: not pinned with ==: {line!r}"
        out[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return out


def test_every_requirement_is_pinned_and_installed_at_that_version() -> None:
    ui = pins("chat_ui/requirements.txt")
    assert {"gradio", "httpx", "pydantic-settings", "uvicorn"} <= set(ui)
    for name, pinned in ui.items():
        assert version(name) == pinned, f"{name}: installed {version(name)}, pinned {pinned}"


def test_shared_pins_agree() -> None:
    ui = pins("chat_ui/requirements.txt")
    for other in ("model_server/requirements.txt", "requirements-dev.txt"):
        theirs = pins(other)
        clash = {
            name: (ui[name], theirs[name]) for name in ui.keys() & theirs.keys() if ui[name] != theirs[name]
        }
        assert clash == {}, f"chat_ui/requirements.txt vs {other}: {clash}"
