"""Sweep the Triton norm kernels' launch parameters on a CUDA device (device time, CUDA graphs).

For each shape and dtype: LayerNorm forward over ``num_warps`` and the
backward over ``num_warps`` x programs per SM (forward against torch's own kernel).
Prints a table and writes JSON; the defaults in ``norms/triton/kernels.py``
were read off such a run.

    python scripts/tune_norm_kernels.py --json runs/tune_norm_kernels.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_lnorm.benchmarks.norms import _input_sets, _time_cuda  # noqa: E402
from hf_lnorm.norms.triton import kernels  # noqa: E402


def _sets(tokens, hidden, dtype):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(tokens, hidden, generator=gen).to("cuda", dtype) for _ in range(_input_sets(tokens, hidden, dtype, "cuda"))]


def _cycling(fn, sets):
    turn = [0]

    def run():
        turn[0] = (turn[0] + 1) % len(sets)
        fn(sets[turn[0]])
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="4096x768,4096x1024,16384x4096")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.error("needs a CUDA device")
    rows = []
    for shape in args.shapes.split(","):
        tokens, hidden = map(int, shape.split("x"))
        for dname in args.dtypes.split(","):
            dtype = getattr(torch, dname)
            xs = _sets(tokens, hidden, dtype)
            w = torch.rand(hidden, device="cuda", dtype=dtype) + 0.5
            b = torch.randn(hidden, device="cuda", dtype=dtype)
            runners = {"torch": _cycling(lambda x: F.layer_norm(x, (hidden,), w, b, 1e-5), xs)}
            for warps in (1, 2, 4, 8, 16, 32):
                runners[f"w{warps}"] = _cycling(
                    lambda x, warps=warps: kernels.norm_fwd(x, None, w, b, 1e-5, "layer_norm", num_warps=warps), xs)
            with torch.no_grad():
                ms = _time_cuda(runners, args.repeats, graph=True)
            nbytes = 2 * tokens * hidden * torch.finfo(dtype).bits // 8
            for name, t in ms.items():
                rows.append({"pass": "fwd", "tokens": tokens, "hidden": hidden, "dtype": dname, "config": name,
                             "median_ms": round(t, 5), "gbps": round(nbytes / t / 1e6, 1)})
            # backward: dy, s, stats from one forward
            dys = _sets(tokens, hidden, dtype)
            _, s, mean, rstd = kernels.norm_fwd(xs[0], None, w, b, 1e-5, "layer_norm")
            runners = {}
            for warps in (4, 8, 16):
                for per_sm in (1, 2, 4, 8):
                    runners[f"w{warps}/p{per_sm}"] = _cycling(
                        lambda dy, warps=warps, per_sm=per_sm: kernels.norm_bwd(
                            dy, None, s, w, mean, rstd, "layer_norm", True, [True, True, True],
                            num_warps=warps, programs_per_sm=per_sm), dys)
            ms = _time_cuda(runners, args.repeats, graph=True)
            for name, t in ms.items():
                rows.append({"pass": "bwd", "tokens": tokens, "hidden": hidden, "dtype": dname, "config": name,
                             "median_ms": round(t, 5), "gbps": round(3 * nbytes / 2 / t / 1e6, 1)})
            for r in rows:
                if r["tokens"] == tokens and r["hidden"] == hidden and r["dtype"] == dname:
                    print(f"{r['pass']:4} {tokens}x{hidden} {dname:9} {r['config']:10} {r['median_ms']:.4f} ms {r['gbps']:8.1f} GB/s")
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
