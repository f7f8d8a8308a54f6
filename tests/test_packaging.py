"""The README's install line works from the root of a checkout: the package builds and imports."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import flowstone

pytestmark = [pytest.mark.embedded]

ROOT = Path(__file__).resolve().parent.parent
# Not part of the source tree that `pip install .` reads.
LEFT_OUT = shutil.ignore_patterns(
    ".git", ".venv", "var", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # The build backend (setuptools) comes from the configured package index, as in any
    # `pip install .`; nothing else is downloaded (--no-deps).
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_pip_builds_and_installs_the_checkout(tmp_path: Path) -> None:
    source = tmp_path / "checkout"
    shutil.copytree(ROOT, source, ignore=LEFT_OUT)
    built = _pip("wheel", "--no-deps", "--wheel-dir", str(tmp_path / "dist"), ".", cwd=source)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("flowstone-*.whl")
    assert wheel.name == f"flowstone-{flowstone.__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    for app in ("flowstone", "assets", "approvals", "lineage", "schedules", "demo"):
        assert f"{app}/__init__.py" in names, app
    assert "assets/migrations/0001_initial.py" in names
    assert any(name.startswith("assets/templates/") for name in names)
    assert not any(name.startswith("tests/") for name in names)

    target = tmp_path / "site"
    installed = _pip(
        "install", "--no-deps", "--no-index", "--target", str(target), str(wheel), cwd=tmp_path
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import flowstone, assets; print(flowstone.__version__, flowstone.__file__)",
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    version, location = probe.stdout.split()
    assert version == flowstone.__version__
    assert Path(location).is_relative_to(target)
