"""The ``>>>`` examples in hf_lnorm's docstrings run and print what they show.

Every module under ``hf_lnorm/`` whose source holds a ``>>>`` example is found
by reading the files (so a new doctest is picked up without editing this file),
imported, and run with ``doctest`` (``ELLIPSIS | NORMALIZE_WHITESPACE``), one
test per module. Examples marked ``# doctest: +SKIP`` are not run; the totals
below make sure the run is not empty. Examples that need real weights, a GPU or
an export are written as fenced code blocks instead and are not run here.

Run ``python tests/test_doctests.py`` to print the example counts per module.
"""

from __future__ import annotations

import doctest
import importlib
import sys
from pathlib import Path
from typing import List

import pytest

ROOT = Path(__file__).resolve().parents[1] / "hf_lnorm"
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# Floors for the number of examples run: well below the current counts (over
# 500 examples in about 50 modules), high enough that a run that silently finds
# or executes nothing fails.
MIN_TOTAL_EXAMPLES = 450
MIN_MODULES = 40
# Modules whose public API must keep runnable examples (checked by name, so a
# module whose doctests disappear fails here rather than passing with zero).
MUST_HAVE_EXAMPLES = (
    "hf_lnorm",
    "hf_lnorm.patching",
    "hf_lnorm.patch_report",
    "hf_lnorm.probe",
    "hf_lnorm.norms.reference",
    "hf_lnorm.norms.ops",
    "hf_lnorm.norms.fused",
    "hf_lnorm.quantization",
    "hf_lnorm.quantization.calibration",
    "hf_lnorm.resources",
    "hf_lnorm.loading",
    "hf_lnorm.outputs",
    "hf_lnorm.errors",
    "hf_lnorm.export.onnx",
    "hf_lnorm.export.graph_inspect",
    "hf_lnorm.export.ort",
    "hf_lnorm.export.ort.fusions",
    "hf_lnorm.models",
    "hf_lnorm.models.configuration_lnorm_gpt",
    "hf_lnorm.models.modeling_lnorm_gpt",
    "hf_lnorm.models.modeling_lnorm_seq2seq",
    "hf_lnorm.models.modeling_lnorm_policy",
    "hf_lnorm.models.modeling_lnorm_vit",
    "hf_lnorm.models.modeling_lnorm_speech",
    "hf_lnorm.models.modeling_lnorm_vision_text",
    "hf_lnorm.models.processing_lnorm_vit",
    "hf_lnorm.models.processing_lnorm_speech",
    "hf_lnorm.models.processing_lnorm_vision_text",
    "hf_lnorm.models.processing_lnorm_imagegpt",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_with_examples() -> List[str]:
    """Dotted names of the modules whose source holds a ``>>>`` example, sorted."""
    return sorted(_module_name(p) for p in ROOT.rglob("*.py") if ">>>" in p.read_text(encoding="utf-8"))


MODULES = modules_with_examples()


def run_module(name: str) -> doctest.TestResults:
    """Run the doctests of module ``name`` and return ``(failed, attempted)``; process state the examples change is restored."""
    module = importlib.import_module(name)
    from hf_lnorm.patching import MODES

    modes = dict(MODES)  # an example registers a custom patch mode: keep it out of the other tests
    try:
        return doctest.testmod(module, optionflags=OPTIONS, report=True, verbose=False)
    finally:
        MODES.clear()
        MODES.update(modes)


_attempted = {}


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name):
    try:
        importlib.import_module(name)
    except ImportError as exc:  # an optional dependency of that module is missing here: reported as a skip
        if getattr(exc, "name", None) and not str(exc.name).startswith("hf_lnorm"):
            pytest.skip(f"{name} needs {exc.name}")
        raise
    result = run_module(name)
    _attempted[name] = result.attempted
    assert result.failed == 0, f"{result.failed} of {result.attempted} doctest examples failed in {name} (details above)"


def test_doctests_ran_enough():
    """The totals of the per-module runs: enough modules and examples, and every public module has some."""
    missing = [name for name in MODULES if name not in _attempted]
    for name in missing:  # run on its own (``-k``, or the per-module tests were deselected): run them here
        try:
            _attempted[name] = run_module(name).attempted
        except ImportError:
            continue
    assert len(MODULES) >= MIN_MODULES, f"only {len(MODULES)} modules with doctests found under {ROOT}"
    total = sum(_attempted.values())
    assert total >= MIN_TOTAL_EXAMPLES, f"only {total} doctest examples ran (expected at least {MIN_TOTAL_EXAMPLES})"
    without = [name for name in MUST_HAVE_EXAMPLES if _attempted.get(name, 0) == 0]
    assert not without, f"modules whose docstrings have no runnable example: {without}"


if __name__ == "__main__":  # pragma: no cover
    for module_name in MODULES:
        res = run_module(module_name)
        print(f"{module_name}: {res.attempted} examples, {res.failed} failed", file=sys.stderr)
