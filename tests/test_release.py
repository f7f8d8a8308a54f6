"""The release's version agrees everywhere it is written (SPEC section 12)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from django.conf import settings

import flowstone

pytestmark = [pytest.mark.embedded]

ROOT = Path(__file__).resolve().parent.parent
RELEASED_ON = "2025-12-14"


def _changelog() -> str:
    return (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


def test_package_metadata_and_module_agree() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["version"] == flowstone.__version__ == "0.2.0"
    assert settings.SPECTACULAR_SETTINGS["VERSION"] == flowstone.__version__


def test_readme_states_and_installs_this_version() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"Version: `{flowstone.__version__}` ({RELEASED_ON}" in readme
    install = re.search(r"## Installing into a project\n(.*?)\n## ", readme, re.DOTALL)
    assert install is not None
    snippet = install.group(1)
    assert "python -m pip install .  " in snippet
    assert f"# flowstone {flowstone.__version__} " in snippet
    assert not re.search(r"\b0\.(?!2\.0)\d+\.\d+\b", snippet)  # no other version in the snippet


def test_changelog_releases_this_version_with_links() -> None:
    changelog = _changelog()
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", changelog, re.MULTILINE)
    assert headings[:2] == [("Unreleased", ""), (flowstone.__version__, RELEASED_ON)]
    links = dict(re.findall(r"^\[([^\]]+)\]: (\S+)$", changelog, re.MULTILINE))
    assert set(links) >= {"Unreleased", flowstone.__version__}
    assert links["Unreleased"].endswith(f"v{flowstone.__version__}...HEAD")
    assert links[flowstone.__version__].endswith(f"v{flowstone.__version__}")


def test_changelog_covers_what_the_release_promises() -> None:
    section = _changelog().split(f"## [{flowstone.__version__}]", 1)[1].split("\n## [", 1)[0]
    for topic in (
        "JSON-safe task payloads, run-config indirection",
        "Resource defaults",
        "A raisable error model",
        "Safe name handling",
        "SQL identifier safety",
        "Safe decoding",
        "An unambiguous partition encoding",
        "The approvals state machine",
        "Persistence invariants",
        "Sync vs async API",
        "Docs alignment",
    ):
        assert f"**{topic}.**" in section, topic
