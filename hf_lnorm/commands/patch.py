"""``hf-lnorm patch [MODEL]``: list a model's norms, patch them, check the outputs.

Prints one line per norm-like module (name, original class, variant, patched
or skipped and why), then runs the model on a random input before and after
patching and prints the largest difference. Exit status 1 when the patched
outputs differ by more than ``--atol``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import torch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None,
                        help="local folder or hub id (default: the bundled offline MiniLM BERT, with a QA head)")
    parser.add_argument("--mode", default="fused", help="patch mode: fused (exact) or quantized (default: fused)")
    parser.add_argument("--task", default=None,
                        help="Auto class to load: base, question-answering, causal-lm, seq2seq-lm, ... "
                             "(default: question-answering for the bundled model, base otherwise)")
    parser.add_argument("--include", action="append", default=None, metavar="PATTERN", help="only patch matching module names")
    parser.add_argument("--exclude", action="append", default=None, metavar="PATTERN", help="never patch matching module names")
    parser.add_argument("--backend", default=None, help="force a kernel backend (default: fastest available)")
    parser.add_argument("--atol", type=float, default=1e-5, help="largest accepted output difference (default: 1e-5)")
    parser.add_argument("--seq-len", type=int, default=16, help="random input length (default: 16)")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow custom modeling code from the model folder")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON")


def run(args: argparse.Namespace) -> int:
    from ..cli import UsageError
    from ..inputs import dummy_inputs
    from ..loading import ModelNotFoundError, load_model
    from ..patching import MODES, patch, patch_report

    if args.mode not in MODES:
        raise UsageError(f"unknown mode {args.mode!r}; accepted modes: {', '.join(sorted(MODES))}")
    task = args.task or ("question-answering" if args.model is None else "base")
    try:
        model = load_model(args.model, task=task, trust_remote_code=args.trust_remote_code)
    except (ModelNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    torch.manual_seed(0)  # a fresh task head (e.g. QA on the bundled model) is random: make it reproducible
    inputs = dummy_inputs(model, batch_size=2, seq_len=args.seq_len)
    with torch.no_grad():
        ref = model(**inputs)
    patch(model, mode=args.mode, include=args.include, exclude=args.exclude, backend=args.backend)
    report = patch_report(model)
    with torch.no_grad():
        out = model(**inputs)
    errs = {}
    for key, value in ref.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            errs[key] = float((out[key].float() - value.float()).abs().max())
    print(report.table())
    print(report.summary())
    worst = max(errs.values()) if errs else 0.0
    for key, err in errs.items():
        print(f"check {key}: max abs err {err:.3e} against the unpatched model")
    ok = worst <= args.atol
    print(f"outputs {'match' if ok else 'DIFFER'} (max abs err {worst:.3e}, atol {args.atol:g})")
    if args.json:
        payload = {"model": args.model or "bundled:minilm", "mode": args.mode, "max_abs_err": worst,
                   "outputs": errs, "norms": report.to_dicts()}
        directory = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, default=str)
        os.replace(tmp, args.json)
    return 0 if ok else 1
