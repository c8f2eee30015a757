"""``hf-lnorm bench quantized``: int8 norms + int8 GEMMs against fp32 and torch/torchao int8.

Variants, all built from the same model and timed round-robin in one process
(so machine load hits them alike):

``fp32``                 the stock model, eager.
``torch-dynamic-int8``   ``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear``.
``torchao-int8``         torchao's int8 dynamic-activation / int8-weight config
                         (reported as unavailable when torchao does not import).
``hf_lnorm-int8``        ``hf_lnorm.patch(model, mode="quantized")``, the default:
                         every Linear int8; the norms' readers reuse the norm's
                         int8 output, the others (attention output, FFN down)
                         quantize their input per token themselves.
``hf_lnorm-int8-smooth`` the same plus ``hf_lnorm.smooth`` on calibration text.
``...-readers``          with ``all_linears=False``: only the Linears that read a
                         norm run int8, every other Linear stays fp32.

A variant whose first forward takes over 20x fp32's is timed once (torchao's
int8 path falls back to a generic ``torch._int_mm`` loop on CPUs without VNNI).

For each: median forward latency on the timing batch (default 8 x 384 tokens of
real text), bytes of the weights the forward reads, and a quality figure: on a
question-answering model, the fraction of SQuAD-format questions whose
predicted answer span equals fp32's (``span_agreement``); otherwise the cosine
similarity of the outputs with fp32 (``cosine_vs_fp32``).

Example:
    hf-lnorm bench quantized --json bench_quantized.json
"""

from __future__ import annotations

import copy
import io
import json
import os
import statistics
import time
import warnings
from typing import Dict, List

import torch
from torch import nn

from .._argtypes import non_negative_int, positive_int, unit_interval
from .._json import write_json
from .._machine import machine_info, provenance
from ..export.qa import DEFAULT_QA_FILE
from ..resources import data_file

VARIANTS = ("fp32", "torch-dynamic-int8", "torchao-int8", "hf_lnorm-int8", "hf_lnorm-int8-smooth",
            "hf_lnorm-int8-readers", "hf_lnorm-int8-smooth-readers")
DEFAULT_TEXT_FILE = str(data_file("shakespeare_sample.txt"))


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the QA default of "
                        "hf_lnorm.loading.default_qa_model, the bundled MiniLM with its QA adapter merged)")
    parser.add_argument("--batch", type=positive_int, default=8, help="timing batch size (default 8)")
    parser.add_argument("--seq", type=positive_int, default=384, help="timing sequence length in tokens (default 384)")
    parser.add_argument("--repeats", type=positive_int, default=10, help="timed forwards per variant (default 10)")
    parser.add_argument("--warmup", type=non_negative_int, default=2, help="untimed forwards per variant first (default 2)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list from: {', '.join(VARIANTS)}")
    parser.add_argument("--alpha", type=unit_interval, default=0.5, help="SmoothQuant migration strength for hf_lnorm-int8-smooth")
    parser.add_argument("--qa-file", default=DEFAULT_QA_FILE, help="SQuAD-format JSON for span agreement")
    parser.add_argument("--qa-examples", type=positive_int, default=200, help="questions scored for span agreement (default 200)")
    parser.add_argument("--text-file", default=DEFAULT_TEXT_FILE, help="plain text for the timing and calibration batches")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the rows as JSON here")


# --------------------------------------------------------------------------- inputs


def _text_batches(tokenizer, path: str, batch: int, seq: int, count: int) -> List[Dict[str, torch.Tensor]]:
    """``count`` batches of ``batch`` x ``seq`` token windows cut from a text file."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    body = seq - 2
    need = batch * count * body
    if len(ids) < need:
        ids = (ids * (need // max(1, len(ids)) + 1))[:need]
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    out = []
    for c in range(count):
        rows = []
        for b in range(batch):
            start = (c * batch + b) * body
            window = ids[start:start + body]
            rows.append(([cls_id] if cls_id is not None else []) + window + ([sep_id] if sep_id is not None else []))
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([r + [tokenizer.pad_token_id or 0] * (width - len(r)) for r in rows])
        out.append({"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)})
    return out


def _qa_examples(path: str, limit: int) -> List[Dict[str, str]]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    examples = []
    for article in data["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                examples.append({"question": qa["question"], "context": para["context"]})
    return examples[:limit]


# --------------------------------------------------------------------------- quality


def _best_spans(model, tokenizer, examples, max_len: int = 384, max_answer: int = 30):
    """Best (start, end) token span inside the context for each example."""
    spans = []
    with torch.no_grad():
        for i in range(0, len(examples), 8):
            chunk = examples[i:i + 8]
            enc = tokenizer([e["question"] for e in chunk], [e["context"] for e in chunk], truncation="only_second",
                            max_length=max_len, padding=True, return_tensors="pt")
            context_mask = torch.tensor([[sid == 1 for sid in enc.sequence_ids(j)] for j in range(len(chunk))])
            out = model(**{k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")})
            neg = torch.finfo(out.start_logits.dtype).min
            start = out.start_logits.float().masked_fill(~context_mask, neg)
            end = out.end_logits.float().masked_fill(~context_mask, neg)
            scores = start[:, :, None] + end[:, None, :]  # (B, start, end)
            n = scores.shape[-1]
            valid = torch.ones(n, n, dtype=torch.bool).triu().tril(max_answer - 1)
            scores = scores.masked_fill(~valid, neg)
            flat = scores.flatten(1).argmax(-1)
            spans += [(int(f) // n, int(f) % n) for f in flat]
    return spans


def _first_float(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    for v in (out.values() if hasattr(out, "values") else out):
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return v
    raise ValueError("model output holds no float tensor")


# --------------------------------------------------------------------------- variants


def _float_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) + sum(
        b.numel() * b.element_size() for b in module.buffers())


def _serialized_bytes(module: nn.Module) -> int:
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    return buf.tell()


def _hf_lnorm_bytes(model: nn.Module) -> int:
    """Bytes the quantized forward reads: int8 copies for int8 layers, float for the rest."""
    from ..quantization import LINEAR_ATTR, int8_layers

    total = _float_bytes(model)
    for _, layer in int8_layers(model):
        w = layer.weight
        total += layer.__dict__[LINEAR_ATTR].weight.nbytes - w.numel() * w.element_size()
    return total


def _build_variants(names, model, calib, alpha) -> Dict[str, Dict]:
    import hf_lnorm

    built: Dict[str, Dict] = {}
    for name in names:
        if name == "fp32":
            built[name] = {"model": model, "bytes": _float_bytes(model)}
        elif name == "torch-dynamic-int8":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                qm = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
            built[name] = {"model": qm, "bytes": _serialized_bytes(qm)}
        elif name == "torchao-int8":
            try:
                from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_
            except Exception as exc:  # torchao missing or incompatible with this torch
                built[name] = {"error": f"torchao unavailable: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
                continue
            am = copy.deepcopy(model)
            quantize_(am, Int8DynamicActivationInt8WeightConfig())
            built[name] = {"model": am, "bytes": _serialized_bytes(am)}
        elif name.startswith("hf_lnorm-int8"):
            hm = copy.deepcopy(model)
            options = {"all_linears": False} if name.endswith("-readers") else {}  # else the mode's default
            hf_lnorm.patch(hm, mode="quantized", example_inputs=calib[0], **options)
            if "-smooth" in name:
                hf_lnorm.smooth(hm, calib, alpha=alpha)
            from ..quantization import int8_layers

            patched = hf_lnorm.patch_report(hm).patched
            built[name] = {"model": hm, "bytes": _hf_lnorm_bytes(hm), "int8_layers": len(int8_layers(hm)),
                           "all_linears": bool(patched and patched[0].extra.get("all_linears"))}
    return built


def _machine() -> Dict[str, object]:
    """``hf_lnorm._machine.machine_info()`` plus the torchao version (the torchao row depends on it)."""
    import importlib.metadata

    info = machine_info()
    try:
        info["torchao"] = importlib.metadata.version("torchao")
    except importlib.metadata.PackageNotFoundError:
        info["torchao"] = None
    return info


def run(args) -> int:
    from ..errors import UsageError
    from ..loading import default_qa_model, load_model, resolve_model
    from transformers import AutoConfig, AutoTokenizer

    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names:
        raise UsageError(f"unknown variant(s) {', '.join(bad) or '(none)'}; accepted: {', '.join(VARIANTS)}")
    if not os.path.isfile(args.text_file):
        raise UsageError(f"--text-file {args.text_file!r} does not exist")
    if args.threads:
        torch.set_num_threads(args.threads)

    model_name = args.model
    if args.model is None:
        args.model, model_name = default_qa_model()
    ref = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(ref)
    config = AutoConfig.from_pretrained(ref)
    qa = "ForQuestionAnswering" in " ".join(getattr(config, "architectures", None) or []) or config.model_type in (
        "bert", "roberta", "distilbert", "albert", "electra", "deberta-v2")
    torch.manual_seed(0)  # a fresh QA head (checkpoint without one) is the same in every run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(args.model, task="question-answering" if qa else "base")
    model.eval()

    timing = _text_batches(tokenizer, args.text_file, args.batch, args.seq, 1)[0]
    calib = _text_batches(tokenizer, args.text_file, 4, min(args.seq, 128), 4)
    examples = []
    if qa and os.path.isfile(args.qa_file):
        examples = _qa_examples(args.qa_file, args.qa_examples)

    built = _build_variants(names, model, calib, args.alpha)
    live = [n for n in names if "model" in built[n]]
    times: Dict[str, List[float]] = {n: [] for n in live}
    first: Dict[str, float] = {}
    with torch.no_grad():
        for n in live:
            t0 = time.perf_counter()
            built[n]["model"](**timing)
            first[n] = time.perf_counter() - t0
        base = first.get("fp32", min(first.values()))
        slow = {n for n in live if first[n] > 20 * base}
        for n in slow:
            times[n].append(first[n] * 1e3)
            built[n]["note"] = "timed once (over 20x slower than fp32)"
        fast = [n for n in live if n not in slow]
        for _ in range(max(0, args.warmup - 1)):
            for n in fast:
                built[n]["model"](**timing)
        for _ in range(args.repeats):
            for n in fast:  # round-robin: load changes affect every variant alike
                t0 = time.perf_counter()
                built[n]["model"](**timing)
                times[n].append((time.perf_counter() - t0) * 1e3)

    rows = []
    ref_spans = _best_spans(built["fp32"]["model"] if "fp32" in built else model, tokenizer, examples) if examples else None
    ref_out = None
    if not examples:
        with torch.no_grad():
            ref_out = _first_float(model(**calib[0])).double().flatten()
    for n in names:
        row = {"variant": n, "model": model_name}
        if "model" not in built[n]:
            row.update(median_ms=None, weight_bytes=None, metric=None, value=None, error=built[n]["error"])
            rows.append(row)
            continue
        m = built[n]["model"]
        if examples:
            spans = _best_spans(m, tokenizer, examples)
            metric, value = "span_agreement", sum(a == b for a, b in zip(spans, ref_spans)) / len(spans)
        else:
            with torch.no_grad():
                out = _first_float(m(**calib[0])).double().flatten()
            metric, value = "cosine_vs_fp32", float(torch.nn.functional.cosine_similarity(out, ref_out, dim=0))
        row.update(median_ms=round(statistics.median(times[n]), 2), weight_bytes=int(built[n]["bytes"]),
                   metric=metric, value=round(value, 4))
        for key in ("int8_layers", "all_linears", "note"):
            if key in built[n]:
                row[key] = built[n][key]
        rows.append(row)

    fp = next((r["median_ms"] for r in rows if r["variant"] == "fp32" and r["median_ms"]), None)
    print(f"model: {model_name}  batch {args.batch} x seq {args.seq}  threads {torch.get_num_threads()}  "
          f"repeats {args.repeats}  questions {len(examples)}")
    header = f"{'variant':<28} {'median ms':>10} {'vs fp32':>8} {'weight MB':>10}  quality"
    print(header)
    print("-" * len(header))
    for r in rows:
        if r["median_ms"] is None:
            print(f"{r['variant']:<28} {'-':>10} {'-':>8} {'-':>10}  {r['error']}")
            continue
        speed = f"{fp / r['median_ms']:.2f}x" if fp else "-"
        note = f"  ({r['note']})" if r.get("note") else ""
        print(f"{r['variant']:<28} {r['median_ms']:>10.1f} {speed:>8} {r['weight_bytes'] / 1e6:>10.1f}  {r['metric']}={r['value']}{note}")
    if args.json:
        write_json(args.json, {"rows": rows, "batch": args.batch, "seq": args.seq, "threads": torch.get_num_threads(),
                               "repeats": args.repeats, "questions": len(examples), "machine": _machine(),
                               "provenance": provenance()})
    return 0
