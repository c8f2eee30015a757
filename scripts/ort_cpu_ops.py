#!/usr/bin/env python
"""Time single ONNX Runtime CPU ops at MiniLM's QA shapes: the evidence behind the main job's ORT choices.

Each row is a one-node (or few-node) graph run in its own ``InferenceSession``
(all graph optimizations on, ``--threads`` intra-op threads, worker spinning off),
timed round-robin with the other rows of its group so that machine load hits them
alike. Spinning is off because ORT's idle workers keep spinning after a run and
take the cores from the next session (group ``session_switching``).

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
                     with bias and key-padding mask; with bias and the mask folded into
                     one extra Q/K channel per head (``quantize_per_token_int8``,
                     ``attention="per-token"``); bare; and an int8 attention core
                     built from standard ops (``MatMulInteger`` for Q.K and P.V).
``session_switching``  the bare ``MultiHeadAttention`` run back to back in one session
                     with ORT's default worker spinning, and alternating between two
                     sessions with spinning on and off: why the other groups turn it off.

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
from hf_lnorm._machine import provenance  # noqa: E402
from hf_lnorm.export.ort import quantize_dynamic_int8, quantize_per_token_int8, weight_qmax  # noqa: E402


def _model(nodes, inputs, inits, outputs=("y",)):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])


def _session(model_or_path, threads, spinning=False):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    # no spinning by default: the rows are timed round-robin over sessions, and an idle session's spinning
    # workers would take the cores from the one being timed (the session_switching group measures this)
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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


def _int8_attention_consts(batch, seq, heads, size, qmax=127):
    return [numpy_helper.from_array(v, k) for k, v in {
        "inv_signed": np.array(1 / qmax, np.float32),  # K and V codes: 63 where u8 x s8 saturates (weight_qmax)
        "heads_shape": np.array([batch, seq, heads, size], np.int64), "out_shape": np.array([batch, seq, heads * size], np.int64),
        "last": np.array([-1], np.int64), "second_last": np.array([-2], np.int64), "inv127": np.array(1 / 127, np.float32),
        "inv255": np.array(1 / 255, np.float32), "tiny": np.array(1e-12, np.float32), "c128": np.array(128, np.float32),
        "zp_u8": np.array(128, np.uint8), "zero_u8": np.array(0, np.uint8), "zero_s8": np.array(0, np.int8),
        "score_scale": np.array(1 / np.sqrt(size), np.float32)}.items()]


def _int8_attention_nodes(batch, seq, heads, size):
    """Attention with int8 products from standard ops: Q per row (u8, zero point 128) and K per key (s8) into
    ``MatMulInteger``, fp32 softmax, P per row (u8, scale max/255) and V per channel (s8) into ``MatMulInteger``.
    The candidate for an int8 attention core on ORT's CPU provider: every step over the score tensor is a pass."""
    n = helper.make_node

    def sym(x, axes, signed):  # symmetric codes of x over ``axes``: (codes, scale)
        nodes = [n("ReduceMax", [x, axes], [x + "_hi"]), n("ReduceMin", [x, axes], [x + "_lo"]), n("Neg", [x + "_lo"], [x + "_nlo"]),
                 n("Max", [x + "_hi", x + "_nlo", "tiny"], [x + "_am"]),
                 n("Mul", [x + "_am", "inv_signed" if signed else "inv127"], [x + "_s"]),
                 n("Div", [x, x + "_s"], [x + "_d"]), n("Round", [x + "_d"], [x + "_r"])]
        if signed:
            return nodes + [n("Cast", [x + "_r"], [x + "_c"], to=TensorProto.INT8)]
        return nodes + [n("Add", [x + "_r", "c128"], [x + "_a"]), n("Cast", [x + "_a"], [x + "_c"], to=TensorProto.UINT8)]

    nodes = []
    for name, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        nodes += [n("Reshape", [name, "heads_shape"], [name + "_4d"]), n("Transpose", [name + "_4d"], [name + "t"], perm=perm)]
    nodes += sym("qt", "last", False) + sym("kt", "second_last", True) + [
        n("MatMulInteger", ["qt_c", "kt_c", "zp_u8", "zero_s8"], ["qk32"]), n("Cast", ["qk32"], ["qkf"], to=TensorProto.FLOAT),
        n("Mul", ["qt_s", "kt_s"], ["qk_s"]), n("Mul", ["qk_s", "score_scale"], ["qk_s2"]), n("Mul", ["qkf", "qk_s2"], ["scores"]),
        n("Softmax", ["scores"], ["p"], axis=-1),
        n("ReduceMax", ["p", "last"], ["p_max"]), n("Mul", ["p_max", "inv255"], ["p_s"]), n("Div", ["p", "p_s"], ["p_d"]),
        n("Round", ["p_d"], ["p_r"]), n("Cast", ["p_r"], ["p_c"], to=TensorProto.UINT8)]
    nodes += sym("vt", "second_last", True) + [
        n("MatMulInteger", ["p_c", "vt_c", "zero_u8", "zero_s8"], ["o32"]), n("Cast", ["o32"], ["of"], to=TensorProto.FLOAT),
        n("Mul", ["p_s", "vt_s"], ["o_s"]), n("Mul", ["of", "o_s"], ["o"]),
        n("Transpose", ["o"], ["o_t"], perm=[0, 2, 1, 3]), n("Reshape", ["o_t", "out_shape"], ["y"])]
    return nodes


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
    qmax = weight_qmax()  # 63 where full-range u8 x s8 products saturate (no VNNI)
    w_scale = (np.abs(w1).max(axis=0) / qmax).astype(np.float32)
    w_q = np.clip(np.round(w1 / w_scale), -qmax, qmax).astype(np.int8)
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
    # the mask as one more Q/K channel per head (quantize_per_token_int8, attention="per-token"): no mask input
    wide = args.heads * (d // args.heads + 1)
    q2, k2 = (rng.standard_normal((args.batch, seq, wide)).astype(np.float32) for _ in range(2))
    folded = _model([helper.make_node("MultiHeadAttention", ["q", "k", "v", "mha_bias2"], ["y"], domain="com.microsoft",
                                      num_heads=args.heads, scale=float(1 / np.sqrt(d // args.heads)))],
                    [("q", TensorProto.FLOAT, [args.batch, seq, wide]), ("k", TensorProto.FLOAT, [args.batch, seq, wide]), three[2]],
                    [numpy_helper.from_array(rng.standard_normal(2 * wide + d).astype(np.float32), "mha_bias2")])
    int8_core = _model(_int8_attention_nodes(args.batch, seq, args.heads, d // args.heads), three, _int8_attention_consts(args.batch, seq, args.heads, d // args.heads, weight_qmax()))
    runs = [("MultiHeadAttention + bias + mask", lambda s=_session(with_all, args.threads): s.run(None, {"q": q, "k": k, "v": v, "len": lengths})),
            ("int8 core from standard ops (no mask)", lambda s=_session(int8_core, args.threads): s.run(None, {"q": q, "k": k, "v": v})),
            ("MultiHeadAttention + bias, mask folded into K", lambda s=_session(folded, args.threads): s.run(None, {"q": q2, "k": k2, "v": v})),
            ("MultiHeadAttention", lambda s=_session(bare, args.threads): s.run(None, {"q": q, "k": k, "v": v}))]
    record("attention", [args.batch, seq, d, args.heads], _time_group(runs, args.repeats, args.warmup))
    # --- the cost of switching between sessions whose idle workers spin (ORT's default) or sleep
    feed = {"q": q, "k": k, "v": v}
    spin = [_session(bare, args.threads, spinning=True) for _ in range(2)]
    quiet = [_session(bare, args.threads) for _ in range(2)]
    one = _time_group([("a", lambda: spin[0].run(None, feed))], args.repeats, args.warmup)["a"]
    alternating = _time_group([(str(i), lambda s=s: s.run(None, feed)) for i, s in enumerate(spin)], args.repeats, args.warmup)
    alternating_quiet = _time_group([(str(i), lambda s=s: s.run(None, feed)) for i, s in enumerate(quiet)], args.repeats, args.warmup)
    record("session_switching", [args.batch, seq, d, args.heads], {
        "MultiHeadAttention, one session, spinning on (ORT default)": one,
        "two sessions alternating, spinning on": statistics.mean(alternating.values()),
        "two sessions alternating, spinning off": statistics.mean(alternating_quiet.values())})

    # the int8 core computes attention (relative L2 error against the fp32 op), so its time is a fair candidate's
    ref = _session(bare, args.threads).run(None, {"q": q, "k": k, "v": v})[0]
    got = _session(int8_core, args.threads).run(None, {"q": q, "k": k, "v": v})[0]
    next(r for r in rows if r["impl"].startswith("int8 core"))["rel_err_vs_fp32"] = round(float(np.linalg.norm(got - ref) / np.linalg.norm(ref)), 5)

    print(f"ONNX Runtime {ort.__version__}, {args.threads} thread(s), median of {args.repeats}")
    width = max(len(r["impl"]) for r in rows)
    for group in dict.fromkeys(r["op"] for r in rows):
        print(f"{group} {next(r['shape'] for r in rows if r['op'] == group)}")
        for r in (r for r in rows if r["op"] == group):
            extra = f"  (relative error vs fp32 {r['rel_err_vs_fp32']:.4f})" if "rel_err_vs_fp32" in r else ""
            print(f"  {r['impl']:<{width}}  {r['median_ms']:9.2f} ms{extra}")
    if args.json:
        write_json(args.json, {"onnxruntime": ort.__version__, "threads": args.threads, "repeats": args.repeats,
                               "machine": platform.processor() or platform.machine(), "rows": rows,
                               "command": "python scripts/ort_cpu_ops.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                               "provenance": provenance()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
