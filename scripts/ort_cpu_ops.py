#!/usr/bin/env python
"""Time single ONNX Runtime CPU ops at MiniLM's QA shapes: the evidence behind the main job's ORT choices.

Each row is a one-node (or few-node) graph run in its own ``InferenceSession``
(all graph optimizations on, ``--threads`` intra-op threads), timed round-robin
with the other rows of its group so that machine load hits them alike.

Groups (tokens = batch x seq, default 8 x 384 = 3072; hidden 384, FFN 1536, 12 heads):

``skip_layer_norm``  ORT's fused ``SkipLayerNormalization`` (with bias) against the
                     ``Add`` + ``Add`` + ``LayerNormalization`` that
                     ``hf_lnorm.export.ort.unfuse_skip_layer_norm`` writes, and
                     ``LayerNormalization`` alone.
``ffn_gemms``        tokens x 384 @ 384 x 1536 @ 1536 x 384 (an FFN without its
                     activation): fp32 ``MatMul``; ORT's dynamic int8
                     (``DynamicQuantizeMatMul``, one activation scale per tensor); the
                     per-token int8 graph of ``quantize_per_token_int8`` (one scale per
                     row, u8 x s8).
``int8_gemm_signedness``  one tokens x 384 @ 384 x 1536 ``MatMulIntegerToFloat`` with
                     unsigned (u8 x s8) and signed (s8 x s8) activation codes: ORT
                     runs s8 x s8 on a slow generic path, hence the u8 codes.
``attention``        12-head attention over 3 x (tokens x 384): ``MultiHeadAttention``
                     with and without bias and key-padding mask.

Example:
    python scripts/ort_cpu_ops.py --threads 2 --json data/results/ort_cpu_ops.json
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from hf_lnorm._json import write_json  # noqa: E402
from hf_lnorm.export.ort import quantize_dynamic_int8, quantize_per_token_int8  # noqa: E402


def _model(nodes, inputs, inits, outputs=("y",)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])


def _session(model_or_path, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(src, options, providers=["CPUExecutionProvider"])


def _time_group(cases, repeats, warmup):
    """Median ms per case, the cases run round-robin."""
    for _ in range(warmup):
        for _, run in cases:
            run()
    times = {name: [] for name, _ in cases}
    for _ in range(repeats):
        for name, run in cases:
            t0 = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=3072, help="rows (batch x seq; default 3072 = 8 x 384)")
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--ffn", type=int, default=1536)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8, help="batch of the attention case (tokens / batch = sequence)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--json", default=None, metavar="PATH")
    args = parser.parse_args(argv)
    for name in ("tokens", "hidden", "ffn", "heads", "batch", "threads", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.tokens % args.batch or args.hidden % args.heads:
        parser.error(f"--tokens ({args.tokens}) must divide by --batch ({args.batch}) and --hidden ({args.hidden}) by --heads ({args.heads})")

    logging.getLogger().setLevel(logging.ERROR)  # ORT's quantizer gives pre-processing advice on the root logger
    rng = np.random.default_rng(0)
    m, d, f = args.tokens, args.hidden, args.ffn
    rows = []

    def record(group, shape, medians):
        for impl, ms in medians.items():
            rows.append({"op": group, "impl": impl, "shape": shape, "median_ms": round(ms, 3)})

    # --- residual add + LayerNorm
    x, r = (rng.standard_normal((m, d)).astype(np.float32) for _ in range(2))
    gamma, beta, bias = (numpy_helper.from_array(rng.standard_normal(d).astype(np.float32), n) for n in ("g", "b", "bias"))
    two = [("x", TensorProto.FLOAT, [m, d]), ("r", TensorProto.FLOAT, [m, d])]
    feed = {"x": x, "r": r}
    variants = {
        "SkipLayerNormalization": [helper.make_node("SkipLayerNormalization", ["x", "r", "g", "b", "bias"], ["y"],
                                                    domain="com.microsoft", epsilon=1e-12)],
        "Add+Add+LayerNormalization": [helper.make_node("Add", ["x", "r"], ["s0"]), helper.make_node("Add", ["s0", "bias"], ["s"]),
                                       helper.make_node("LayerNormalization", ["s", "g", "b"], ["y"], axis=-1, epsilon=1e-12)],
        "LayerNormalization alone": [helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-12)],
    }
    sessions = {k: _session(_model(v, two, [gamma, beta, bias]), args.threads) for k, v in variants.items()}
    record("skip_layer_norm", [m, d], _time_group([(k, lambda s=s: s.run(None, feed)) for k, s in sessions.items()],
                                                  args.repeats, args.warmup))

    # --- FFN-shaped GEMM pair m x d @ d x f @ f x d (the second reads the first's output, as in a model)
    w1 = (rng.standard_normal((d, f)) / np.sqrt(d)).astype(np.float32)
    w2 = (rng.standard_normal((f, d)) / np.sqrt(f)).astype(np.float32)
    xa = rng.standard_normal((1, m, d)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        plain = os.path.join(tmp, "ffn.onnx")
        onnx.save(_model([helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"), helper.make_node("MatMul", ["h", "w2"], ["y"], name="mm2")],
                         [("x", TensorProto.FLOAT, [1, m, d])], [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]), plain)
        quantize_dynamic_int8(plain, os.path.join(tmp, "dyn.onnx"))
        quantize_per_token_int8(plain, os.path.join(tmp, "token.onnx"))
        cases = [("fp32 MatMul", plain), ("ORT dynamic int8 (per-tensor)", os.path.join(tmp, "dyn.onnx")),
                 ("hf_lnorm per-token int8 (u8 x s8)", os.path.join(tmp, "token.onnx"))]
        runs = [(name, lambda s=_session(p, args.threads): s.run(None, {"x": xa})) for name, p in cases]
        record("ffn_gemms", [m, d, f], _time_group(runs, args.repeats, args.warmup))

    # --- one int8 GEMM, unsigned vs signed activation codes
    w_scale = (np.abs(w1).max(axis=0) / 127).astype(np.float32)
    w_q = np.clip(np.round(w1 / w_scale), -127, 127).astype(np.int8)
    codes = rng.integers(-127, 128, (m, d), dtype=np.int8)
    runs = []
    for name, dtype, data, zero in (("MatMulIntegerToFloat u8 x s8", TensorProto.UINT8, (codes.astype(np.int16) + 128).astype(np.uint8), 128),
                                    ("MatMulIntegerToFloat s8 x s8", TensorProto.INT8, codes, 0)):
        zp = numpy_helper.from_array(np.array(zero, np.uint8 if dtype == TensorProto.UINT8 else np.int8), "zp")
        model = _model([helper.make_node("MatMulIntegerToFloat", ["xq", "wq", "one", "ws", "zp"], ["y"], domain="com.microsoft")],
                       [("xq", dtype, [m, d])], [numpy_helper.from_array(w_q, "wq"), numpy_helper.from_array(w_scale, "ws"),
                                                 numpy_helper.from_array(np.array(1.0, np.float32), "one"), zp])
        runs.append((name, lambda s=_session(model, args.threads), x=data: s.run(None, {"xq": x})))
    record("int8_gemm_signedness", [m, d, f], _time_group(runs, args.repeats, args.warmup))

    # --- attention
    seq = m // args.batch
    q, k, v = (rng.standard_normal((args.batch, seq, d)).astype(np.float32) for _ in range(3))
    lengths = np.full(args.batch, seq, np.int32)
    three = [(n, TensorProto.FLOAT, [args.batch, seq, d]) for n in "qkv"]
    mha_bias = numpy_helper.from_array(rng.standard_normal(3 * d).astype(np.float32), "mha_bias")
    with_all = _model([helper.make_node("MultiHeadAttention", ["q", "k", "v", "mha_bias", "len"], ["y"], domain="com.microsoft",
                                        num_heads=args.heads)], three + [("len", TensorProto.INT32, [args.batch])], [mha_bias])
    bare = _model([helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft", num_heads=args.heads)],
                  three, [])
    runs = [("MultiHeadAttention + bias + mask", lambda s=_session(with_all, args.threads): s.run(None, {"q": q, "k": k, "v": v, "len": lengths})),
            ("MultiHeadAttention", lambda s=_session(bare, args.threads): s.run(None, {"q": q, "k": k, "v": v}))]
    record("attention", [args.batch, seq, d, args.heads], _time_group(runs, args.repeats, args.warmup))

    print(f"ONNX Runtime {ort.__version__}, {args.threads} thread(s), median of {args.repeats}")
    width = max(len(r["impl"]) for r in rows)
    for group in dict.fromkeys(r["op"] for r in rows):
        print(f"{group} {next(r['shape'] for r in rows if r['op'] == group)}")
        for r in (r for r in rows if r["op"] == group):
            print(f"  {r['impl']:<{width}}  {r['median_ms']:9.2f} ms")
    if args.json:
        write_json(args.json, {"onnxruntime": ort.__version__, "threads": args.threads, "repeats": args.repeats,
                               "machine": platform.processor() or platform.machine(), "rows": rows,
                               "command": "python scripts/ort_cpu_ops.py " + " ".join(argv if argv is not None else sys.argv[1:])})
    return 0


if __name__ == "__main__":
    sys.exit(main())
