"""`roma --version` tells a user what they run: the package, the libraries that shape results, the device."""

from __future__ import annotations

from importlib import metadata

import pytest
import torch

from moe_roma import __version__
from moe_roma.cli import main


def test_version_prints_library_versions_and_the_device(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"moe-roma {__version__}"
    assert f"torch {torch.__version__}" in lines
    assert f"transformers {metadata.version('transformers')}" in lines
    assert f"lm_eval {metadata.version('lm_eval')}" in lines
    device = lines[-1]
    assert device.startswith("device cuda" if torch.cuda.is_available() else "device cpu")


def test_lock_file_pins_every_installed_dependency_of_the_test_extra():
    """The lock is what `make test` installs: each of moe-roma's requirements has an exact pin there."""
    from pathlib import Path

    lock = Path(__file__).resolve().parents[1] / "requirements" / "test.lock"
    if not lock.exists():
        pytest.skip("not a source checkout: requirements/test.lock is absent")
    pins = {
        line.split("==")[0].lower().replace("_", "-")
        for line in lock.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    # `make test` installs the core requirements and the test extra; other extras (faiss, tracking's
    # mlflow) are optional and need no pin.
    requirements = [
        r for r in metadata.requires("moe-roma") or [] if "extra ==" not in r or 'extra == "test"' in r
    ]
    names = {
        r.split(";")[0]
        .split("[")[0]
        .split(">")[0]
        .split("<")[0]
        .split("=")[0]
        .strip()
        .lower()
        .replace("_", "-")
        for r in requirements
    }
    assert names and names <= pins, sorted(names - pins)
