"""Census of the norm classes transformers' own architectures define, and what hf_lnorm does with each.

    python scripts/norm_census.py [--json data/results/norm_census_<version>.json]

Walks every ``transformers/models/*/modeling_*.py`` file (by AST, then imports
the module), collects each class whose name ends in ``Norm`` / ``Norm2d`` /
``NormGated`` or that subclasses ``nn.LayerNorm``, instantiates it with a
hidden size of 16 (trying the constructor signatures these classes use: a
size, a size and eps, keyword sizes, or a config object), and runs
``hf_lnorm.classify`` on the instance — the same probe ``patch`` uses. Prints
a summary and writes one JSON row per class: patched exactly (with the
variant), skipped (with the reason), or not instantiable here (with the error).
Classes that are re-exported under several names count once.
"""

from __future__ import annotations

import argparse
import ast
import collections
import importlib
import json
import os
import re
import sys
import tempfile
import warnings

import torch
import transformers
from torch import nn

import hf_lnorm
from hf_lnorm._machine import provenance
from hf_lnorm.patching import _NOT_LAST_DIM

NAME = re.compile(r"Norm(\d*d?|Gated)?$")
H = 16


def _config():
    cfg = transformers.PretrainedConfig()
    for k, v in dict(hidden_size=H, d_model=H, dim=H, n_embd=H, embed_dim=H, intermediate_size=H, num_attention_heads=2,
                     head_dim=8, rms_norm_eps=1e-6, layer_norm_eps=1e-5, layer_norm_epsilon=1e-5, norm_eps=1e-5,
                     num_key_value_heads=2, hidden_sizes=[H], norm_epsilon=1e-5).items():
        setattr(cfg, k, v)
    return cfg


def _instantiate(cls):
    attempts = [((H,), {}), ((H,), {"eps": 1e-6}), ((), {"hidden_size": H}), ((), {"dim": H}),
                ((), {"normalized_shape": H}), ((_config(),), {}), ((_config(), H), {}), ((), {"config": _config()}),
                ((H, 1e-6), {}), ((), {"num_channels": H}), ((2, H), {})]
    errors = []
    for args, kwargs in attempts:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return cls(*args, **kwargs), None
        except Exception as exc:  # constructor signatures differ per class
            errors.append(f"{type(exc).__name__}: {exc}")
    return None, errors[0] if errors else "no attempt"


def census():
    root = os.path.dirname(transformers.models.__file__)
    found = {}
    for model_dir in sorted(os.listdir(root)):
        d = os.path.join(root, model_dir)
        if not os.path.isdir(d):
            continue
        for fname in sorted(os.listdir(d)):
            if not (fname.startswith("modeling_") and fname.endswith(".py")) or "_tf_" in fname or "_flax_" in fname:
                continue
            src = open(os.path.join(d, fname), encoding="utf-8").read()
            tree = ast.parse(src)
            names = []
            for node in tree.body:
                if isinstance(node, ast.ClassDef):
                    bases = [ast.unparse(b) for b in node.bases]
                    if NAME.search(node.name) or any(b.endswith("LayerNorm") for b in bases):
                        names.append(node.name)
            if not names:
                continue
            modname = f"transformers.models.{model_dir}.{fname[:-3]}"
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    mod = importlib.import_module(modname)
            except Exception as exc:
                for n in names:
                    found.setdefault(f"{modname}.{n}", {"class": f"{modname}.{n}", "status": "not imported", "reason": f"{type(exc).__name__}: {exc}"[:200]})
                continue
            for n in names:
                cls = getattr(mod, n, None)
                if cls is None or not (isinstance(cls, type) and issubclass(cls, nn.Module)):
                    continue
                key = f"{cls.__module__}.{cls.__qualname__}"
                if key in found:
                    continue
                found[key] = _classify_class(cls, key)
    for cls in (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm):
        key = f"{cls.__module__}.{cls.__qualname__}"
        found[key] = _classify_class(cls, key)
    return list(found.values())


def _classify_class(cls, key):
    module, err = _instantiate(cls)
    if module is None:
        return {"class": key, "status": "not instantiated", "reason": err[:200]}
    if isinstance(module, _NOT_LAST_DIM):
        pass
    spec, reason, e32, eh = hf_lnorm.classify(module)
    if spec is None:
        return {"class": key, "status": "skipped", "reason": reason[:300]}
    return {"class": key, "status": "patched", "variant": spec.variant, "note": reason, "probe_err_fp32": e32, "probe_err_bf16": eh}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Census of transformers' norm classes and hf_lnorm's verdict on each.")
    parser.add_argument("--json", default=f"data/results/norm_census_transformers-{transformers.__version__}.json")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = census()
    counts = collections.Counter(r["status"] for r in rows)
    variants = collections.Counter(r.get("variant") for r in rows if r["status"] == "patched")
    print(f"transformers {transformers.__version__}: {len(rows)} norm classes")
    for status, n in counts.most_common():
        print(f"  {status:17s} {n}")
    for v, n in variants.most_common():
        print(f"    {v:28s} {n}")
    print("skipped:")
    for r in rows:
        if r["status"] == "skipped":
            print(f"  {r['class']}: {r['reason'][:150]}")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.json)), suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump({"transformers": transformers.__version__, "torch": torch.__version__, "counts": dict(counts),
                   "variants": dict(variants), "rows": rows, "provenance": provenance()}, f, indent=1)
    os.chmod(tmp, 0o644)
    os.replace(tmp, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
