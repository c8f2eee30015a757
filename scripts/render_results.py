#!/usr/bin/env python
"""Render the results pages and the README's headline table from the JSONs under ``data/results/``.

Every figure on ``docs/results/*.md`` and between the README markers
``<!-- results:headline:start -->`` / ``<!-- results:headline:end -->`` comes from
a committed JSON; each table names the command that produced it, the machine,
the date, the git revision and the library versions (the JSON's ``provenance``).
Nothing outside the markers of README.md is touched.

Usage (standard library only, so the check runs anywhere):
    python scripts/render_results.py            # rewrite the pages and the README block
    python scripts/render_results.py --check    # exit 1, naming each file that differs from its JSON
    python scripts/render_results.py --root DIR # work on another copy of the repository
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

START, END = "<!-- results:headline:start -->", "<!-- results:headline:end -->"
OPTIMIZE = "optimize_qa-minilm_transformers-4.57.6.json"
TRANSLATION = "translation_lnorm_seq2seq_cpu.json"
VERSION_ORDER = ("python", "torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "optimum", "optimum-onnx",
                 "peft", "triton", "openvino", "torchao", "accelerate", "gymnasium")


class Results:
    """The JSON files of one ``data/results`` folder, loaded on first use; records which ones a page read."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._cache: Dict[str, dict] = {}
        self.used: List[str] = []

    def get(self, name: str) -> dict:
        if name not in self._cache:
            path = self.folder / name
            if not path.is_file():
                raise SystemExit(f"render_results: error: {path} is missing (the results pages are rendered from it)")
            with open(path, encoding="utf-8") as f:
                self._cache[name] = json.load(f)
        if name not in self.used:
            self.used.append(name)
        return self._cache[name]

    def names(self, pattern: str) -> List[str]:
        return sorted(p.name for p in self.folder.glob(pattern))


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ms(v: Optional[float]) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if v >= 100 else f"{v:.2f}" if v >= 1 else f"{v:.4f}"


def ratio(num: Optional[float], den: Optional[float]) -> str:
    return f"{num / den:.2f}×" if num and den else "-"


def _short(text: str, limit: int) -> str:
    text = " ".join(text.replace("|", "/").split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def pct(v: float, digits: int = 1) -> str:
    return f"{100 * v:.{digits}f}%"


def _machine_text(machine: object, load: Optional[str]) -> str:
    """One line for a ``machine`` entry: a description string, or the dict ``machine_info()`` writes."""
    if not isinstance(machine, dict):
        return machine if isinstance(machine, str) else "machine not recorded"
    m = machine
    cpu = f"CPU {m['cpu']}" + (f", {m['cores']} cores" if m.get("cores") else "") if m.get("cpu") and not m.get("device") else None
    threads = f"{m['threads']} thread{'s' if m['threads'] != 1 else ''}" if m.get("threads") else None
    loadavg = f"load {m['load_avg_1min']:.2f}" if m.get("load_avg_1min") is not None else m.get("load")
    parts = [m.get("gpu") or m.get("device"), cpu, m.get("description"),
             "int8 ISA " + "/".join(m["int8_isa"]) if m.get("int8_isa") else None, threads, load or loadavg, m.get("stated_in")]
    return ", ".join(str(p) for p in parts if p) or "machine not recorded"


def provenance_note(data: dict, name: str, load: Optional[str] = None, threads: Optional[int] = None) -> str:
    """The lines under a table: command, machine, date, revision, versions, source file."""
    prov = data.get("provenance") or {}
    machine = prov.get("machine", data.get("machine"))
    if threads and isinstance(machine, dict) and not machine.get("threads"):
        machine = {**machine, "threads": threads}
    when = f"date {date(data)}" if date(data) else "date not recorded"
    sha = prov.get("git_sha")
    if sha:
        rev = f"git `{sha[:7]}`"
        if "added this file" in prov.get("recorded", ""):
            rev += " (the commit that added the JSON)"
        if prov.get("git_dirty"):
            rev += " with uncommitted changes"
    else:
        rev = f"hf_lnorm {prov['hf_lnorm']}" if prov.get("hf_lnorm") else "revision not recorded"
    versions = prov.get("versions") or {}
    ordered = [k for k in VERSION_ORDER if k in versions] + sorted(k for k in versions if k not in VERSION_ORDER)
    vtext = ", ".join(f"{k} {versions[k]}" for k in ordered) or "versions not recorded"
    command = prov.get("command") or data.get("command")
    lines = [f"- command: `{command}`" if command else f"- command: {prov.get('command_note', 'not recorded')}",
             f"- machine: {_machine_text(machine, load)}",
             f"- {when}, {rev}; {vtext}",
             f"- source: `data/results/{name}`"]
    return "\n".join(lines)


def date(d: dict) -> str:
    p = d.get("provenance") or {}
    return (p.get("created") or p.get("date") or "")[:10]


def device(d: dict) -> str:
    """``"NVIDIA H100, 2026-11-25"`` for a GPU result, ``"CPU, <date>"`` otherwise."""
    m = (d.get("provenance") or {}).get("machine")
    gpu = (m.get("gpu") or m.get("device")) if isinstance(m, dict) else None
    return f"{gpu or 'CPU'}, {date(d)}"


def page(title: str, results: Results, body: List[str]) -> str:
    sources = ", ".join(f"data/results/{n}" for n in results.used)
    head = [f"<!-- Generated by python scripts/render_results.py from {sources}. Edit the JSON or the script, "
            "not this page. -->", f"# {title}", "",
            "Generated by `python scripts/render_results.py` from " + ", ".join(f"`data/results/{n}`" for n in results.used)
            + ". Each table lists the command that produced it, the machine, the date, the git revision and the versions.",
            ""]
    return "\n".join(head + body).rstrip("\n") + "\n"


def norm_rows(data: dict, impls: Sequence[str]) -> List[List[object]]:
    """One row per (op, pass, dtype, shape): the median ms of each impl and torch ÷ hf_lnorm."""
    cells: Dict[Tuple[str, str, str, str], Dict[str, float]] = {}
    for r in data["results"]:
        cells.setdefault((r["op"], r["pass"], r["dtype"], f"{r['tokens']}×{r['hidden']}"), {})[r["impl"]] = r["median_ms"]
    return [[*key, *[ms(t.get(i)) for i in impls], ratio(t.get("torch"), t.get("hf_lnorm"))] for key, t in cells.items()]


def e2e_text(e: dict) -> str:
    return (f"MiniLM QA inference, batch {e['batch']} × seq {e['seq']}: stock {ms(e['stock_ms'])} ms, patched "
            f"{ms(e['patched_ms'])} ms ({e['speedup']:.3f}×; an unpatched copy of the stock model runs at "
            f"{e['twin_ratio']:.3f}×, the noise floor), max |logit difference| {e['max_abs_diff']:.1e}, "
            f"{e['fused_blocks']} residual add + norm blocks fused.")


def norms_cpu(res: Results) -> str:
    name = "bench_norms_cpu_fwd.json"
    d = res.get(name)
    impls = [i for i in ("hf_lnorm", "hf_lnorm_inplace", "torch", "naive") if any(r["impl"] == i for r in d["results"])]
    load = f"load {d['load_avg_start']:.2f} → {d['load_avg_end']:.2f}"
    body = ["## Kernels against torch eager", "",
            f"Median ms per call, {d['timing']} timing, {d['threads']} threads; copy bandwidth in the same run "
            f"{d['copy_gbps']:.1f} GB/s. `naive` is the norm written as separate plain torch operations; "
            "the last column is torch's time divided by hf_lnorm's.", "",
            table(["op", "pass", "dtype", "tokens×hidden", *[f"{i} ms" for i in impls], "torch ÷ hf_lnorm"],
                  norm_rows(d, impls)), ""]
    if d.get("e2e"):
        body += ["End to end: " + e2e_text(d["e2e"]), ""]
    body += [provenance_note(d, name, load, d.get("threads")), ""]
    name = "bench_norms_cpu_cache_policy.json"
    c = res.get(name)
    s, settings = c["summary"], list(c["settings_mib"])
    keys = [k for k in s["micro"][settings[0]] if " hf_lnorm" in k]
    rows = [[k.replace(" hf_lnorm_inplace", " (in place)").replace(" hf_lnorm", ""),
             *[f"{ms(s['micro'][st][k]['median_ms']['median'])} ({s['micro'][st][k]['speedup_vs_torch']['median']:.2f}×)"
               for st in settings]] for k in keys]
    body += ["## Idle output-block cache of the C++ kernels", "",
             f"Median ms of hf_lnorm over {c['passes']} passes (in brackets: the median over passes of torch eager ÷ hf_lnorm) for each "
             f"`HF_LNORM_CPU_CACHE_MB` limit ({', '.join(f'{k} = {v} MiB' for k, v in c['settings_mib'].items())}).", "",
             table(["op, shape", *settings], rows), ""]
    e2e_rows = []
    for shape, arms in s["e2e"].items():
        for arm, v in arms.items():
            if arm != "idle_cache_mib_max":
                e2e_rows.append([shape, arm, ms(v["ms"]["median"]), f"{v['speedup_vs_stock_per_process']['median']:.3f}×"])
        e2e_rows.append([shape, "most idle cache held (MiB)", ", ".join(f"{k}: {v:.0f}" for k, v in arms["idle_cache_mib_max"].items()), ""])
    body += ["MiniLM QA end to end, stock against patched under each limit:", "",
             table(["batch×seq", "arm", "median ms", "stock ÷ arm (median per process)"], e2e_rows), "",
             provenance_note(c, name, threads=c.get("threads")), ""]
    return page("CPU norm kernels", res, body)


def norms_gpu(res: Results) -> str:
    body = []
    for name, what in (("bench_norms_cuda_h100_graph.json", "CUDA-graph replay (device time)"),
                       ("bench_norms_cuda_h100_eager.json", "eager calls (launch cost included)")):
        d = res.get(name)
        body += [f"## {d['device_name']}, {what}, {date(d)}", "",
                 f"Median ms per call, {d['timing']} timing; copy bandwidth in the same run {d['copy_gbps']:.0f} GB/s. "
                 "The last column is torch's time divided by hf_lnorm's.", "",
                 table(["op", "pass", "dtype", "tokens×hidden", "hf_lnorm ms", "torch ms", "torch ÷ hf_lnorm"],
                       norm_rows(d, ("hf_lnorm", "torch"))), "", provenance_note(d, name, threads=d.get("threads")), ""]
    d = res.get(name := "bench_norms_cuda_h100_e2e_before_fastpath.json")
    sha = (d.get("provenance") or {}).get("git_sha", "")[:7]
    body += [f"## {d['device_name']}, end to end", "",
             f"Measured with the code of git `{sha}`: " + e2e_text(d["e2e"]), "", provenance_note(d, name), ""]
    return page("GPU norm kernels", res, body)


def quantized(res: Results) -> str:
    d = res.get(name := "bench_quantized_qa-minilm.json")
    fp = next((r["median_ms"] for r in d["rows"] if r["variant"] == "fp32"), None)
    dyn = next((r["median_ms"] for r in d["rows"] if r["variant"] == "torch-dynamic-int8"), None)
    rows = [[r["variant"], ms(r.get("median_ms")), ratio(fp, r.get("median_ms")), ratio(dyn, r.get("median_ms")),
             f"{r['weight_bytes'] / 1e6:.1f}" if r.get("weight_bytes") else "-",
             f"{r['metric']} {r['value']}" if r.get("metric") else r.get("error", "")] for r in d["rows"]]
    body = ["## Int8 norms and GEMMs on the bundled QA model", "",
            f"{d['rows'][0]['model']}; forward of batch {d['batch']} × seq {d['seq']}, median of {d['repeats']} "
            f"interleaved rounds, {d['threads']} threads. Quality: the share of {d['questions']} questions whose "
            "predicted answer span equals fp32's.", "",
            table(["variant", "median ms", "fp32 ÷ variant", "torch dynamic int8 ÷ variant", "weights MB", "quality"], rows),
            "", provenance_note(d, name, threads=d.get("threads")), ""]
    name = "quant_lm_perplexity.json"
    q = res.get(name)
    body += ["## Perplexity of a small character-level GPT", "",
             f"Held-out perplexity on {q['heldout_chars']:,} characters of `{q['text']}`, context {q['context']}, "
             f"model trained for {q['steps']} steps.", "",
             table(["variant", "perplexity", "change vs fp32"],
                   [[r["variant"], f"{r['perplexity']:.4f}", f"{r['increase_pct']:+.3f}%"] for r in q["rows"]]),
             "", provenance_note(q, name), ""]
    for name in res.names("seq2seq_int8_agreement_transformers-*.json"):
        s = res.get(name)
        body += [f"## Encoder-decoder int8 under ONNX Runtime, transformers {s['transformers']}", "",
                 f"Greedy translations of {s['sentences']} sentences (up to {s['max_new_tokens']} new tokens) by "
                 f"`{s['model']}`; token agreement and identical outputs are measured against PyTorch fp32.", "",
                 table(["variant", "max abs logit error", "token agreement", "identical", "seconds"],
                       [[r["variant"], f"{r['max_abs_err']:.1e}", f"{r['token_agreement']:.4f}",
                         f"{r['identical']} of {s['sentences']}", f"{r['seconds']:.1f}"] for r in s["rows"]]),
                 "", provenance_note(s, name, threads=s.get("threads")), ""]
    return page("Quantized mode", res, body)


def qa_patch_modes(res: Results) -> str:
    name = "qa_eval_patch_modes.json"
    d = res.get(name)
    base = d["results"]["none"]["eval_f1"]
    rows = [[mode, f"{m['eval_exact_match']:.2f}", f"{m['eval_f1']:.2f}", f"{m['eval_f1'] - base:+.2f}"]
            for mode, m in d["results"].items()]
    body = ["## Exact match and F1 per patch mode", "",
            f"{d['model']}; all {d['dev_questions']} held-out dev questions, evaluated with `scripts/run_qa.py` "
            "and `--hf_lnorm_patch MODE` (`none` is the stock model).", "",
            table(["mode", "exact match", "F1", "F1 vs none"], rows), "",
            provenance_note(d, name, threads=d.get("threads")), ""]
    return page("QA accuracy per patch mode", res, body)


def optimize_cells(d: dict) -> List[Tuple[int, int]]:
    return list(dict.fromkeys((r["batch"], r["seq"]) for r in d["rows"]))


def optimize_cell_table(d: dict) -> List[str]:
    """The chosen route at every timed cell: the fastest route within the budget there, and what runs faster (the
    three fastest and every off-the-shelf route)."""
    if not d.get("cells") or not d.get("chosen"):
        return []
    routes = {r["name"]: r for r in d["routes"]}

    def faster_outside(cell: dict, limit: int = 3) -> str:  # the selection hf_lnorm's cell_line prints
        found = [f for f in cell["faster_than_chosen"] if not f["within_budget"]]
        shown = [f for i, f in enumerate(found) if i < limit or routes.get(f["route"], {}).get("reference")]
        items = [f"`{f['route']}` {ms(f['median_ms'])} ({f['agreement']:.3f})" for f in shown]
        return ", ".join(items) + (f" and {len(found) - len(shown)} more" if len(found) > len(shown) else "") or "none"

    rows = [[f"{c['batch']} × {c['seq']}", ms(c["chosen_ms"]) + (f" (outside the budget: {c['chosen_agreement']:.3f})"
                                                               if c.get("chosen_within_budget") is False else ""),
             f"`{c['fastest_within_budget']}` {ms(c['fastest_within_budget_ms'])}" if c["fastest_within_budget"] else "none",
             faster_outside(c)] for c in d["cells"]]
    return [f"The chosen route (`{d['chosen']}`) at every timed cell, against the fastest route within the same budget "
            "there (quality at that cell's sequence length) and the routes that run faster but miss the budget (their "
            "span agreement in brackets; the three fastest and every off-the-shelf one):", "",
            table(["batch × seq", "chosen ms", "fastest within the budget", "faster, outside the budget"], rows), ""]


def optimize(res: Results) -> str:
    d = res.get(name := OPTIMIZE)
    cells = optimize_cells(d)
    routes = {r["name"]: r for r in d["routes"]}
    variants = list(dict.fromkeys(r["variant"] for r in d["rows"]))
    by = {(r["variant"], r["batch"], r["seq"]): r for r in d["rows"]}

    def label(v: str) -> str:
        tags = [t for t, on in (("chosen", v == d.get("chosen")), ("reference", routes.get(v, {}).get("reference"))) if on]
        return f"`{v}`" + (f" ({', '.join(tags)})" if tags else "")

    speed = [[label(v), *[f"{ms(by[(v, b, s)]['median_ms'])} ({by[(v, b, s)]['speedup_vs_stock']:.2f}×)"
                          if (v, b, s) in by else "-" for b, s in cells]] for v in variants]
    seqs = list(dict.fromkeys(s for _, s in cells))
    quality = []
    for v in variants:
        for s in seqs:
            r = next(by[(v, b, s2)] for b, s2 in cells if s2 == s and (v, b, s2) in by)
            ref = d["reference_quality"][str(s)]
            quality.append([label(v), s, f"{r['max_abs_err']:.1e}", f"{r['agreement']:.3f}", f"{r['exact_match']:.1f}",
                            f"{r['f1']:.2f}", f"{r['f1'] - ref['f1']:+.2f}"])
    budget, primary = d["budget"], d["budget"]["primary_cell"]
    vd = d.get("verify_deploy") or {}
    fused = ", ".join(f"{k} {v}" for k, v in (d.get("fused_ops") or {}).items() if v)
    body = [f"## `hf-lnorm optimize` on {d['model']}", "",
            f"Every route is built from the same fp32 model, evaluated on {d['questions']} questions of "
            f"`{Path(d['qa_file']).name}` and timed in interleaved rounds (median of {d['repeats']}; in brackets the "
            f"median over rounds of PyTorch fp32's time ÷ the route's), {d['threads']} threads. Export: "
            f"{d['export_method']}, opset {d['opset']}" + (f"; ONNX Runtime fusions: {fused}" if fused else "") + ".", "",
            "![speedup against F1 per route](img/optimize_report.png)", "",
            table(["route", *[f"batch {b} × seq {s} ms" for b, s in cells]], speed), "",
            "Accuracy against PyTorch fp32 (agreement: the share of questions with the same predicted span):", "",
            table(["route", "seq", "max abs logit error", "span agreement", "exact match", "F1", "F1 vs fp32"], quality), "",
            f"**Chosen:** {d.get('why')}. Budget: F1 drop ≤ {budget['max_f1_drop']}, span agreement ≥ "
            f"{budget['min_agreement']}; the fastest route within it at batch {primary['batch']} × seq {primary['seq']} is "
            "deployed.", "",
            *[f"- `{v}`: {why}" for v, why in (d.get("rejected") or {}).items()],
            *[f"- `{v}` failed: {why}" for v, why in (d.get("failed") or {}).items()], "",
            *optimize_cell_table(d),
            f"The deployed folder, loaded in a fresh process through its load line, gave {vd.get('equal')} of "
            f"{vd.get('total')} answers equal to the job's." + (f" Error: {vd['error']}" if vd.get("error") else ""), "",
            "The job's notes:", "", *[f"- {n}" for n in d.get("notes", [])], "",
            provenance_note(d, name, threads=d.get("threads")), ""]
    name = "ort_cpu_ops.json"
    o = res.get(name)
    rows = [[r["op"], "×".join(map(str, r["shape"])), r["impl"], ms(r["median_ms"]),
             f"{r['rel_err_vs_fp32']:.4f}" if "rel_err_vs_fp32" in r else ""] for r in o["rows"]]
    body += ["## ONNX Runtime CPU operators", "",
             f"Single operators and subgraphs of one MiniLM layer, median of {o['repeats']} runs, {o['threads']} threads "
             f"(onnxruntime {o['onnxruntime']}).", "",
             table(["group", "shape", "implementation", "median ms", "relative error vs fp32"], rows), "",
             provenance_note(o, name, threads=o.get("threads")), ""]
    return page("The main job", res, body)


def families(res: Results) -> str:
    v, s, name = res.get("vit_digits.json"), res.get("speech_espeak.json"), "vision_text_easyvqa_transformers-4.57.6.json"
    t = res.get(name)
    body = ["## LNormViT on scikit-learn digits", "",
            table(["test accuracy", "test images", "train images", "steps", "parameters", "train seconds"],
                  [[pct(v["test_accuracy"], 2), v["test_images"], v["train_images"], v["steps"], f"{v['parameters']:,}",
                    v["train_seconds"]]]), "", provenance_note(v, "vit_digits.json", threads=v.get("threads")), "",
            "## LNormSpeech on synthetic espeak-ng speech", "",
            table(["split", "WER", "words", "sentence error rate"], [[k, pct(s[k]["wer"]), s[k]["words"],
                  pct(s[k]["sentence_error_rate"])] for k in ("validation", "test_held_out_voice")]), "",
            f"{s['parameters']:,} parameters, {s['max_steps']} steps on {s['train_utterances']:,} utterances, "
            f"{s['train_seconds']} s of training.", "", provenance_note(s, "speech_espeak.json", threads=s.get("threads")), "",
            "## LNormVisionText on easy-VQA", "",
            table(["accuracy", "yes/no", "colour/shape", "test questions", "parameters", "train seconds"],
                  [[pct(t["accuracy"]), pct(t["accuracy_yes/no"]), pct(t["accuracy_other"]), f"{t['test_questions']:,}",
                    f"{t['parameters']:,}", t["train_seconds"]]]), "", provenance_note(t, name, threads=t.get("threads")), ""]
    policy = ("policy_cartpole.json", "policy_cartpole_full_budget.json", "policy_cartpole_norms.json")
    runs = [(nm, r) for nm in policy for r in res.get(nm).get("runs", [res.get(nm)])]
    body += ["## LNormPolicy (PPO) on CartPole-v1", "",
             "Mean return over 100 deterministic evaluation episodes (500 is the maximum).", "",
             table(["JSON", "norm", "seed", "mean return", "timesteps", "wall seconds"],
                   [[nm, r["norm_type"], r["seed"], f"{r['mean_return']:.1f} ± {r['std_return']:.1f}", r["timesteps"],
                     r["wall_seconds"]] for nm, r in runs]), ""]
    qa = {"qa_minilm_h100.json": "MiniLM-L6 full fine-tuning, 4 epochs",
          "qa_minilm_cpu_2ep.json": "MiniLM-L6 full fine-tuning, 2 epochs",
          "qa_minilm_lora_cpu.json": "MiniLM-L6 + LoRA (the bundled adapter)"}
    q = {nm: res.get(nm) for nm in qa}
    tr = res.get(TRANSLATION)
    body += ["## Fine-tuning recipes", "",
             "Extractive QA, EM / F1 on the 600 held-out dev questions (baseline: answer with the first sentence):", "",
             table(["recipe", "EM / F1", "first-sentence EM / F1", "train seconds", "trained on"],
                   [[what, f"{q[nm]['eval_exact_match']:.1f} / {q[nm]['eval_f1']:.1f}",
                     f"{q[nm]['eval_first_sentence_exact_match']:.1f} / {q[nm]['eval_first_sentence_f1']:.1f}",
                     f"{q[nm]['train_wall_s']:.0f}", device(q[nm])] for nm, what in qa.items()]), "",
             "Translation en→es with LNormSeq2Seq, the recipe's default config (learning curve and sample "
             "translations: [translation](translation.md)):", "",
             table(["BLEU", "chrF", "copy-the-source BLEU / chrF", "held-out verses", "train seconds", "trained on"],
                   [[f"{tr['final']['eval_bleu']:.2f}", f"{tr['final']['eval_chrf']:.1f}",
                     f"{tr['final']['eval_copy_source_bleu']:.2f} / {tr['final']['eval_copy_source_chrf']:.1f}",
                     tr["final"]["eval_samples"], f"{tr['final']['train_wall_s']:.0f}", device(tr)]]), "",
             "### Provenance", ""]
    for nm in (*policy, *qa, TRANSLATION):
        body += [f"`{nm}`:", "", provenance_note(res.get(nm), nm), ""]
    return page("Model families", res, body)


TRANSLATION_COMMANDS = [
    "python scripts/prepare_data.py bible   # writes data/cache/bible_en_es.jsonl from the bundled corpora",
    "python scripts/run_translation.py configs/translation_lnorm_seq2seq.json --output_dir runs/translation-default"]


def translation_report_command(evaluations: Sequence[dict]) -> List[str]:
    """The ``translation_report.py`` call that collects the run and its evaluation-only runs (``--output_dir`` of each)."""
    flags = []
    for p in evaluations:
        words = p["command"].split()
        folder = words[words.index("--output_dir") + 1]
        flags.append(f"    --evaluation {p['step']}={folder} \\")
    return ["python scripts/translation_report.py runs/translation-default --config configs/translation_lnorm_seq2seq.json \\",
            *flags, "    --json data/results/translation_lnorm_seq2seq_cpu.json --png docs/results/img/translation_curve.png"]


def translation(res: Results) -> str:
    d = res.get(TRANSLATION)
    s, f, c = d["settings"], d["final"], d["curve"]
    m = json.loads(s["config_overrides"]) if isinstance(s.get("config_overrides"), str) else s.get("config_overrides", {})
    threads = (d["provenance"].get("machine") or {}).get("threads")
    books = s["holdout_books"].replace(",", ", ")
    size = (f"{m.get('hidden_size')}-wide, {m.get('num_hidden_layers')} encoder + {m.get('num_decoder_layers')} decoder "
            f"layers, {m.get('num_attention_heads')} heads, MLP {m.get('intermediate_size')}, dropout {m.get('dropout')}, "
            f"{m.get('norm_position')}-{m.get('norm_type')}")
    setup = (f"LNormSeq2Seq ({size}) with a {s['tokenizer_vocab_size']:,}-token joint BPE vocabulary, trained from "
             f"scratch on {f['train_samples']:,} KJV → Reina-Valera verse pairs for {s['max_steps']:,} steps of "
             f"{s['per_device_train_batch_size']} pairs ({f['epoch']:.1f} epochs): AdamW, peak learning rate "
             f"{s['learning_rate']} after {s['warmup_steps']} warm-up steps, {s['lr_scheduler_type']} decay, label "
             f"smoothing {s.get('label_smoothing_factor', 0.0)}. Scored with sacreBLEU BLEU and chrF on the "
             f"{f['eval_samples']} verses of the held-out books ({books}), beam {s['generation_num_beams']}.")
    curve_rows = [[f"{p['step']:,}", f"{p['loss']:.3f}", f"{p['bleu']:.2f}", f"{p['chrf']:.1f}", p.get("from", "during training")]
                  for p in c["eval"]]
    reevaluated = [p for p in c["eval"] if p.get("from") == "evaluation-only run"]
    first, last = c["eval"][0], c["eval"][-1]
    prev = [p for p in c["eval"] if p["step"] < last["step"]]
    trend = (f"Between steps {prev[-1]['step']:,} and {last['step']:,} BLEU moved by {last['bleu'] - prev[-1]['bleu']:+.2f} "
             f"and chrF by {last['chrf'] - prev[-1]['chrf']:+.1f}." if prev else "")
    n = d["names"]
    names = (f"Of the {n['shared']} capitalised words (mostly names) that a held-out source shares with its reference, "
             f"the translations keep {n['kept']} ({pct(n['share_kept'])})"
             + (f"; the most often kept: {', '.join(n['most_kept'])}." if n["most_kept"] else ".") if n["shared"] else "")
    samples = [[x["id"] or "", _short(x["source"], 150), _short(x["reference"], 150), _short(x["prediction"], 150)]
               for x in d["samples"]]
    body = ["The translation recipe (`scripts/run_translation.py`) with its default config, "
            "`configs/translation_lnorm_seq2seq.json`: does it train a model that translates, on this CPU, "
            "in about two hours?", "",
            "## Setup", "", setup, "",
            "## Result", "",
            table(["", "BLEU", "chrF"], [["LNormSeq2Seq, default config", f"{f['eval_bleu']:.2f}", f"{f['eval_chrf']:.1f}"],
                                         ["copy the source", f"{f['eval_copy_source_bleu']:.2f}",
                                          f"{f['eval_copy_source_chrf']:.1f}"]]), "",
            f"Training took {f['train_wall_s'] / 60:.0f} min ({f['train_wall_s']:,.0f} s"
            + (f", {threads} threads" if threads else "") + f"), evaluation {f['eval_wall_s']:.0f} s. {names}", "",
            "## Learning curve", "",
            "Held-out loss (label-smoothed, as in training) and scores at each evaluation:", "",
            table(["step", "held-out loss", "BLEU", "chrF", "scored"], curve_rows), "",
            f"From step {first['step']:,} to step {last['step']:,} BLEU went from {first['bleu']:.2f} to "
            f"{last['bleu']:.2f} and chrF from {first['chrf']:.1f} to {last['chrf']:.1f}. {trend}", "",
            "![Training loss and held-out scores against steps](img/translation_curve.png)", "",
            "## Sample translations", "",
            "The first held-out verse of each book:", "",
            table(["verse", "source (KJV)", "reference (Reina-Valera)", "model"], samples), "",
            "## Reproduce", "", "```bash", *TRANSLATION_COMMANDS, "```", ""]
    if reevaluated:
        body += [f"The scores at step{'s' if len(reevaluated) > 1 else ''} "
                 + ", ".join(f"{p['step']:,}" for p in reevaluated)
                 + " come from evaluation-only runs of the recipe on the checkpoint saved at that step (the last one "
                 "on the final model):", "", "```bash", *[p["command"] for p in reevaluated], "```", ""]
    body += ["The result JSON and the plot:", "", "```bash", *translation_report_command(reevaluated), "```", ""]
    body += ["Training run:", "", provenance_note(d, TRANSLATION, threads=threads), ""]
    if d.get("evaluation_provenance"):
        body += ["Final evaluation:", "", provenance_note({"provenance": d["evaluation_provenance"]}, TRANSLATION), ""]
    return page("Translation: the recipe's default config", res, body)


def generate(res: Results) -> str:
    body = []
    for name in res.names("bench_generate_transformers-*.json"):
        d = res.get(name)
        s = d["settings"]
        rows = [[r["model"], "yes" if r["kv_cache"] else "no", f"{r['parameters']:,}", f"{r['median_s']:.3f}",
                 f"{r['tokens_per_s']:.1f}", f"{r['vs_gpt2']:.2f}×"] for r in d["rows"]]
        body += [f"## transformers {d['environment']['transformers']}", "",
                 f"Batch {s['batch_size']}, {s['prompt_tokens']}-token prompt, {s['new_tokens']} new tokens; hidden "
                 f"{s['hidden_size']}, {s['layers']} layers, {s['heads']} heads, vocabulary {s['vocab_size']}, random "
                 f"weights; median of {s['repeats']}.", "",
                 table(["model", "KV cache", "parameters", "median s", "tokens/s", "vs GPT-2"], rows), "",
                 provenance_note(d, name, threads=d["environment"].get("threads")), ""]
    return page("Generation speed", res, body)


def _graph_lines(graphs: dict, labels: dict, per: str) -> List[str]:
    lines = [f"- `{labels.get(k, k)}`: {g['graphs']} graph(s){per}, {g['hf_lnorm_custom_ops']} hf_lnorm custom "
             "op(s) in them" for k, g in graphs.items() if isinstance(g, dict)]
    if "same_graphs" in graphs:
        lines.append("- compiled stock and compiled patched graphs call the same functions in the same order: "
                     + ("yes" if graphs["same_graphs"] else "**no**"))
    return lines


def compile_page(res: Results) -> str:
    name = "bench_compile_cpu.json"
    d = res.get(name)
    qa = d["qa"]
    labels = {"stock": "stock", "twin": "stock twin", "patched": "patched", "compiled_stock": "compiled stock",
              "compiled_patched": "compiled patched"}
    rows = []
    for r in qa["rows"]:
        med, sp = r["median_ms"], r["speedup"]
        comp = sp.get("compiled_patched_vs_compiled_stock")
        rows.append([f"{r['batch']} × {r['seq']}", *[ms(med.get(v)) for v in labels],
                     f"{sp['patched_vs_stock']:.3f}×", f"{sp['twin_vs_stock']:.3f}×", f"{comp:.3f}×" if comp else "-",
                     f"{r['max_abs_diff_vs_stock'].get('compiled_patched', float('nan')):.1e}"])
    graphs = qa.get("graphs", {})
    body = ["Patched against stock models in eager mode and under `torch.compile` (inductor, CPU). Each variant runs "
            "once per round, in turn, and the table gives the median over rounds. The *stock twin* is an unpatched "
            "copy of the stock model: its ratio to the stock model is the run-to-run noise. Speedups are stock ÷ "
            "variant (compiled: compiled stock ÷ compiled patched), the median over rounds of the ratio within a "
            "round.", "",
            f"## {qa['model']}, question answering", "",
            table(["batch × seq", *[f"{v} ms" for v in labels.values()], "patched", "twin", "compiled",
                   "max abs diff (compiled)"], rows), ""]
    body += _graph_lines(graphs, labels, " (one per input shape)")
    body += ["", "Under `torch.compile` a patched norm runs the stock module's own forward, so inductor receives "
             "the stock model's graph and fuses the norms with their neighbours as it does there; the timing "
             "differences between the two compiled columns are then the run's noise.", ""]
    train = d.get("train") or {}
    if train.get("rows"):
        r = train["rows"][0]
        c = train["config"]
        body += [f"## Llama causal-LM training step, batch {r['batch']} × seq {r['seq']}", "",
                 f"`LlamaForCausalLM` from a config (hidden {c['hidden_size']}, {c['layers']} layers, {c['heads']} "
                 f"heads, MLP {c['intermediate_size']}, vocabulary {c['vocab_size']}, random weights): forward, loss, "
                 "backward and an AdamW step.", "",
                 table(["variant", "ms per step", "first loss"],
                       [[labels.get(k, k), ms(v), f"{r['first_loss'][k]:.6f}"] for k, v in r["median_ms"].items()]), "",
                 ", ".join(f"{k.replace('_vs_', ' vs ').replace('_', ' ')}: {v:.3f}×" for k, v in r["speedup"].items()),
                 ""]
        body += _graph_lines(train.get("graphs", {}), labels, "")
        body.append("")
    body += [provenance_note(d, name, threads=d["environment"].get("threads")), ""]
    return page("torch.compile and eager: patched vs stock", res, body)


def census(res: Results) -> str:
    body = []
    for name in res.names("norm_census_transformers-*.json"):
        d = res.get(name)
        skipped = [r for r in d["rows"] if r["status"] == "skipped"]
        body += [f"## transformers {d['transformers']}", "",
                 f"{len(d['rows'])} norm classes: " + ", ".join(f"{v} {k}" for k, v in d["counts"].items()) + ".", "",
                 table(["variant (patched classes)", "classes"], sorted(d["variants"].items(), key=lambda kv: -kv[1])), "",
                 "Classes left alone, and why:", "",
                 table(["class", "reason"], [[f"`{r['class'].rsplit('.', 1)[-1]}`",
                                              _short(r.get("reason", ""), 160)] for r in skipped]),
                 "", provenance_note(d, name), ""]
    return page("Norm class census", res, body)


def headline_rows(res: Results, prefix: str) -> List[List[str]]:
    """The README's headline: one row per figure, each linking to its page (``prefix`` + page name)."""
    rows = []
    o = res.get(OPTIMIZE)
    b, s = o["budget"]["primary_cell"]["batch"], o["budget"]["primary_cell"]["seq"]
    cell = {r["variant"]: r for r in o["rows"] if (r["batch"], r["seq"]) == (b, s)}
    fast, fp = cell[o["chosen"]], cell["pytorch-fp32"]
    rows.append([f"`hf-lnorm optimize`, chosen route (`{o['chosen']}`) vs PyTorch fp32, batch {b} × seq {s}",
                 f"{fast['speedup_vs_stock']:.2f}×, F1 {fast['f1']:.1f} vs {fp['f1']:.1f}, span agreement {fast['agreement']:.3f}",
                 f"CPU, {o['threads']} threads, {date(o)}", f"[optimize]({prefix}optimize.md)"])
    q = res.get("bench_quantized_qa-minilm.json")
    by = {r["variant"]: r for r in q["rows"]}
    for v, what in (("hf_lnorm-int8", "default: every Linear"), ("hf_lnorm-int8-readers", "norm readers only")):
        if v in by and by[v].get("median_ms"):
            rows.append([f"`mode=\"quantized\"` ({what}) vs fp32 / torch dynamic int8, batch {q['batch']} × seq {q['seq']}",
                         f"{ratio(by['fp32']['median_ms'], by[v]['median_ms'])} / "
                         f"{ratio(by['torch-dynamic-int8']['median_ms'], by[v]['median_ms'])}, span agreement {by[v]['value']}",
                         f"CPU, {q['threads']} threads, {date(q)}", f"[quantized]({prefix}quantized.md)"])
    n = res.get("bench_norms_cpu_fwd.json")
    t = {r["impl"]: r["median_ms"] for r in n["results"]
         if r["op"] == "add_layer_norm" and (r["tokens"], r["hidden"]) == (4096, 768) and r["pass"] == "fwd"}
    rows.append(["add + LayerNorm kernel vs torch eager, 4096×768 fp32 forward", ratio(t.get("torch"), t.get("hf_lnorm")),
                 f"CPU, {n['threads']} threads, {date(n)}", f"[CPU kernels]({prefix}norms_cpu.md)"])
    qa = res.get("qa_eval_patch_modes.json")
    a = qa["results"]
    modes = [m for m in a if m != "none"]
    rows.append([f"QA F1, stock vs {' / '.join(f'`{m}`' for m in modes)}, {qa['dev_questions']} questions",
                 f"{a['none']['eval_f1']:.2f} vs " + " / ".join(f"{a[m]['eval_f1']:.2f}" for m in modes),
                 f"CPU, {date(qa)}", f"[QA per patch mode]({prefix}qa_patch_modes.md)"])
    t = res.get(TRANSLATION)
    f = t["final"]
    rows.append(["Translation recipe default: LNormSeq2Seq from scratch, KJV → Reina-Valera, held-out books",
                 f"BLEU {f['eval_bleu']:.1f} / chrF {f['eval_chrf']:.1f} (copy the source: {f['eval_copy_source_bleu']:.1f} / "
                 f"{f['eval_copy_source_chrf']:.1f}), {f['train_wall_s'] / 60:.0f} min of training",
                 f"CPU, {date(t)}", f"[translation]({prefix}translation.md)"])
    g = res.get("bench_norms_cuda_h100_graph.json")
    t = {r["impl"]: r["median_ms"] for r in g["results"] if r["op"] == "layer_norm" and r["dtype"] == "float32"
         and (r["tokens"], r["hidden"]) == (4096, 1024) and r["pass"] == "fwd"}
    rows.append(["LayerNorm kernel vs torch, 4096×1024 fp32 forward, CUDA-graph timing", ratio(t.get("torch"), t.get("hf_lnorm")),
                 f"{g['device_name']}, {date(g)}", f"[GPU kernels]({prefix}norms_gpu.md)"])
    return rows


HEADER = ["result", "figure", "measured on", "details"]
PAGES: List[Tuple[str, str, Callable[[Results], str]]] = [
    ("norms_cpu.md", "CPU norm kernels against torch eager, end to end, cache limits", norms_cpu),
    ("norms_gpu.md", "Triton norm kernels on an NVIDIA H100", norms_gpu),
    ("quantized.md", "int8 norms and GEMMs: speed, span agreement, perplexity, encoder-decoder agreement", quantized),
    ("optimize.md", "`hf-lnorm optimize`: every route's speed and accuracy; ONNX Runtime operators", optimize),
    ("qa_patch_modes.md", "QA exact match and F1 per patch mode", qa_patch_modes),
    ("families.md", "the model families' trained results and the fine-tuning recipes", families),
    ("translation.md", "the translation recipe's default: BLEU / chrF, learning curve, sample translations", translation),
    ("generate.md", "LNormGPT generation speed against GPT-2", generate),
    ("compile.md", "patched vs stock, eager and under `torch.compile`", compile_page),
    ("census.md", "every norm class in transformers and what `hf_lnorm.patch` does with it", census),
]


def render(root: Path) -> Dict[str, str]:
    """Every generated file's text, keyed by its path relative to ``root``."""
    folder = root / "data" / "results"
    out: Dict[str, str] = {}
    index_rows = []
    for filename, what, fn in PAGES:
        res = Results(folder)
        out[f"docs/results/{filename}"] = fn(res)
        index_rows.append([f"[{filename[:-3]}]({filename})", what, ", ".join(f"`{n}`" for n in res.used)])
    res = Results(folder)
    headline = headline_rows(res, "")
    out["docs/results/index.md"] = page("Results", res, [
        "## Headline", "", table(HEADER, headline), "", "## Pages", "",
        table(["page", "what", "source JSONs (under `data/results/`)"], index_rows), ""])
    readme = (root / "README.md").read_bytes().decode("utf-8")
    if readme.count(START) != 1 or readme.count(END) != 1 or readme.index(START) > readme.index(END):
        raise SystemExit(f"render_results: error: {root / 'README.md'} needs one {START} line followed by one {END} line")
    before, rest = readme.split(START, 1)
    after = rest.split(END, 1)[1]
    block = table(HEADER, headline_rows(Results(folder), "docs/results/"))
    out["README.md"] = f"{before}{START}\n{block}\n{END}{after}"
    return out


def write_atomic(path: Path, text: str) -> None:
    """Write under a temporary name in the same folder, then rename into place (mode 0o666 less the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp) if os.path.exists(tmp) else None
        raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1]),
                        help="repository root holding data/results, docs/results and README.md (default: this checkout)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 listing the files that differ")
    args = parser.parse_args(argv)
    root = Path(args.root)
    if not (root / "data" / "results").is_dir():
        parser.error(f"--root {args.root!r} has no data/results folder")
    rendered = render(root)
    stale = []
    for rel, text in rendered.items():
        path = root / rel
        current = path.read_bytes().decode("utf-8") if path.is_file() else None
        if current == text:
            continue
        if args.check:
            if current is None:
                stale.append(f"{rel}: missing")
            else:
                old, new = current.splitlines(), text.splitlines()
                line = next((i for i, (x, y) in enumerate(zip(old, new)) if x != y), min(len(old), len(new)))
                stale.append(f"{rel}: differs from its JSON from line {line + 1}")
        else:
            write_atomic(path, text)
            print(f"wrote {rel}")
    if stale:
        print("render_results: these files are not what data/results renders to "
              "(run python scripts/render_results.py):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    if args.check:
        print(f"render_results: {len(rendered)} files match data/results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
