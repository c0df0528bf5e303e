"""The documentation site: every config key documented, and a strict MkDocs build (broken links fail)."""

import os
import subprocess
import sys
from pathlib import Path

from pipeline.config import reference_markdown, sections, undocumented_keys

ROOT = Path(__file__).resolve().parents[1]


def test_every_config_key_is_documented_in_its_section():
    assert undocumented_keys() == []
    ref = reference_markdown()
    for name, cls in sections().items():
        assert f"## `[{name}]`" in ref
        for f in cls.__dataclass_fields__:
            assert f"| `{f}` |" in ref, f"{name}.{f}"


def test_docs_build_strictly(tmp_path):
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    page = (tmp_path / "site" / "config" / "index.html").read_text()
    assert "split_depth_voxels" in page and "{{ config_reference }}" not in page
