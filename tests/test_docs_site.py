"""The documentation site's structure, without building it (``scripts/build_docs.sh`` builds it).

* every page in the ``mkdocs.yml`` nav exists, and every ``docs/**/*.md`` is in the nav (or under
  ``exclude_docs``), so no page is orphaned or dangling;
* every ``::: dotted.path`` directive of the API pages names an importable object, and the public
  names of the main modules are all documented;
* no page talks about how the project was built (sessions, issue numbers, targets met or missed).
"""

import fnmatch
import importlib
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _config() -> dict:
    with open(ROOT / "mkdocs.yml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def _nav_pages(node) -> list:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for value in node.values() for p in _nav_pages(value)]
    if isinstance(node, list):
        return [p for item in node for p in _nav_pages(item)]
    return []


def _excluded(rel: str, patterns: list) -> bool:
    """Whether ``rel`` (relative to docs/) matches an ``exclude_docs`` line (gitignore-style, simplified)."""
    for pattern in patterns:
        pattern = pattern.strip().lstrip("/")
        if pattern.endswith("/") and rel.startswith(pattern):
            return True
        if pattern and fnmatch.fnmatch(rel, pattern):
            return True
    return False


def _md_files(docs: Path = DOCS) -> list:
    return sorted(p.relative_to(docs).as_posix() for p in docs.rglob("*.md"))


def nav_problems(config: dict, docs: Path = DOCS):
    """``(nav pages that do not exist, pages under docs/ that are not in the nav)``."""
    nav = _nav_pages(config["nav"])
    missing = [p for p in nav if not (docs / p).is_file()]
    excluded = (config.get("exclude_docs") or "").splitlines()
    orphans = [p for p in _md_files(docs) if p not in nav and not _excluded(p, excluded)]
    return missing, orphans


def test_every_nav_page_exists_and_every_page_is_in_the_nav():
    config = _config()
    nav = _nav_pages(config["nav"])
    assert len(nav) == len(set(nav)), f"pages listed twice in the nav: {sorted({p for p in nav if nav.count(p) > 1})}"
    missing, orphans = nav_problems(config)
    assert not missing, f"pages in the mkdocs.yml nav that do not exist under docs/: {missing}"
    assert not orphans, f"pages under docs/ missing from the mkdocs.yml nav: {orphans}"
    for page in ("index.md", "install.md", "guides/patching.md", "families/index.md", "api/index.md", "results/index.md"):
        assert page in nav


def test_nav_check_reports_missing_and_orphaned_pages(tmp_path):
    """The check above is not vacuous: a dangling nav entry and a page outside the nav are both reported."""
    (tmp_path / "hooks").mkdir()
    (tmp_path / "guides").mkdir()
    for page in ("index.md", "guides/stray.md", "hooks/notes.md"):
        (tmp_path / page).write_text("# page\n", encoding="utf-8")
    config = {"nav": [{"Home": "index.md"}, {"Guides": ["guides/gone.md"]}], "exclude_docs": "hooks/\n"}
    assert nav_problems(config, tmp_path) == (["guides/gone.md"], ["guides/stray.md"])


_DIRECTIVE = re.compile(r"^:::\s+([\w.]+)\s*$", re.MULTILINE)


def _directives() -> list:
    found = []
    for page in sorted((DOCS / "api").glob("*.md")):
        found += [(page.name, name) for name in _DIRECTIVE.findall(page.read_text(encoding="utf-8"))]
    return found


def _resolve(dotted: str):
    """Import the longest module prefix of ``dotted``, then follow attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_api_directives_name_importable_objects():
    directives = _directives()
    assert len(directives) >= 100, f"only {len(directives)} ::: directives under docs/api"
    broken = []
    for page, name in directives:
        try:
            _resolve(name)
        except (ImportError, AttributeError) as exc:
            broken.append(f"{page}: {name} ({type(exc).__name__}: {exc})")
    assert not broken, "API directives that name nothing importable:\n" + "\n".join(broken)


@pytest.mark.parametrize("module", ["hf_lnorm", "hf_lnorm.norms", "hf_lnorm.export", "hf_lnorm.models"])
def test_public_names_are_documented(module):
    documented = {name.rsplit(".", 1)[-1] for _, name in _directives()}
    public = importlib.import_module(module).__all__
    missing = sorted(set(public) - documented)
    assert not missing, f"names in {module}.__all__ without a ::: directive under docs/api: {missing}"


# Talk about how the project was built, not about the software. Whole words, case-insensitive.
HISTORY = [
    r"(?:this|that|previous|earlier|last|coding|work|lent) sessions?",
    r"issues? ?#\s*\d+",
    r"issue-\d+",
    r"work items?",
    r"targets? (?:met|missed|reached|not met)",
    r"not met",
    r"(?:met|missed) (?:the|its|our) target",
    r"target\s*[≤≥<>]",
    r"(?:previous|earlier|older) version",
    r"previously",
    r"no longer",
]
_HISTORY = re.compile(r"\b(?:" + "|".join(HISTORY) + r")(?!\w)", re.IGNORECASE)


def history_words(text: str) -> list:
    """The project-history phrases in ``text``, with their line numbers."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(0)) for m in _HISTORY.finditer(text)]


def test_history_check_catches_history_and_spares_software_words():
    flagged = ("Measured in a lent session.", "Fixed in issue #9.", "See issue-9.", "The target is not met.",
               "F1 drop 0.5 (target ≤ 1.0)", "Unlike the previous version, ...", "This was previously slow.")
    for text in flagged:
        assert history_words(text), text
    spared = ("an ONNX Runtime InferenceSession", "hf_lnorm.export.ort.session(path)", "--target tensorrt",
              "the export target", "issues a warning", "the next ONNX Runtime session")
    for text in spared:
        assert not history_words(text), text


def test_no_page_talks_about_project_history():
    hits = []
    for rel in _md_files():
        for line, phrase in history_words((DOCS / rel).read_text(encoding="utf-8")):
            hits.append(f"docs/{rel}:{line}: {phrase!r}")
    assert not hits, "project-history wording in the docs (write about the software instead):\n" + "\n".join(hits)
