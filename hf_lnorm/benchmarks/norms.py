"""``hf-lnorm bench norms``: norm kernels against torch eager and the course's naive module.

For each shape (tokens x hidden), op (``layer_norm``, ``rms_norm``,
``add_layer_norm``, ``add_rms_norm``), pass (``fwd``, ``fwd+bwd``) and
implementation it records the median time over interleaved repeats (one call
of every implementation per round, so that load on a shared machine hits all
of them alike):

* ``hf_lnorm``: the public functions of ``hf_lnorm.norms.ops`` (Triton custom
  ops on CUDA; on CPU the C++ kernels of ``norms/cpu`` for float32 add+norm in
  inference, i.e. the ``fwd`` pass, and aten for the rest; the JSON's
  ``cpu_kernels`` says which ran and what their output-block cache held;
  ``--cpu-cache-mb`` sets that cache's limit);
* ``hf_lnorm_inplace``: ``add_layer_norm_``, the in-place inference variant
  (``add_layer_norm`` forward only; the sum goes into the residual buffer, so
  one new activation-sized tensor instead of two);
* ``torch``: eager ``x + r`` then ``F.layer_norm`` / ``F.rms_norm``;
* ``naive``: the course's mean/var module written out in torch ops.

It also measures the memory-copy bandwidth of the device in the same run,
and with ``--e2e`` the inference time of a stock vs. patched MiniLM question
answering model. Output: a table on stdout, ``--json PATH``
(``{"device", "copy_gbps", "results": [{"op", "impl", "dtype", "tokens",
"hidden", "pass", "median_ms"}], ...}``) and optionally ``--plot PATH``.

Example:
    hf-lnorm bench norms --device cpu --json runs/bench_norms_cpu.json --e2e
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from .._argtypes import non_negative_float, non_negative_int, positive_int
from .._json import write_json
from .._machine import machine_info, provenance
from ..norms import ops
from ._norms_report import _plot, _table, _targets  # noqa: F401  (re-exported)

OPS = ("layer_norm", "rms_norm", "add_layer_norm", "add_rms_norm")
PASSES = ("fwd", "fwd+bwd")
IMPLS = ("hf_lnorm", "hf_lnorm_inplace", "torch", "naive")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_SHAPES = ((4096, 768), (4096, 1024), (16384, 4096))
EPS = 1e-5


# --------------------------------------------------------------------------- argument parsing


def add_arguments(parser) -> None:
    """Register the options of ``hf-lnorm bench norms``."""
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--json", dest="json_path", default=None, help="write the results as JSON to this path")
    parser.add_argument("--plot", default=None, help="write a bar chart of the speedups (PNG) to this path")
    parser.add_argument("--shapes", default=None, help="tokens x hidden list, e.g. '4096x768,4096x1024,16384x4096'")
    parser.add_argument("--dtypes", default=None, help="comma list of float32,bfloat16,float16 (default: float32 on cpu, float32,bfloat16 on cuda)")
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma list of {', '.join(OPS)}")
    parser.add_argument("--passes", default=",".join(PASSES), help="comma list of fwd, fwd+bwd")
    parser.add_argument("--impls", default=",".join(IMPLS), help=f"comma list of {', '.join(IMPLS)}")
    parser.add_argument("--repeats", type=positive_int, default=15, help="timed rounds per case (fewer for slow cases on CPU)")
    parser.add_argument("--max-bwd-elements", type=non_negative_int, default=None,
                        help="skip fwd+bwd above this many elements (default: 8M on cpu, no limit on cuda)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads for CPU runs")
    parser.add_argument("--cpu-cache-mb", type=non_negative_float, default=None, metavar="MB",
                        help="MiB of idle output blocks the C++ CPU kernels may keep (default: HF_LNORM_CPU_CACHE_MB, "
                             "else hf_lnorm.norms.cpu.DEFAULT_CACHE_MB; 0 keeps none)")
    parser.add_argument("--timing", choices=["eager", "graph"], default="eager",
                        help="cuda only: 'eager' times back-to-back calls (host launch cost included), "
                             "'graph' replays them from a CUDA graph (device time alone)")
    parser.add_argument("--e2e", action="store_true", help="also time stock vs patched MiniLM QA inference")
    parser.add_argument("--e2e-model", default=None, help="model folder or hub id (default: the offline MiniLM)")
    parser.add_argument("--e2e-batch", type=positive_int, default=8)
    parser.add_argument("--e2e-seq", type=positive_int, default=256)
    parser.add_argument("--e2e-repeats", type=positive_int, default=15)


def _usage(msg: str):
    from ..errors import UsageError

    return UsageError(msg)


def _parse_list(text: str, allowed, what: str) -> List[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise _usage(f"--{what}: {', '.join(bad) or repr(text)} not accepted; choose from {', '.join(allowed)}")
    return items


def _parse_shapes(text: Optional[str]) -> List[Tuple[int, int]]:
    if text is None:
        return list(DEFAULT_SHAPES)
    shapes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise _usage(f"--shapes: {item.strip()!r} is not TOKENSxHIDDEN with positive integers (e.g. 4096x768)")
        shapes.append((int(parts[0]), int(parts[1])))
    return shapes


# --------------------------------------------------------------------------- implementations


def _naive_ln(s, w, b):
    mean = s.mean(-1, keepdim=True)
    var = s.var(-1, unbiased=False, keepdim=True)
    return w * (s - mean) / torch.sqrt(var + EPS) + b


def _naive_rms(s, w):
    return w * s / torch.sqrt(s.pow(2).mean(-1, keepdim=True) + EPS)


def _make_fn(op: str, impl: str) -> Optional[Callable]:
    """fn(x, r, w, b) -> output tensor(s) for one (op, impl), or None if not applicable."""
    if impl == "hf_lnorm":
        return {
            "layer_norm": lambda x, r, w, b: ops.layer_norm(x, w, b, EPS),
            "rms_norm": lambda x, r, w, b: ops.rms_norm(x, w, EPS),
            "add_layer_norm": lambda x, r, w, b: ops.add_layer_norm(x, r, w, b, EPS),
            "add_rms_norm": lambda x, r, w, b: ops.add_rms_norm(x, r, w, EPS),
        }[op]
    if impl == "hf_lnorm_inplace":
        return (lambda x, r, w, b: ops.add_layer_norm_(x, r, w, b, EPS)) if op == "add_layer_norm" else None
    if impl == "torch":
        return {
            "layer_norm": lambda x, r, w, b: F.layer_norm(x, (x.shape[-1],), w, b, EPS),
            "rms_norm": lambda x, r, w, b: F.rms_norm(x, (x.shape[-1],), w, EPS),
            "add_layer_norm": lambda x, r, w, b: (lambda s: (F.layer_norm(s, (s.shape[-1],), w, b, EPS), s))(x + r),
            "add_rms_norm": lambda x, r, w, b: (lambda s: (F.rms_norm(s, (s.shape[-1],), w, EPS), s))(x + r),
        }[op]
    return {
        "layer_norm": lambda x, r, w, b: _naive_ln(x, w, b),
        "rms_norm": lambda x, r, w, b: _naive_rms(x, w),
        "add_layer_norm": lambda x, r, w, b: (lambda s: (_naive_ln(s, w, b), s))(x + r),
        "add_rms_norm": lambda x, r, w, b: (lambda s: (_naive_rms(s, w), s))(x + r),
    }[op]


def _cpu_kernels() -> dict:
    """Whether the C++ CPU kernels ran, and their output-block cache counters."""
    from ..norms import cpu

    why = cpu.unavailable_reason()
    if why is not None:
        return {"used": False, "why": why}
    return {"used": True, **cpu.cache_info()}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _input_sets(tokens: int, hidden: int, dtype, device: str) -> int:
    """How many distinct input sets a case cycles through.

    On CUDA the sets together exceed 4x the L2 cache, so every call reads its
    inputs from device memory as it would inside a model (a single set of
    4096x1024 fp32 fits the H100's 50 MB L2 and would time cache bandwidth).
    """
    if device != "cuda":
        return 1
    l2 = getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "L2_cache_size", 64 * 2**20)
    per_set = 2 * tokens * hidden * torch.finfo(dtype).bits // 8  # x and r
    return max(1, min(64, -(-4 * l2 // per_set)))


def _case_runner(op, impl, pass_, tokens, hidden, dtype, device) -> Optional[Callable[[], None]]:
    fn = _make_fn(op, impl)
    if fn is None or (impl == "hf_lnorm_inplace" and pass_ != "fwd"):
        return None
    gen = torch.Generator(device="cpu").manual_seed(tokens + hidden)
    sets = []
    for _ in range(_input_sets(tokens, hidden, dtype, device)):
        x = torch.randn(tokens, hidden, generator=gen).to(device=device, dtype=dtype)
        r = torch.randn(tokens, hidden, generator=gen).to(device=device, dtype=dtype)
        sets.append((x, r))
    w = (torch.rand(hidden, generator=gen) + 0.5).to(device=device, dtype=dtype)
    b = torch.randn(hidden, generator=gen).to(device=device, dtype=dtype)
    turn = [0]

    def next_set():
        turn[0] = (turn[0] + 1) % len(sets)
        return sets[turn[0]]

    if pass_ == "fwd":
        def run():
            x, r = next_set()
            with torch.no_grad():
                fn(x, r, w, b)
        return run
    for x, r in sets:
        x.requires_grad_(True)
        r.requires_grad_(True)
    w.requires_grad_(True)
    b.requires_grad_(True)
    gy = torch.randn(tokens, hidden, generator=gen).to(device=device, dtype=dtype)

    def run_bwd():
        x, r = next_set()
        out = fn(x, r, w, b)
        y = out[0] if isinstance(out, tuple) else out
        torch.autograd.backward([y], [gy])
        for t in (x, r, w, b):
            t.grad = None
    return run_bwd


def _time_interleaved(runners: Dict[str, Callable[[], None]], repeats: int, device: str, budget_s: float,
                      graph: bool = False) -> Dict[str, float]:
    """Median ms per runner; each round calls every runner once, in rotating order."""
    if device == "cuda":
        return _time_cuda(runners, repeats, graph=graph)
    names = list(runners)
    for name in names:  # warm-up (allocator, kernel compilation)
        runners[name]()
    _sync(device)
    t0 = time.perf_counter()
    for name in names:
        runners[name]()
    _sync(device)
    per_round = time.perf_counter() - t0
    rounds = max(3, min(repeats, int(budget_s / max(per_round, 1e-9))))
    times: Dict[str, List[float]] = {n: [] for n in names}
    for i in range(rounds):
        order = names[i % len(names):] + names[: i % len(names)]
        for name in order:
            _sync(device)
            start = time.perf_counter()
            runners[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {n: statistics.median(v) * 1e3 for n, v in times.items()}


def _capture(runner: Callable[[], None], calls: int) -> "torch.cuda.CUDAGraph":
    """A CUDA graph of ``calls`` consecutive calls of ``runner`` (warmed up on a side stream)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            runner()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            runner()
    return graph


def _time_cuda(runners: Dict[str, Callable[[], None]], repeats: int, target_ms: float = 20.0,
               graph: bool = False) -> Dict[str, float]:
    """Median ms per call on CUDA: CUDA events around back-to-back calls, rotating runner order.

    Each sample times ``inner`` consecutive calls (enough for ~``target_ms``),
    so launch latency overlaps with kernel time as it does in a model; the
    runners rotate input sets larger than L2 (see ``_input_sets``). With
    ``graph`` the calls are captured once in a CUDA graph and replayed: device
    time alone, without the host's launch cost (what a captured or compiled
    model sees).
    """
    names = list(runners)
    inner: Dict[str, int] = {}
    for name in names:
        for _ in range(3):  # warm-up: compilation, autotuning, allocator
            runners[name]()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(5):
            runners[name]()
        end.record()
        end.synchronize()
        per_call = max(start.elapsed_time(end) / 5, 1e-3)
        inner[name] = int(max(5, min(200 if graph else 2000, target_ms / per_call)))
    graphs = {name: _capture(runners[name], inner[name]) for name in names} if graph else {}
    times: Dict[str, List[float]] = {n: [] for n in names}
    for i in range(max(3, repeats)):
        order = names[i % len(names):] + names[: i % len(names)]
        for name in order:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            if graph:
                graphs[name].replay()
            else:
                for _ in range(inner[name]):
                    runners[name]()
            end.record()
            end.synchronize()
            times[name].append(start.elapsed_time(end) / inner[name])
    return {n: statistics.median(v) for n, v in times.items()}


def copy_bandwidth_gbps(device: str, nbytes: int = 256 * 2**20, repeats: int = 10) -> float:
    """Device memory-copy bandwidth (read + write bytes per second), median of ``repeats``."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * nbytes / statistics.median(times) / 1e9


# --------------------------------------------------------------------------- end to end


def e2e_minilm(model_path: Optional[str], batch: int, seq: int, repeats: int, device: str) -> Dict[str, float]:
    """Inference time of a stock vs. patched QA model (same weights, same inputs), interleaved.

    A third arm, an unpatched copy of the stock model ("twin"), measures the
    noise floor: on a shared machine two identical models differ by a few
    percent, and ``speedup`` means something only beyond ``twin_ratio``.

    Returns:
        ``{"model", "batch", "seq", "stock_ms", "patched_ms", "twin_ms", "speedup",
        "twin_ratio", "max_abs_diff", "fused_blocks"}``.
    """
    import copy

    from transformers import AutoModelForQuestionAnswering, AutoTokenizer
    from transformers.utils import logging as hf_logging

    import hf_lnorm
    from hf_lnorm.norms.residual import fused_block_names

    if model_path is None:
        from hf_lnorm.loading import bundled_model_path

        model_path = bundled_model_path()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the fresh QA head warning is expected here
    try:
        torch.manual_seed(0)
        stock = AutoModelForQuestionAnswering.from_pretrained(model_path).to(device).eval()
        tok = AutoTokenizer.from_pretrained(model_path)
    finally:
        hf_logging.set_verbosity(verbosity)
    twin = copy.deepcopy(stock)
    patched = hf_lnorm.patch(copy.deepcopy(stock))
    words = ("the norm of every layer keeps activations in range while the model reads the passage " * 64).split()
    question = "what keeps activations in range?"
    context = " ".join(words[: seq])
    enc = tok([question] * batch, [context] * batch, truncation="only_second", max_length=seq,
              padding="max_length", return_tensors="pt").to(device)
    with torch.inference_mode():
        a, b = stock(**enc), patched(**enc)
    diff = max(float((a.start_logits - b.start_logits).abs().max()), float((a.end_logits - b.end_logits).abs().max()))

    def run(model):
        def call():
            with torch.inference_mode():
                model(**enc)
        return call

    ms = _time_interleaved({"stock": run(stock), "patched": run(patched), "twin": run(twin)}, repeats, device, budget_s=180.0)
    return {
        "model": model_path, "batch": batch, "seq": seq, "stock_ms": ms["stock"], "patched_ms": ms["patched"],
        "twin_ms": ms["twin"], "speedup": ms["stock"] / ms["patched"], "twin_ratio": ms["stock"] / ms["twin"],
        "max_abs_diff": diff, "fused_blocks": len(fused_block_names(patched)),
    }


# --------------------------------------------------------------------------- report


# --------------------------------------------------------------------------- entry point


def run(args) -> int:
    """Run the benchmark described by ``args`` (see ``add_arguments``). Returns the exit status."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise _usage("--device cuda: no CUDA device is available here; use --device cpu")
    if args.timing == "graph" and device != "cuda":
        raise _usage(f"--timing graph needs --device cuda, got --device {device}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    shapes = _parse_shapes(args.shapes)
    dtype_names = _parse_list(args.dtypes or ("float32" if device == "cpu" else "float32,bfloat16"), DTYPES, "dtypes")
    op_names = _parse_list(args.ops, OPS, "ops")
    passes = _parse_list(args.passes, PASSES, "passes")
    impls = _parse_list(args.impls, IMPLS, "impls")
    if "torch" not in impls:
        impls.append("torch")  # every ratio is against torch eager
    max_bwd = args.max_bwd_elements if args.max_bwd_elements is not None else (8 * 2**20 if device == "cpu" else None)

    if args.cpu_cache_mb is not None and device == "cpu":
        from ..norms import cpu

        if cpu.is_available():
            cpu.set_cache_limit(int(args.cpu_cache_mb * 2**20))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    copy_gbps = copy_bandwidth_gbps(device)
    results = []
    for tokens, hidden in shapes:
        for dtype_name in dtype_names:
            for op in op_names:
                for pass_ in passes:
                    if pass_ == "fwd+bwd" and max_bwd is not None and tokens * hidden > max_bwd:
                        continue
                    runners = {}
                    for impl in impls:
                        runner = _case_runner(op, impl, pass_, tokens, hidden, DTYPES[dtype_name], device)
                        if runner is not None:
                            runners[impl] = runner
                    budget = 20.0 if device == "cpu" else 5.0
                    timed = _time_interleaved(runners, args.repeats, device, budget, graph=args.timing == "graph")
                    for impl, ms in timed.items():
                        results.append({"op": op, "impl": impl, "dtype": dtype_name, "tokens": tokens,
                                        "hidden": hidden, "pass": pass_, "median_ms": round(ms, 4)})
                    runners.clear()
    payload = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else machine_info()["cpu"],
        "copy_gbps": round(copy_gbps, 2),
        "timing": args.timing if device == "cuda" else "eager",
        "threads": torch.get_num_threads(),
        "load_avg_start": load,
        "load_avg_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "cpu_kernels": _cpu_kernels() if device == "cpu" else None,
        "results": results,
    }
    if args.e2e:
        payload["e2e"] = e2e_minilm(args.e2e_model, args.e2e_batch, args.e2e_seq, args.e2e_repeats, device)
    payload["targets"] = _targets(results, device, copy_gbps)
    payload["provenance"] = provenance()

    print(f"device: {payload['device_name']} ({device}, timing {payload['timing']}), threads {payload['threads']}, copy bandwidth {copy_gbps:.1f} GB/s, "
          f"load average {load} -> {payload['load_avg_end']}")
    print(_table(results))
    if "e2e" in payload:
        e = payload["e2e"]
        print(f"\nMiniLM QA inference (batch {e['batch']} x seq {e['seq']}): stock {e['stock_ms']:.1f} ms, "
              f"patched {e['patched_ms']:.1f} ms, speedup {e['speedup']:.3f}x (noise floor: an unpatched copy runs at "
              f"{e['twin_ratio']:.3f}x), max |logit diff| {e['max_abs_diff']:.2e}, {e['fused_blocks']} residual blocks fused")
    if payload["targets"]:
        print("\ntargets:")
        for t in payload["targets"]:
            print(f"  [{'met' if t['met'] else 'NOT met'}] {t['target']}: {t['case']} -> {t['value']}")
    if args.json_path:
        write_json(args.json_path, payload)
        print(f"\nwrote {args.json_path}")
    if args.plot:
        _plot(args.plot, results)
        print(f"wrote {args.plot}")
    return 0
