"""The README's quick-start code runs as written, and the README stays a short user's guide."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_readme_is_short_and_starts_with_the_two_setup_commands():
    assert len(README.splitlines()) <= 250
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1).splitlines()
    assert "hf-lnorm optimize" in first_block[0] and "scripts/setup_env.sh" in first_block[0]
    assert "scripts/test.sh" in first_block[1] and "scripts/setup_env.sh" in first_block[1]


def test_readme_links_point_at_files_in_the_checkout():
    links = re.findall(r"\]\(((?!https?://|#)[^)]+)\)", README)
    assert links, "the README links its guides"
    missing = [link for link in links if not (ROOT / link.split("#")[0]).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_python_block_runs(index, tmp_path):
    script = tmp_path / "block.py"
    script.write_text(PYTHON_BLOCKS[index], encoding="utf-8")
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if "patch_report" in PYTHON_BLOCKS[index]:
        assert " patched " in proc.stdout
        diff = float(re.search(r"max \|diff\|: (\S+)", proc.stdout).group(1))
        assert diff < 1e-4


def test_readme_does_not_talk_about_project_history():
    from tests.test_docs_site import history_words

    hits = history_words(README)
    assert not hits, f"project-history wording in README.md: {hits}"
