"""What the C++ CPU kernels' idle-block cache buys and costs, per cache limit.

For each limit (off, a small bound, 1 GiB) it runs, in separate processes and
in rotating order over several passes (the machine is shared and noisy):

* ``hf-lnorm bench norms`` on CPU (forward, the pass the kernels serve) with
  ``--cpu-cache-mb``;
* end to end, once per pass: the bundled MiniLM with a QA head, stock (and an
  identical stock twin, the noise floor) vs patched at each limit, fp32 eager
  under ``torch.inference_mode()``, at batch 8 x seq 384 and 1 x 128; the arms
  are interleaved call by call in one process (``set_cache_limit`` plus one
  untimed call before each patched call, so each arm runs in its steady state).

Medians, their spread over passes (speedups are per process, against that
process's stock median) and the most idle bytes each limit held go to
``--out`` (JSON, with git SHA, versions and machine).

Example:
    python scripts/bench_cpu_cache_policy.py --passes 3 --out data/results/bench_norms_cpu_cache_policy.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SETTINGS = {"off": 0, "64MiB": 64, "1GiB": 1024}
E2E_SHAPES = ((8, 384), (1, 128))


def _worker(rounds_big: int, rounds_small: int, threads: int) -> None:
    """One process: stock (twice) vs patched at each cache limit, interleaved per round; prints one JSON line.

    Before each timed patched call the limit is set and one untimed call refills the cache, so every arm
    is timed in its steady state; the second stock arm measures the noise floor.
    """
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
    twin = copy.deepcopy(stock)
    patched = hf_lnorm.patch(copy.deepcopy(stock))
    words = ("the norm of every layer keeps activations in range while the model reads the passage " * 64).split()
    arms = ["stock", "stock_twin"] + [f"patched_{name}" for name in SETTINGS]
    out = {"shapes": {}}
    for batch, seq in E2E_SHAPES:
        enc = tok(["what keeps activations in range?"] * batch, [" ".join(words[:seq])] * batch,
                  truncation="only_second", max_length=seq, padding="max_length", return_tensors="pt")
        times = {arm: [] for arm in arms}
        idle_max = {name: 0 for name in SETTINGS}
        rounds = rounds_big if batch * seq > 1024 else rounds_small
        with torch.inference_mode():
            for model in (stock, twin, patched):
                model(**enc)
            for i in range(rounds + 1):  # round 0 is a warm-up
                order = arms[i % len(arms):] + arms[: i % len(arms)]
                for arm in order:
                    model = {"stock": stock, "stock_twin": twin}.get(arm, patched)
                    if arm.startswith("patched_"):
                        cpu.set_cache_limit(SETTINGS[arm[len("patched_"):]] << 20)
                        model(**enc)
                    start = time.perf_counter()
                    model(**enc)
                    elapsed = (time.perf_counter() - start) * 1e3
                    if i > 0:
                        times[arm].append(elapsed)
                    if arm.startswith("patched_"):
                        name = arm[len("patched_"):]
                        idle_max[name] = max(idle_max[name], cpu.cache_info()["idle_bytes"])
        out["shapes"][f"{batch}x{seq}"] = {"times_ms": times, "idle_bytes_max": idle_max}
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
    parser.add_argument("--rounds-big", type=int, default=8, help="interleaved rounds per process at 8x384")
    parser.add_argument("--rounds-small", type=int, default=40, help="interleaved rounds per process at 1x128")
    parser.add_argument("--bench-repeats", type=int, default=15)
    parser.add_argument("--shapes", default="4096x768,4096x1024,16384x4096")
    parser.add_argument("--skip-micro", action="store_true")
    parser.add_argument("--decision", default=None, help="the policy chosen from these numbers, stored in the JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.rounds_big, args.rounds_small, args.threads)
        return 0

    import torch
    import transformers

    from hf_lnorm._json import write_json
    from hf_lnorm._machine import machine_info, provenance

    names = list(SETTINGS)
    micro = {n: [] for n in names}
    e2e = []
    for p in range(args.passes):
        order = names[p % len(names):] + names[: p % len(names)]
        for name in order if not args.skip_micro else []:
            print(f"pass {p + 1}/{args.passes}: bench norms, cache {name}", flush=True)
            micro[name].append(_bench_norms(SETTINGS[name], args.threads, args.bench_repeats, args.shapes))
        print(f"pass {p + 1}/{args.passes}: MiniLM end to end", flush=True)
        res = subprocess.run([sys.executable, __file__, "--worker", "--threads", str(args.threads),
                              "--rounds-big", str(args.rounds_big), "--rounds-small", str(args.rounds_small)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(f"the e2e worker failed:\n{res.stderr[-3000:]}")
        e2e.append(json.loads(res.stdout.strip().splitlines()[-1]))

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
    for shape in e2e[0]["shapes"] if e2e else []:
        arms = list(e2e[0]["shapes"][shape]["times_ms"])
        per_arm = {arm: [t for run in e2e for t in run["shapes"][shape]["times_ms"][arm]] for arm in arms}
        stock_medians = [statistics.median(run["shapes"][shape]["times_ms"]["stock"]) for run in e2e]
        summary["e2e"][shape] = {
            arm: {"ms": _spread(per_arm[arm]),
                  "speedup_vs_stock_per_process": _spread([
                      sm / statistics.median(run["shapes"][shape]["times_ms"][arm]) for sm, run in zip(stock_medians, e2e)])}
            for arm in arms}
        summary["e2e"][shape]["idle_cache_mib_max"] = {
            name: max(run["shapes"][shape]["idle_bytes_max"][name] for run in e2e) / 2**20 for name in names}
    sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    payload = {"what": "C++ CPU kernels: idle output-block cache limit, off vs 64 MiB vs 1 GiB",
               "decision": args.decision,
               "command": " ".join([os.path.basename(sys.executable)] + sys.argv), "git_sha": sha,
               "git_dirty": bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True,
                                                text=True).stdout.strip()),
               "torch": torch.__version__, "transformers": transformers.__version__, "machine": machine_info(),
               "threads": args.threads, "passes": args.passes, "settings_mib": SETTINGS, "summary": summary,
               "raw": {"micro": micro, "e2e": e2e}, "provenance": provenance()}
    write_json(args.out, payload)
    for shape, arms in summary["e2e"].items():
        for arm, v in arms.items():
            if arm == "idle_cache_mib_max":
                print(shape, "idle cache MiB (max)", v)
                continue
            sp = v["speedup_vs_stock_per_process"]
            print(f"{shape} {arm:18s} {v['ms']['median']:9.2f} ms  vs stock {sp['median']:.3f} "
                  f"[{sp['min']:.3f}..{sp['max']:.3f}]")
    for name in names:
        for k, v in summary["micro"][name].items():
            if k.split()[1] != "torch":
                sp = v["speedup_vs_torch"]
                print(f"{name:6s} {k:40s} {v['median_ms']['median']:9.3f} ms  vs torch {sp['median']:.2f} "
                      f"[{sp['min']:.2f}..{sp['max']:.2f}]")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
