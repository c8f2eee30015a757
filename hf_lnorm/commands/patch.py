"""``hf-lnorm patch [MODEL]``: list a model's norms, patch them, check the outputs.

Prints one line per norm-like module (name, original class, variant, patched
or skipped and why), then runs the model on a random input before and after
patching and prints the largest difference per output. Exit status 1 when an
output differs by more than its tolerance, ``atol + rtol * max|reference|``:

* ``--mode fused`` is exact up to float32 rounding: ``atol 1e-5``, ``rtol 0``.
* ``--mode quantized`` runs the norms' readers in int8, whose error scales with
  the outputs: ``atol 0``, ``rtol 0.25`` (``QUANTIZED_RTOL``). Measured max
  error / max |reference|: 0.03-0.14 on the bundled MiniLM with a fresh QA head
  (3 head seeds, 16 and 64 tokens; 0.08 for the seed this command uses), 0.03
  on its hidden states, 0.004-0.014 on tiny random BERT, GPT-2, Llama, T5, ViT.
  The bound is a check that the int8 path is sound (a broken one is off by
  ~100%), not an accuracy figure; ``hf-lnorm bench quantized`` measures that.

Giving ``--atol`` or ``--rtol`` replaces both defaults (the one not given is 0).
Usage errors (unknown mode, unknown or unavailable backend, bad numbers) exit
2 before the model is loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import torch

from .._argtypes import non_negative_float, positive_int
from ..loading import TASKS
from ..norms.fused import BACKENDS
from ..patching import MODES

QUANTIZED_RTOL = 0.25
DEFAULT_TOLERANCES = {  # mode -> (atol, rtol); modes not listed are held to the fused (exact) bound
    "fused": (1e-5, 0.0),
    "quantized": (0.0, QUANTIZED_RTOL),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``hf-lnorm patch``."""
    parser.add_argument("model", nargs="?", default=None,
                        help="local folder or hub id (default: the bundled offline MiniLM BERT)")
    parser.add_argument("--mode", default="fused", choices=sorted(MODES),
                        help="patch mode: fused (exact) or quantized (int8) (default: fused)")
    parser.add_argument("--task", default=None, choices=list(TASKS),
                        help="Auto class to load (default: base, the model without a task head)")
    parser.add_argument("--include", action="append", default=None, metavar="PATTERN", help="only patch matching module names")
    parser.add_argument("--exclude", action="append", default=None, metavar="PATTERN", help="never patch matching module names")
    parser.add_argument("--backend", default="auto", choices=["auto", *BACKENDS],
                        help="kernel backend (default: auto, the fastest available here)")
    parser.add_argument("--atol", type=non_negative_float, default=None,
                        help="accepted absolute output difference (default: 1e-5 for fused, 0 for quantized)")
    parser.add_argument("--rtol", type=non_negative_float, default=None,
                        help=f"accepted difference as a fraction of the largest reference output "
                             f"(default: 0 for fused, {QUANTIZED_RTOL:g} for quantized)")
    parser.add_argument("--seq-len", type=positive_int, default=16, help="random input length (default: 16)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow custom modeling code from the model folder")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON")


def tolerances(mode: str, atol=None, rtol=None):
    """``(atol, rtol, source)`` for ``mode``: the flags when either is given, else the mode's defaults."""
    if atol is None and rtol is None:
        atol, rtol = DEFAULT_TOLERANCES.get(mode, DEFAULT_TOLERANCES["fused"])
        return atol, rtol, f"default for mode {mode}"
    return atol or 0.0, rtol or 0.0, "from --atol/--rtol"


def run(args: argparse.Namespace) -> int:
    """Patch the model, compare its outputs with the unpatched ones, print the report; 0 when they agree."""
    from ..errors import UsageError
    from ..inputs import dummy_inputs
    from ..loading import ModelNotFoundError, load_model
    from ..norms.fused import resolve_backend
    from ..patching import patch, patch_report

    try:
        backend = resolve_backend(args.backend)  # an unavailable backend is a usage error, before loading
    except ValueError as exc:
        raise UsageError(f"--backend {args.backend}: {exc}") from None
    atol, rtol, source = tolerances(args.mode, args.atol, args.rtol)
    task = args.task or "base"
    torch.manual_seed(0)  # a task head the checkpoint lacks is freshly initialised: make it reproducible
    try:
        model = load_model(args.model, task=task, trust_remote_code=args.trust_remote_code)
    except (ModelNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    inputs = dummy_inputs(model, batch_size=2, seq_len=args.seq_len)
    with torch.no_grad():
        ref = model(**inputs)
    patch(model, mode=args.mode, include=args.include, exclude=args.exclude, backend=backend)
    report = patch_report(model)
    with torch.no_grad():
        out = model(**inputs)
    checks = {}
    for key, value in ref.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            err = float((out[key].float() - value.float()).abs().max())
            scale = float(value.float().abs().max())
            checks[key] = {"max_abs_err": err, "max_abs_ref": scale, "tolerance": atol + rtol * scale}
    print(report.table())
    print(report.summary())
    print(f"tolerance: max abs err <= atol {atol:g} + rtol {rtol:g} x max|reference| ({source})")
    for key, c in checks.items():
        print(f"check {key}: max abs err {c['max_abs_err']:.3e} against the unpatched model "
              f"(max|reference| {c['max_abs_ref']:.3g}, tolerance {c['tolerance']:.3e})")
    worst = max((c["max_abs_err"] for c in checks.values()), default=0.0)
    ok = all(c["max_abs_err"] <= c["tolerance"] for c in checks.values())
    print(f"outputs {'match' if ok else 'DIFFER'} (max abs err {worst:.3e}; atol {atol:g}, rtol {rtol:g})")
    if args.json:
        payload = {"model": args.model or "bundled:minilm", "mode": args.mode, "backend": backend,
                   "max_abs_err": worst, "atol": atol, "rtol": rtol, "ok": ok,
                   "outputs": {k: c["max_abs_err"] for k, c in checks.items()}, "checks": checks,
                   "norms": report.to_dicts()}
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(payload, f, indent=2, default=str)
            os.replace(tmp, args.json)
        except BaseException:
            os.unlink(tmp)
            raise
    return 0 if ok else 1
