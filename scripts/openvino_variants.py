#!/usr/bin/env python
"""Time and evaluate the bundled QA model's OpenVINO variants beside ONNX Runtime and PyTorch.

Variants (``--variants`` picks a subset, comma-separated):

``pytorch-fp32``           the model in PyTorch, eager, fp32
``ort-fp32``               ONNX Runtime on the fused fp32 graph (``hf_lnorm.export.ort.optimize_onnx``)
``ort-int8-per-token``     hf_lnorm's per-token int8 graph for ONNX Runtime (``quantize_per_token_int8``)
``openvino``, ``openvino-f32``, ``openvino-int8-default``, ``openvino-int8``, ``openvino-trimmed``,
``openvino-int8-trimmed``  the six routes of ``hf_lnorm.export.routes.openvino``

``--explore`` adds one int8 variant per knob hf_lnorm can turn on top of Optimum Intel's default configuration
(``openvino-int8-default``), each changing one thing: SmoothQuant alpha chosen on the calibration questions,
SmoothQuant off or at 0.5, preset ``performance``, every calibration question instead of 128, MVN/Softmax kept in
float, the attention MatMuls (Q.K and P.V) kept in float, f32 inference precision, a dynamic-shape compile, the CPU
plugin's denormals optimization, CPU pinning off, and the four MatMuls whose int8 outputs differ most from f32 on the
calibration questions kept in float. These knob variants are compiled for each static input shape (except the
dynamic-shape one); two more run the dynamic-shape model the routes deploy: ``x-unpadded-calibration``, calibrated
on the questions without their padding tokens (each item cut to its real length), and ``x-split-streams``, the
default int8 model on ``--threads`` CPU streams of one thread each, every batch split across them
(``SplitStreamsRunner``). ``x-padding-longest`` runs the default int8 model on each batch cut to its longest row
(``LongestPaddingRunner``): what a user gets who tokenizes with ``padding="longest"`` instead of a fixed length, to
set beside the trimmed routes, which skip the same padding inside the graph.

``--profile N`` also runs each OpenVINO variant N times per shape with the CPU plugin's per-node counters on and
records where the time goes: milliseconds per inference by kind of node (int8 and float matrix products, attention,
the rest by node type), and for the matrix products with a weight the multiply-accumulates per second they reach.

Calibration uses the shipped training-split questions only (``sample_train.json``), encoded at the longest
sequence length as ``hf-lnorm optimize`` does; accuracy (span agreement with
PyTorch fp32, EM/F1 against the gold answers) is measured on the first ``--eval`` questions of ``dev.json`` at the
longest sequence length; with more than 200 questions the report also gives the agreement of each block of 200,
which shows how far 200 questions can move it. Timing: for each shape, ``--rounds`` rounds, each running every variant once in turn
(interleaved, so that load from other processes hits them alike); the median per variant is reported.

Example:
    OMP_NUM_THREADS=2 python scripts/openvino_variants.py --shapes 8x384,1x128 --threads 2 \\
        --json data/results/openvino_variants.json
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

ROUTE_VARIANTS = ("openvino", "openvino-f32", "openvino-int8-default", "openvino-int8", "openvino-trimmed",
                  "openvino-int8-trimmed")
BASE_VARIANTS = ("pytorch-fp32", "ort-fp32", "ort-int8-per-token") + ROUTE_VARIANTS


def parse_shapes(text: str) -> List[Tuple[int, int]]:
    shapes = []
    for part in text.split(","):
        try:
            b, s = part.lower().split("x")
            shapes.append((int(b), int(s)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad shape {part!r}; expected BATCHxSEQ, e.g. 8x384,1x128") from None
    return shapes


def _batched(run, inputs: Dict[str, np.ndarray], batch: int = 8):
    n = next(iter(inputs.values())).shape[0]
    outs = [run({k: v[i : i + batch] for k, v in inputs.items()}) for i in range(0, n, batch)]
    return tuple(np.concatenate([o[j] for o in outs]) for j in range(2))


def unpadded(items: List[Dict[str, np.ndarray]]) -> List[Dict[str, np.ndarray]]:
    """Calibration items cut to their longest real length (right padding dropped), so padding tokens do not enter
    the activation ranges. Items of one row each lose all their padding."""
    out = []
    for item in items:
        n = max(1, int(item["attention_mask"].sum(axis=1).max()))
        out.append({k: np.ascontiguousarray(v[:, :n]) for k, v in item.items()})
    return out


def block_agreement(spans, ref_spans, block: int = 200) -> List[float]:
    """Span agreement of each consecutive block of ``block`` questions (a last, shorter block is dropped)."""
    from hf_lnorm.export.qa import span_agreement

    return [round(span_agreement(spans[i : i + block], ref_spans[i : i + block]), 4)
            for i in range(0, len(spans) - block + 1, block)]


class SplitStreamsRunner:
    """An OpenVINO model compiled for ``streams`` CPU streams of one thread each; a batch is split into ``streams``
    parts of consecutive rows, run at once on one infer request per stream, and the outputs joined in order.

    Args:
        model (openvino.Model): the model (dynamic shapes: every part may have its own batch size).
        output_names: the outputs to return, in order.
        streams: streams, and threads in all.
        precision: ``INFERENCE_PRECISION_HINT`` (``"f32"``, ``"bf16"``); None: the plugin's default.
    """

    def __init__(self, model, output_names, streams: int = 2, precision: Optional[str] = None):
        import openvino as ov

        self.streams = int(streams)
        self.config = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": str(self.streams),
                       "INFERENCE_NUM_THREADS": str(self.streams)}
        if precision:
            self.config["INFERENCE_PRECISION_HINT"] = precision
        self.compiled = ov.Core().compile_model(model, "CPU", self.config)
        self.input_names = [p.get_any_name() for p in model.inputs]
        self.ports = [self.compiled.output(n) for n in output_names]
        self.requests = [self.compiled.create_infer_request() for _ in range(self.streams)]
        self.parts_run = 0  # infer requests started so far (tests read it)

    def __call__(self, feed: Dict[str, np.ndarray]):
        rows = feed[self.input_names[0]].shape[0]
        parts = np.array_split(np.arange(rows), min(self.streams, rows))  # none empty: at most one part per row
        used = self.requests[: len(parts)]
        for request, idx in zip(used, parts):
            request.start_async({n: np.ascontiguousarray(feed[n][idx[0] : idx[-1] + 1]) for n in self.input_names})
        for request in used:
            request.wait()
        self.parts_run += len(used)
        return tuple(np.concatenate([np.array(r.get_tensor(p).data, dtype=np.float32, copy=True) for r in used])
                     for p in self.ports)


class LongestPaddingRunner:
    """Runs ``run`` on the feed cut to the batch's longest row (by ``attention_mask``) and pads the outputs back
    with ``fill``: dynamic padding done before the call, as a tokenizer's ``padding="longest"`` would.

    Attributes:
        lengths: the sequence length of each call (for the tests).
    """

    def __init__(self, run, fill: Optional[float] = None):
        from hf_lnorm.export.openvino import PAD_FILL

        self.run, self.fill, self.lengths = run, PAD_FILL if fill is None else fill, []

    def __call__(self, feed: Dict[str, np.ndarray]):
        seq = feed["attention_mask"].shape[1]
        real = np.flatnonzero(feed["attention_mask"].any(axis=0))
        keep = int(real[-1]) + 1 if real.size else 1
        self.lengths.append(keep)
        outs = self.run({k: np.ascontiguousarray(v[:, :keep]) for k, v in feed.items()})
        return tuple(np.pad(o, [(0, 0), (0, seq - keep)] + [(0, 0)] * (o.ndim - 2), constant_values=self.fill)
                     for o in outs)


def sensitive_matmuls(fp_model, int8_config, items, output_names, threads: int, top: int) -> List[Tuple[str, float]]:
    """The ``top`` weighted MatMuls whose outputs differ most between int8 and f32, on calibration items.

    The error of a node is its mean |int8 - f32| output relative to the mean |f32| output, summed over 16
    calibration items; it includes the error carried in from earlier nodes.
    """
    import openvino as ov

    from hf_lnorm.export.openvino import quantize_int8

    q = quantize_int8(fp_model, items, int8_config)
    names = [op.get_friendly_name() for op in fp_model.get_ordered_ops()
             if op.get_type_name() == "MatMul" and any(i.get_source_output().get_node().get_type_name() in ("Constant", "Convert")
                                                     for i in op.inputs())]
    qnames = {op.get_friendly_name() for op in q.get_ordered_ops()}
    names = [n for n in names if n in qnames]

    def with_outputs(model):
        m = model.clone()
        ops = {op.get_friendly_name(): op for op in m.get_ordered_ops()}
        m.add_outputs([ops[n].output(0) for n in names])
        return m

    fp_all, q_all = with_outputs(fp_model), with_outputs(q)
    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": str(threads)}
    cf, cq = core.compile_model(fp_all, "CPU", cfg), core.compile_model(q_all, "CPU", cfg)
    errs = {n: 0.0 for n in names}
    for item in items[:16]:
        feed = {p.get_any_name(): item[p.get_any_name()] for p in fp_model.inputs}
        rf, rq = cf(feed), cq(feed)
        for k, n in enumerate(names):
            a, b = rf[cf.outputs[len(output_names) + k]], rq[cq.outputs[len(output_names) + k]]
            errs[n] += float(np.abs(a - b).mean() / (np.abs(a).mean() + 1e-6))
    return sorted(errs.items(), key=lambda kv: -kv[1])[:top]


def _node_kind(node_type: str, exec_type: str) -> str:
    if node_type.startswith("FullyConnected") or node_type == "MatMul":
        precision = "int8" if ("I8" in exec_type.upper() or "U8" in exec_type.upper()) else "float"
        return f"{precision} {'weight' if node_type.startswith('FullyConnected') else 'activation'} matmul"
    if node_type in ("ScaledDotProductAttention", "ScaledAttn", "SDPA"):
        return "attention (fused)"
    return node_type


def profile(run, feed: Dict[str, np.ndarray], repeats: int) -> Dict[str, object]:
    """Per-node CPU plugin counters of an ``OpenVINORunner``'s model on ``feed``, summed by kind, per inference."""
    import openvino as ov

    model = run.model.clone()
    if run.static:
        model.reshape({n: list(feed[n].shape) for n in run.input_names})
    compiled = ov.Core().compile_model(model, "CPU", {**run.config, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    # multiply-accumulates of each weighted matmul (FullyConnected: input [..., K] over every token, weight [N, K])
    tokens = int(np.prod(feed[run.input_names[0]].shape))
    macs: Dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        shapes = [i.get_partial_shape() for i in op.inputs()]
        if (op.get_rt_info()["layerType"].astype(str).startswith("FullyConnected") and len(shapes) >= 2
                and shapes[1].is_static and len(shapes[1].to_shape()) == 2):
            macs[op.get_friendly_name()] = tokens * int(np.prod(shapes[1].to_shape()))
    feed = {n: np.ascontiguousarray(feed[n]) for n in run.input_names}
    request.infer(feed)  # warm-up
    by_kind: Dict[str, float] = {}
    exec_types: Dict[str, set] = {}
    gemm_s = 0.0
    for _ in range(repeats):
        request.infer(feed)
        for info in request.profiling_info:
            if info.status != info.Status.EXECUTED:
                continue
            k = _node_kind(info.node_type, info.exec_type)
            sec = info.real_time.total_seconds()
            by_kind[k] = by_kind.get(k, 0.0) + sec
            exec_types.setdefault(k, set()).add(info.exec_type)
            if info.node_name in macs:
                gemm_s += sec
    total = sum(by_kind.values())
    weighted_macs = sum(macs.values())
    return {"ms_per_inference": round(total * 1000.0 / repeats, 2),
            "by_kind_ms": {k: round(v * 1000.0 / repeats, 2) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
            "exec_types": {k: sorted(v) for k, v in exec_types.items()},
            "weight_matmul_macs": weighted_macs,
            "weight_matmul_gmac_per_s": float(f"{weighted_macs * repeats / gemm_s / 1e9:.3g}") if gemm_s else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", type=parse_shapes, default=parse_shapes("8x384,1x128"), help="BATCHxSEQ cells (default 8x384,1x128)")
    parser.add_argument("--threads", type=int, default=2, help="threads for every runtime (default 2)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds per shape (default 10)")
    parser.add_argument("--eval", type=int, default=200, help="dev questions to evaluate (default 200)")
    parser.add_argument("--calibration", type=int, default=160, help="training questions to calibrate on (default 160: all)")
    parser.add_argument("--variants", default=",".join(BASE_VARIANTS), help="comma-separated variants (default: all)")
    parser.add_argument("--explore", action="store_true", help="add one int8 variant per knob (see the module docstring)")
    parser.add_argument("--knobs", default=None,
                        help="with --explore: comma-separated knob variants (default: every single knob, x-...)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile each OpenVINO variant, N inferences per shape (default 0: off)")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    import hf_lnorm
    from hf_lnorm._json import write_json
    from hf_lnorm._machine import machine_info, provenance
    from hf_lnorm.export import export
    from hf_lnorm.export.optimize import _load
    from hf_lnorm.export.qa import best_spans, encode, exact_match_f1, load_squad, span_agreement, span_texts
    from hf_lnorm.export.routes import RouteContext
    from hf_lnorm.export.routes import openvino as ov_routes
    from hf_lnorm.loading import default_qa_model
    from hf_lnorm.resources import QA_CALIBRATION_FILE, QA_EVAL_FILE, data_file

    wanted = [v for v in args.variants.split(",") if v]
    unknown = [v for v in wanted if v not in BASE_VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}; accepted: {', '.join(BASE_VARIANTS)}")
    source, description = default_qa_model()
    model, tokenizer = _load(source, 0)
    stock = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf_lnorm.patch(model)
    eval_seq = max(s for _, s in args.shapes)
    examples = load_squad(data_file(*QA_EVAL_FILE), limit=args.eval)
    calib_examples = load_squad(data_file(*QA_CALIBRATION_FILE), limit=args.calibration)
    enc = encode(tokenizer, examples, eval_seq)
    calib = encode(tokenizer, calib_examples, eval_seq)  # as hf-lnorm optimize calibrates: at the longest length
    calibration = [{k: v[i : i + 8] for k, v in calib.inputs.items()} for i in range(0, len(calib_examples), 8)]
    work = Path(tempfile.mkdtemp(prefix="openvino_variants_"))
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)  # noqa: E731

    log("exporting ONNX")
    result = export(model, work / "onnx", task="question-answering")
    plain = work / "onnx" / "model.onnx"
    ctx = RouteContext(model=model, tokenizer=tokenizer, task="question-answering",
                       output_names=("start_logits", "end_logits"), workdir=work, threads=args.threads,
                       calibration=calibration, shapes=args.shapes, onnx_path=plain)

    runners: Dict[str, Callable] = {}
    info: Dict[str, Dict] = {}
    build_s: Dict[str, float] = {}

    def torch_runner(m):
        def run(feed):
            with torch.inference_mode():
                out = m(**{k: torch.from_numpy(v) for k, v in feed.items()}, return_dict=True)
            return out.start_logits.float().numpy(), out.end_logits.float().numpy()
        return run

    def ort_runner(path):
        from hf_lnorm.export.ort import feed_for, session

        sess = session(path, args.threads)
        names = [o.name for o in sess.get_outputs()]
        idx = (names.index("start_logits"), names.index("end_logits"))
        return lambda feed: tuple(sess.run(None, feed_for(sess, feed))[i] for i in idx)

    if "pytorch-fp32" in wanted:
        runners["pytorch-fp32"] = torch_runner(stock)
    if "ort-fp32" in wanted or "ort-int8-per-token" in wanted:
        from hf_lnorm.export.ort import optimize_onnx, ort_model_type, quantize_per_token_int8, unfuse_skip_layer_norm

        fused = work / "model_optimized.onnx"
        optimize_onnx(plain, fused, model.config, ort_model_type(model.config.model_type))
        unfuse_skip_layer_norm(fused, fused)
        if "ort-fp32" in wanted:
            runners["ort-fp32"] = ort_runner(fused)
        if "ort-int8-per-token" in wanted:
            quantize_per_token_int8(fused, work / "per_token.onnx", attention="per-token")
            runners["ort-int8-per-token"] = ort_runner(work / "per_token.onnx")
    for route in ov_routes.ROUTES:
        if route.name in wanted:
            log(f"building {route.name}")
            t0 = time.perf_counter()
            built = route.build(ctx)
            build_s[route.name] = round(time.perf_counter() - t0, 1)
            runners[route.name] = built.runner
            info[route.name] = built.info

    if args.explore:
        from dataclasses import replace

        from hf_lnorm.export.openvino import Int8Config, OpenVINORunner, calibration_items, convert_onnx, quantize_int8

        fp = convert_onnx(plain)
        items = calibration_items(calibration)
        base = Int8Config()
        log("building x-default-q (Optimum Intel's default int8, shared by the compile-option variants)")
        default_q = quantize_int8(fp, items, base)
        # each knob: (NNCF config or None for default_q, inference precision, static shapes, extra CPU options)
        attention = [op.get_friendly_name() for op in fp.get_ordered_ops() if op.get_type_name() == "MatMul"
                     and not any(i.get_source_output().get_node().get_type_name() in ("Constant", "Convert") for i in op.inputs())]
        knobs = {
            "x-alpha-off": (replace(base, smooth_quant_alpha=-1), "default", True, None),
            "x-alpha-0.5": (replace(base, smooth_quant_alpha=0.5), "default", True, None),
            "x-performance": (replace(base, preset="performance"), "default", True, None),
            "x-all-calibration": (replace(base, subset_size=len(items)), "default", True, None),
            "x-float-mvn-softmax": (replace(base, ignored_types=["MVN", "Softmax"]), "default", True, None),
            "x-float-attention": (replace(base, ignored_names=attention), "default", True, None),
            "x-f32-precision": (None, "f32", True, None),
            "x-dynamic-shape": (None, "default", False, None),
            "x-denormals-ftz": (None, "default", True, {"CPU_DENORMALS_OPTIMIZATION": True}),
            "x-no-pinning": (None, "default", True, {"ENABLE_CPU_PINNING": False}),
            # combinations of the single knobs (pick them with --knobs)
            "c-performance+float-attention": (replace(base, preset="performance", ignored_names=attention), "default", True, None),
            "c-performance+float-attention+f32": (replace(base, preset="performance", ignored_names=attention), "f32", True, None),
            "c-performance+f32": (replace(base, preset="performance"), "f32", True, None),
            "c-float-attention+f32": (replace(base, ignored_names=attention), "f32", True, None),
        }
        chosen = [k for k in args.knobs.split(",") if k] if args.knobs else [k for k in knobs if k.startswith("x-")]
        special = ("x-skip-4-sensitive", "x-unpadded-calibration", "x-split-streams", "x-padding-longest")
        unknown = [k for k in chosen if k not in knobs and k not in special]
        if unknown:
            parser.error(f"unknown knob {unknown[0]!r}; accepted: {', '.join([*knobs, *special])}")
        knobs = {k: v for k, v in knobs.items() if k in chosen}
        for name, (cfg, precision, static, extra) in knobs.items():
            log(f"building {name}")
            t0 = time.perf_counter()
            q = default_q if cfg is None else quantize_int8(fp, items, cfg)
            runners[name] = OpenVINORunner(q, ctx.output_names, threads=args.threads, precision=precision,
                                           static=static, extra_config=extra)
            build_s[name] = round(time.perf_counter() - t0, 1)
            info[name] = {"quantization": (cfg or base).to_dict(), "precision": runners[name].config["INFERENCE_PRECISION_HINT"],
                          "static_shapes": static, "extra_config": extra}
    if args.explore and "x-skip-4-sensitive" in chosen:
        log("ranking MatMul sensitivity on calibration data")
        ranked = sensitive_matmuls(fp, base, items, ctx.output_names, args.threads, top=4)
        cfg = replace(base, ignored_names=[n for n, _ in ranked])
        runners["x-skip-4-sensitive"] = OpenVINORunner(quantize_int8(fp, items, cfg), ctx.output_names, threads=args.threads)
        info["x-skip-4-sensitive"] = {"quantization": cfg.to_dict(), "sensitivity": ranked}
    if args.explore and "x-unpadded-calibration" in chosen:
        log("building x-unpadded-calibration")
        runners["x-unpadded-calibration"] = OpenVINORunner(quantize_int8(fp, unpadded(items), base), ctx.output_names,
                                                           threads=args.threads, static=False)
        info["x-unpadded-calibration"] = {"quantization": base.to_dict(), "calibration": "padding tokens dropped",
                                          "static_shapes": False}
    if args.explore and "x-split-streams" in chosen:
        runners["x-split-streams"] = SplitStreamsRunner(default_q, ctx.output_names, streams=args.threads)
        info["x-split-streams"] = {"quantization": base.to_dict(), "compile_config": runners["x-split-streams"].config,
                                   "static_shapes": False}

    if args.explore and "x-padding-longest" in chosen:
        runners["x-padding-longest"] = LongestPaddingRunner(OpenVINORunner(default_q, ctx.output_names,
                                                                           threads=args.threads, static=False))
        info["x-padding-longest"] = {"quantization": base.to_dict(), "static_shapes": False,
                                     "inputs": "each batch cut to its longest row before the call"}

    log("evaluating")
    ref = _batched(runners.get("pytorch-fp32") or torch_runner(stock), enc.inputs)
    ref_spans = best_spans(*ref, enc)
    mask = enc.inputs["attention_mask"].astype(bool)
    quality = {}
    for name, run in runners.items():
        st, en = _batched(run, enc.inputs)
        spans = best_spans(st, en, enc)
        em, f1 = exact_match_f1(span_texts(spans, enc), examples)
        err = float(max(np.abs(st - ref[0])[mask].max(), np.abs(en - ref[1])[mask].max()))
        quality[name] = {"span_agreement": round(span_agreement(spans, ref_spans), 4), "em": em, "f1": f1,
                         "max_abs_err": err}
        if len(spans) > 200:
            quality[name]["span_agreement_per_200"] = block_agreement(spans, ref_spans)

    rows = []
    real_tokens: Dict[str, List[int]] = {}  # real (unpadded) tokens per row of each timing batch
    for b, s in args.shapes:
        log(f"timing {b}x{s}")
        data = enc.inputs if s == eval_seq else encode(tokenizer, examples, s).inputs
        idx = np.arange(b) % data["input_ids"].shape[0]
        feed = {k: np.ascontiguousarray(v[idx]) for k, v in data.items()}
        real_tokens[f"{b}x{s}"] = feed["attention_mask"].sum(axis=1).astype(int).tolist()
        inner = max(1, int(round(8 * 384 / (b * s) / 4)))  # a few runs per sample at small shapes
        for run in runners.values():
            run(feed)  # compile the static shape, warm up
        times: Dict[str, List[float]] = {n: [] for n in runners}
        for _ in range(args.rounds):
            for name, run in runners.items():
                time.sleep(0.05)
                t0 = time.perf_counter()
                for _ in range(inner):
                    run(feed)
                times[name].append((time.perf_counter() - t0) * 1000.0 / inner)
        for name in runners:
            rows.append({"variant": name, "batch": b, "seq": s, "median_ms": round(statistics.median(times[name]), 3),
                         "min_ms": round(min(times[name]), 3), **quality[name]})

    profiles: Dict[str, Dict[str, object]] = {}
    if args.profile:
        from hf_lnorm.export.openvino import OpenVINORunner

        for b, s in args.shapes:
            data = enc.inputs if s == eval_seq else encode(tokenizer, examples, s).inputs
            idx = np.arange(b) % data["input_ids"].shape[0]
            feed = {k: np.ascontiguousarray(v[idx]) for k, v in data.items()}
            for name, run in runners.items():
                if isinstance(run, OpenVINORunner):
                    log(f"profiling {name} at {b}x{s}")
                    profiles[f"{name} {b}x{s}"] = profile(run, feed, args.profile)

    head = f"{'variant':24s} {'shape':>7s} {'median ms':>10s} {'min ms':>8s} {'agree':>6s} {'EM':>6s} {'F1':>6s}"
    print(head)
    for r in rows:
        print(f"{r['variant']:24s} {r['batch']}x{r['seq']:<5d} {r['median_ms']:10.2f} {r['min_ms']:8.2f} "
              f"{r['span_agreement']:6.3f} {r['em']:6.1f} {r['f1']:6.1f}"
              + (f"  per 200: {', '.join(f'{a:.3f}' for a in r['span_agreement_per_200'])}" if "span_agreement_per_200" in r else ""))
    for b, s in args.shapes:
        base_ms = next((r["median_ms"] for r in rows if r["variant"] == "openvino-int8-default" and (r["batch"], r["seq"]) == (b, s)), None)
        if base_ms:
            print(f"{b}x{s} speed vs openvino-int8-default: " + ", ".join(
                f"{r['variant']} {base_ms / r['median_ms']:.2f}x" for r in rows if (r["batch"], r["seq"]) == (b, s)))
    for key, prof in profiles.items():
        parts = ", ".join(f"{k} {v:.1f}" for k, v in list(prof["by_kind_ms"].items())[:6])
        print(f"profile {key}: {prof['ms_per_inference']:.1f} ms ({parts}); weight matmuls "
              f"{prof['weight_matmul_macs'] / 1e9:.2f} GMAC at {prof['weight_matmul_gmac_per_s']} GMAC/s")
    if args.json:
        write_json(args.json, {"model": description, "profiles": profiles, "export_method": result.method, "threads": args.threads,
                               "rounds": args.rounds, "questions": len(examples), "calibration_questions": len(calib_examples),
                               "eval_seq": eval_seq, "timing_real_tokens": real_tokens, "rows": rows, "info": info, "build_s": build_s,
                               "machine": machine_info(), "provenance": provenance()})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
