"""``hf-lnorm bench compile``: patched against stock models, eager and under ``torch.compile``.

Two workloads, each timed in interleaved rounds (every variant once per round, in turn, so machine
load falls on all of them alike), reported as the median time over rounds; a speedup is the median over
rounds of the two variants' time ratio within a round:

* **QA inference**: the bundled MiniLM QA model (or ``--model``) at each ``--shapes`` batch × sequence:
  stock eager, an unpatched deep copy of it (the *twin*: its ratio to stock is the noise floor of the
  run), ``hf_lnorm.patch``-ed eager, ``torch.compile(stock)`` and ``torch.compile(patched)``.
* **Llama training step** (unless ``--no-train``): a small ``LlamaForCausalLM`` built from a config
  (random weights): forward, loss, backward and an AdamW step, stock (and its twin) and patched, eager
  and compiled.

For every compiled model the benchmark records how many graphs dynamo produced (graph breaks add
graphs), how many hf_lnorm custom ops the graphs contain, and whether the compiled stock and patched
models hand inductor the same graphs (``same_graphs``), which says whether the patched norms reach
inductor as the stock model's own ops, for it to fuse. Outputs are compared with the stock model's (max |diff|).

    hf-lnorm bench compile --threads 2 --json data/results/bench_compile_cpu.json
    hf-lnorm bench compile --shapes 1x128 --rounds 3 --no-train      # a quick look

Numbers depend on the machine and its load; compare rows of one run only.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from typing import Callable, Dict, List, Tuple

from .._argtypes import non_negative_float, positive_int
from .._json import write_json
from .._machine import machine_info, provenance

QA_VARIANTS = ("stock", "twin", "patched", "compiled_stock", "compiled_patched")
TRAIN_VARIANTS = ("stock", "twin", "patched", "compiled_stock", "compiled_patched")


def shape_list(text: str) -> List[Tuple[int, int]]:
    """``"1x128,8x384"`` as ``[(1, 128), (8, 384)]`` (an argparse type: bad text is a usage error naming it)."""
    shapes = []
    for part in text.split(","):
        try:
            batch, seq = (int(b) for b in part.strip().lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not accepted; accepted: BATCHxSEQ with whole numbers, "
                                             "comma-separated (e.g. 1x128,8x384)") from None
        if batch < 1 or seq < 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not accepted: batch and sequence length must be >= 1")
        shapes.append((batch, seq))
    return shapes


def one_shape(text: str) -> Tuple[int, int]:
    """``"8x128"`` as ``(8, 128)`` (an argparse type)."""
    shapes = shape_list(text)
    if len(shapes) != 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not accepted; accepted: one BATCHxSEQ shape")
    return shapes[0]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the benchmark's options."""
    parser.add_argument("--model", default=None,
                        help="QA model folder or Hub id (default: the bundled MiniLM QA model, adapter merged)")
    parser.add_argument("--shapes", type=shape_list, default=shape_list("1x128,8x128,8x384"),
                        help="QA batch x sequence shapes, comma-separated (default 1x128,8x128,8x384)")
    parser.add_argument("--rounds", type=positive_int, default=7, help="interleaved timing rounds (median reported)")
    parser.add_argument("--min-round-s", type=non_negative_float, default=0.3,
                        help="each variant repeats its call until one round takes at least this long")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch intra-op threads")
    parser.add_argument("--no-compile", action="store_true", help="eager rows only")
    parser.add_argument("--no-train", action="store_true", help="skip the Llama training step")
    parser.add_argument("--train-shape", type=one_shape, default=(8, 128), help="Llama training batch x sequence")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")


class _GraphCounter:
    """A ``torch.compile`` backend that counts graphs and hf_lnorm custom ops, then runs inductor."""

    def __init__(self):
        self.graphs = 0
        self.custom_ops = 0
        self.norm_ops: Dict[str, int] = {}
        self.targets: List[List[str]] = []  # each graph's functions, in order

    def __call__(self, gm, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        self.graphs += 1
        self.targets.append([])
        for node in gm.graph.nodes:
            if node.op != "call_function":
                continue
            name = _target_name(node.target)
            self.targets[-1].append(name)
            if "hf_lnorm" in name:
                self.custom_ops += 1
            if "norm" in name:
                self.norm_ops[name] = self.norm_ops.get(name, 0) + 1
        return compile_fx(gm, example_inputs)


def _target_name(target) -> str:
    """A graph node's function as a stable name: ``ns.op.overload`` for ops, ``module.qualname`` otherwise."""
    import torch

    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        return str(target)
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    if name is None:
        return str(target)
    module = getattr(target, "__module__", None)
    return f"{module}.{name}" if module else name


def _graph_info(counters: Dict[str, "_GraphCounter"]) -> Dict:
    """Per compiled variant: graphs, hf_lnorm custom ops, norm functions; and whether the stock and patched
    graphs call the same functions in the same order."""
    info: Dict = {n: {"graphs": c.graphs, "hf_lnorm_custom_ops": c.custom_ops, "norm_ops": c.norm_ops}
                  for n, c in counters.items()}
    if "compiled_stock" in counters and "compiled_patched" in counters:
        info["same_graphs"] = counters["compiled_stock"].targets == counters["compiled_patched"].targets
    return info


def _calibrate(fn: Callable[[], object], min_s: float) -> int:
    start = time.perf_counter()
    fn()
    once = max(time.perf_counter() - start, 1e-6)
    return max(1, int(min_s / once + 0.999))


def _interleaved(fns: Dict[str, Callable[[], object]], rounds: int, min_s: float) -> Dict[str, List[float]]:
    """Milliseconds per call of each function, one list entry per round; rounds alternate the functions."""
    reps = {name: _calibrate(fn, min_s) for name, fn in fns.items()}
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for r in range(rounds):
        order = list(fns) if r % 2 == 0 else list(reversed(list(fns)))
        for name in order:
            fn, n = fns[name], reps[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            times[name].append((time.perf_counter() - start) / n * 1e3)
    return times


def _paired(times: Dict[str, List[float]], num: str, den: str) -> float:
    """The median over rounds of ``num``'s time over ``den``'s in the same round (a speedup of ``den``)."""
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


def _max_diff(a, b) -> float:
    return float((a.float() - b.float()).abs().max())


def _qa_rows(args, torch) -> Tuple[List[Dict], Dict]:
    import hf_lnorm
    from transformers import AutoConfig

    from ..loading import default_qa_model, load_model, resolve_model

    model_ref = args.model
    description = model_ref
    if model_ref is None:
        model_ref, description = default_qa_model()
    resolved = resolve_model(model_ref)
    vocab = AutoConfig.from_pretrained(resolved).vocab_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stock = load_model(model_ref, task="question-answering").eval()
    twin = copy.deepcopy(stock)
    patched = hf_lnorm.patch(copy.deepcopy(stock))
    report = hf_lnorm.patch_report(patched)
    counters: Dict[str, _GraphCounter] = {}
    compiled: Dict[str, Callable] = {}
    if not args.no_compile:
        for name, model in (("compiled_stock", stock), ("compiled_patched", patched)):
            counters[name] = _GraphCounter()
            compiled[name] = torch.compile(model, backend=counters[name], dynamic=False)
    rows = []
    gen = torch.Generator().manual_seed(0)
    for batch, seq in args.shapes:
        ids = torch.randint(1000, vocab, (batch, seq), generator=gen)
        feed = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        models = {"stock": stock, "twin": twin, "patched": patched, **compiled}
        with torch.inference_mode():
            outs = {name: m(**feed).start_logits for name, m in models.items()}  # also compiles, outside the timing
            fns = {name: (lambda m=m: m(**feed)) for name, m in models.items()}
            times = _interleaved(fns, args.rounds, args.min_round_s)
        med = {name: statistics.median(t) for name, t in times.items()}
        row = {"batch": batch, "seq": seq, "median_ms": med, "times_ms": times,
               "max_abs_diff_vs_stock": {n: _max_diff(o, outs["stock"]) for n, o in outs.items() if n != "stock"},
               "speedup": {"patched_vs_stock": _paired(times, "stock", "patched"),
                           "twin_vs_stock": _paired(times, "stock", "twin")}}
        if compiled:
            row["speedup"]["compiled_patched_vs_compiled_stock"] = _paired(times, "compiled_stock", "compiled_patched")
            row["speedup"]["compiled_stock_vs_stock"] = _paired(times, "stock", "compiled_stock")
        rows.append(row)
    info = {"model": description, "patched_norms": report.summary(), "graphs": _graph_info(counters)}
    return rows, info


def _train_rows(args, torch) -> Tuple[List[Dict], Dict]:
    import hf_lnorm
    from transformers import LlamaConfig, LlamaForCausalLM

    batch, seq = args.train_shape
    config = LlamaConfig(vocab_size=4000, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=max(256, seq))
    torch.manual_seed(0)
    base = LlamaForCausalLM(config).train()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, config.vocab_size, (batch, seq), generator=gen)
    counters: Dict[str, _GraphCounter] = {}
    setups = {}
    for name in TRAIN_VARIANTS if not args.no_compile else TRAIN_VARIANTS[:3]:
        model = copy.deepcopy(base)
        if "patched" in name:
            hf_lnorm.patch(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        forward = model
        if name.startswith("compiled"):
            counters[name] = _GraphCounter()
            forward = torch.compile(model, backend=counters[name], dynamic=False)
        setups[name] = (model, forward, opt)

    def step(name):
        _, forward, opt = setups[name]
        loss = forward(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    first_loss = {name: float(step(name)) for name in setups}  # same weights and data: equal first losses
    times = _interleaved({name: (lambda n=name: step(n)) for name in setups}, args.rounds, args.min_round_s)
    med = {name: statistics.median(t) for name, t in times.items()}
    row = {"batch": batch, "seq": seq, "median_ms": med, "times_ms": times, "first_loss": first_loss,
           "speedup": {"patched_vs_stock": _paired(times, "stock", "patched"), "twin_vs_stock": _paired(times, "stock", "twin")}}
    if "compiled_stock" in med:
        row["speedup"]["compiled_patched_vs_compiled_stock"] = _paired(times, "compiled_stock", "compiled_patched")
        row["speedup"]["compiled_stock_vs_stock"] = _paired(times, "stock", "compiled_stock")
    info = {"config": {"hidden_size": 256, "layers": 4, "heads": 4, "intermediate_size": 688, "vocab_size": 4000},
            "graphs": _graph_info(counters)}
    return [row], info


def run_benchmark(args) -> Dict:
    """Time every variant and return the results as a dict (rows, settings, environment, provenance)."""
    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    qa_rows, qa_info = _qa_rows(args, torch)
    train_rows, train_info = ([], {}) if args.no_train else _train_rows(args, torch)
    settings = {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in ("json", "func")}
    return {
        "benchmark": "compile",
        "settings": settings,
        "environment": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "threads": torch.get_num_threads(), "cpu": machine_info()["cpu"]},
        "qa": {"rows": qa_rows, **qa_info},
        "train": {"rows": train_rows, **train_info},
        "provenance": provenance(),
    }


def format_table(result: Dict) -> str:
    """The results as fixed-width text tables."""
    lines = ["QA inference, median ms per call (speedups: stock / variant)"]
    head = f"{'shape':>8} " + " ".join(f"{v:>17}" for v in QA_VARIANTS) + f" {'patched':>8} {'twin':>6} {'compiled':>9}"
    lines.append(head)
    for row in result["qa"]["rows"]:
        med, sp = row["median_ms"], row["speedup"]
        cells = " ".join(f"{med[v]:>17.2f}" if v in med else f"{'-':>17}" for v in QA_VARIANTS)
        comp = sp.get("compiled_patched_vs_compiled_stock")
        lines.append(f"{row['batch']}x{row['seq']:<6} {cells} {sp['patched_vs_stock']:>7.3f}x {sp['twin_vs_stock']:>5.3f}x "
                     + (f"{comp:>8.3f}x" if comp else f"{'-':>9}"))
    for name, g in result["qa"].get("graphs", {}).items():
        if not isinstance(g, dict):
            lines.append(f"  {name}: {g}")
            continue
        lines.append(f"  {name}: {g['graphs']} graph(s), {g['hf_lnorm_custom_ops']} hf_lnorm custom op(s) in them")
    if result["train"]["rows"]:
        row = result["train"]["rows"][0]
        lines.append(f"Llama training step {row['batch']}x{row['seq']}, median ms per step")
        for name, ms in row["median_ms"].items():
            lines.append(f"  {name:<17} {ms:9.2f}   first loss {row['first_loss'][name]:.6f}")
        lines.append("  " + ", ".join(f"{k} {v:.3f}x" for k, v in row["speedup"].items()))
        for name, g in result["train"].get("graphs", {}).items():
            if not isinstance(g, dict):
                lines.append(f"  {name}: {g}")
                continue
            lines.append(f"  {name}: {g['graphs']} graph(s), {g['hf_lnorm_custom_ops']} hf_lnorm custom op(s) in them")
    env = result["environment"]
    lines.append(f"(torch {env['torch']}, transformers {env['transformers']}, {env['threads']} threads, {env['cpu']}; "
                 f"median of {result['settings']['rounds']} interleaved rounds)")
    return "\n".join(lines)


def run(args) -> int:
    """CLI entry point: validate, time, print the tables, optionally write JSON."""
    result = run_benchmark(args)
    print(format_table(result))
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
