"""The README's first pipeline runs as written, on the embedded default, in a fresh directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.embedded]

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)
EXPECTED_OUTPUT = re.compile(r"^print\(.*\)\s+# (.+)$", re.MULTILINE)


def _first_pipeline_blocks() -> list[tuple[str, str]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## A first pipeline\n", 1)[1].split("\n## ", 1)[0]
    return BLOCK.findall(section)


def test_the_first_pipeline_runs_as_written(tmp_path: Path) -> None:
    blocks = _first_pipeline_blocks()
    files = [body for lang, body in blocks if lang == "python"]
    commands = [body for lang, body in blocks if lang == "bash"]
    assert len(files) == 4
    assert len(commands) == 1
    expected = []
    for body in files:
        # Each file block names its path on its first line.
        header = body.splitlines()[0]
        assert re.fullmatch(r"# [\w/]+\.py", header), header
        path = tmp_path / header[2:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body, encoding="utf-8")
        expected += EXPECTED_OUTPUT.findall(body)
    assert expected == ["success", "{'DE': 101.0, 'FR': 80.5}"]

    # A shell with FlowStone importable (as after `pip install .`), its Python first on PATH, and
    # none of this test run's database, broker or settings.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "FLOWSTONE_", "DATABASE_", "CELERY_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    completed = subprocess.run(
        ["bash", "-e", "-c", commands[0]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert completed.stdout.splitlines() == expected
    assert (tmp_path / "var" / "flowstone.sqlite3").exists()
