"""What the C++ CPU kernels' idle-block cache buys and costs, per cache limit.

For each limit (off, a small bound, 1 GiB) it runs, in separate processes and
in rotating order over several passes (the machine is shared and noisy):

* ``hf-lnorm bench norms`` on CPU (forward, the pass the kernels serve) with
  ``--cpu-cache-mb``;
* end to end: the bundled MiniLM with a QA head, stock vs patched, fp32 eager
  under ``torch.inference_mode()``, interleaved calls, at batch 8 x seq 384 and
  1 x 128, with ``HF_LNORM_CPU_CACHE_MB`` set.

Medians, their spread over passes, the idle bytes the cache held at the end
and each process's peak RSS go to ``--out`` (JSON, with git SHA, versions and
machine).

Example:
    python scripts/bench_cpu_cache_policy.py --passes 3 --out data/results/bench_norms_cpu_cache_policy.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

SETTINGS = {"off": 0, "64MiB": 64, "1GiB": 1024}
E2E_SHAPES = ((8, 384), (1, 128))


def _worker(rounds_big: int, rounds_small: int, threads: int) -> None:
    """One process: stock vs patched MiniLM QA at each shape, interleaved; prints one JSON line."""
    import copy

    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer
    from transformers.utils import logging as hf_logging

    import hf_lnorm
    from hf_lnorm.loading import bundled_model_path
    from hf_lnorm.norms import cpu

    torch.set_num_threads(threads)
    hf_logging.set_verbosity_error()
    path = bundled_model_path()
    torch.manual_seed(0)
    stock = AutoModelForQuestionAnswering.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    patched = hf_lnorm.patch(copy.deepcopy(stock))
    words = ("the norm of every layer keeps activations in range while the model reads the passage " * 64).split()
    out = {"cache_limit_bytes": cpu.cache_info()["limit_bytes"], "shapes": {}}
    for batch, seq in E2E_SHAPES:
        enc = tok(["what keeps activations in range?"] * batch, [" ".join(words[:seq])] * batch,
                  truncation="only_second", max_length=seq, padding="max_length", return_tensors="pt")
        arms = {"stock": stock, "patched": patched}
        with torch.inference_mode():
            for _ in range(2):
                for model in arms.values():
                    model(**enc)
            times = {name: [] for name in arms}
            rounds = rounds_big if batch * seq > 1024 else rounds_small
            for i in range(rounds):
                order = list(arms) if i % 2 == 0 else list(arms)[::-1]
                for name in order:
                    start = time.perf_counter()
                    arms[name](**enc)
                    times[name].append((time.perf_counter() - start) * 1e3)
        info = cpu.cache_info()
        out["shapes"][f"{batch}x{seq}"] = {"stock_ms": times["stock"], "patched_ms": times["patched"],
                                           "idle_bytes_end": info["idle_bytes"], "hits": info["hits"],
                                           "misses": info["misses"]}
    out["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


def _spread(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def _bench_norms(mb: int, threads: int, repeats: int, shapes: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.json")
        cmd = [sys.executable, "-m", "hf_lnorm.cli", "bench", "norms", "--device", "cpu", "--threads", str(threads),
               "--passes", "fwd", "--impls", "hf_lnorm,hf_lnorm_inplace,torch", "--repeats", str(repeats),
               "--shapes", shapes, "--cpu-cache-mb", str(mb), "--json", path]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(path) as f:
            return json.load(f)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/results/bench_norms_cpu_cache_policy.json")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds-big", type=int, default=10, help="interleaved rounds per process at 8x384")
    parser.add_argument("--rounds-small", type=int, default=40, help="interleaved rounds per process at 1x128")
    parser.add_argument("--bench-repeats", type=int, default=15)
    parser.add_argument("--shapes", default="4096x768,4096x1024,16384x4096")
    parser.add_argument("--skip-micro", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.rounds_big, args.rounds_small, args.threads)
        return 0

    import torch
    import transformers

    from hf_lnorm._json import write_json
    from hf_lnorm._machine import machine_info

    names = list(SETTINGS)
    micro = {n: [] for n in names}
    e2e = {n: [] for n in names}
    for p in range(args.passes):
        order = names[p % len(names):] + names[: p % len(names)]
        for name in order:
            mb = SETTINGS[name]
            print(f"pass {p + 1}/{args.passes}: cache {name}", flush=True)
            if not args.skip_micro:
                micro[name].append(_bench_norms(mb, args.threads, args.bench_repeats, args.shapes))
            env = dict(os.environ, HF_LNORM_CPU_CACHE_MB=str(mb))
            res = subprocess.run([sys.executable, __file__, "--worker", "--threads", str(args.threads),
                                  "--rounds-big", str(args.rounds_big), "--rounds-small", str(args.rounds_small)],
                                 env=env, capture_output=True, text=True)
            if res.returncode != 0:
                raise SystemExit(f"the e2e worker failed:\n{res.stderr[-3000:]}")
            e2e[name].append(json.loads(res.stdout.strip().splitlines()[-1]))

    summary = {"micro": {}, "e2e": {}}
    for name in names:
        rows = {}
        for run in micro[name]:
            idx = {(r["op"], r["impl"], r["tokens"], r["hidden"]): r["median_ms"] for r in run["results"]}
            for (op, impl, tokens, hidden), ms in idx.items():
                base = idx[(op, "torch", tokens, hidden)]
                row = rows.setdefault(f"{op} {impl} {tokens}x{hidden}", {"ms": [], "vs_torch": []})
                row["ms"].append(ms)
                row["vs_torch"].append(base / ms)
        summary["micro"][name] = {k: {"median_ms": _spread(v["ms"]), "speedup_vs_torch": _spread(v["vs_torch"])}
                                  for k, v in rows.items()}
        shapes = {}
        for run in e2e[name]:
            for shape, r in run["shapes"].items():
                s = shapes.setdefault(shape, {"stock": [], "patched": [], "speedups": [], "idle": [], "rss": []})
                s["stock"] += r["stock_ms"]
                s["patched"] += r["patched_ms"]
                s["speedups"].append(statistics.median(r["stock_ms"]) / statistics.median(r["patched_ms"]))
                s["idle"].append(r["idle_bytes_end"] / 2**20)
                s["rss"].append(run["max_rss_mib"])
        summary["e2e"][name] = {shape: {"stock_ms": _spread(s["stock"]), "patched_ms": _spread(s["patched"]),
                                        "speedup_per_process": _spread(s["speedups"]),
                                        "idle_cache_mib_end": _spread(s["idle"]),
                                        "process_max_rss_mib": _spread(s["rss"])} for shape, s in shapes.items()}
    sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    payload = {"what": "C++ CPU kernels: idle output-block cache limit, off vs 64 MiB vs 1 GiB",
               "command": " ".join([os.path.basename(sys.executable)] + sys.argv), "git_sha": sha,
               "git_dirty": bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True,
                                                text=True).stdout.strip()),
               "torch": torch.__version__, "transformers": transformers.__version__, "machine": machine_info(),
               "threads": args.threads, "passes": args.passes, "settings_mib": SETTINGS, "summary": summary,
               "raw": {"micro": micro, "e2e": e2e}}
    write_json(args.out, payload)
    print(json.dumps({"e2e": summary["e2e"]}, indent=1)[:6000])
    for name in names:
        for k, v in summary["micro"][name].items():
            if "torch" not in k.split()[1]:
                print(name, k, round(v["speedup_vs_torch"]["median"], 2), round(v["median_ms"]["median"], 3))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
