"""Run a QA model's norms and Linears in int8 and measure what that costs against fp32.

`hf_lnorm.patch(model, mode="quantized")` makes every Linear int8 (`all_linears=False`:
only the Linears that read a norm); `hf_lnorm.smooth` and `hf_lnorm.calibrate(static=True)`
tune the int8 scales on calibration questions (`resources.QA_CALIBRATION_FILE`, never the
evaluation questions). Each variant is scored on held-out questions (`resources.QA_EVAL_FILE`):
answer-span agreement with fp32, EM/F1 and the largest logit error. Inference only.

    python examples/quantize_and_check.py                       # the bundled MiniLM QA model, 600 questions
    python examples/quantize_and_check.py --model path/to/qa-model
    python examples/quantize_and_check.py --quick               # 12 questions
"""

import argparse
import json
import os
import tempfile

import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

import hf_lnorm
from hf_lnorm.export.qa import best_spans, encode, exact_match_f1, load_squad, span_agreement, span_texts
from hf_lnorm.loading import default_qa_model
from hf_lnorm.resources import QA_CALIBRATION_FILE, QA_EVAL_FILE, data_file


def batches(inputs, size):
    n = len(inputs["input_ids"])
    return [{k: torch.from_numpy(v[i:i + size]) for k, v in inputs.items()} for i in range(0, n, size)]


def logits(model, inputs):
    with torch.no_grad():
        outs = [model(**batch) for batch in batches(inputs, 32)]
    return torch.cat([o.start_logits for o in outs]).numpy(), torch.cat([o.end_logits for o in outs]).numpy()


def static_scales(model, calibration_batches):  # one calibrated int8 scale per norm instead of per-token scales
    hf_lnorm.calibrate(model, calibration_batches, static=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="extractive-QA model folder or Hub id (default: the bundled MiniLM QA model)")
    parser.add_argument("--quick", action="store_true", help="12 evaluation and 8 calibration questions of 128 tokens")
    parser.add_argument("--output-dir", help="new folder for results.json (default: a fresh temporary folder)")
    args = parser.parse_args()
    if args.output_dir and os.path.exists(args.output_dir):
        parser.error(f"--output-dir {args.output_dir!r} already exists; pass a new folder")
    path = args.model or default_qa_model()[0]
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForQuestionAnswering.from_pretrained(path).eval()
    n_eval, n_calib, seq_len = (12, 8, 128) if args.quick else (None, 32, 384)
    enc = encode(tokenizer, load_squad(data_file(*QA_EVAL_FILE), limit=n_eval), seq_len)
    calib = batches(encode(tokenizer, load_squad(data_file(*QA_CALIBRATION_FILE), limit=n_calib), seq_len).inputs, 8)

    ref = logits(model, enc.inputs)
    ref_spans = best_spans(*ref, enc)
    rows = [("fp32", 1.0, *exact_match_f1(span_texts(ref_spans, enc), enc.examples), 0.0)]
    readers = {"all_linears": False}
    for name, options, tune in [("int8 all Linears (default)", {}, None), ("int8 norm readers", readers, None),
                                ("int8 norm readers + smooth", readers, hf_lnorm.smooth),
                                ("int8 norm readers + static scales", readers, static_scales)]:
        hf_lnorm.patch(model, mode="quantized", **options)
        if tune is not None:
            tune(model, calib)
        out = logits(model, enc.inputs)
        spans = best_spans(*out, enc)
        err = max(float(abs(out[0] - ref[0]).max()), float(abs(out[1] - ref[1]).max()))
        rows.append((name, span_agreement(spans, ref_spans), *exact_match_f1(span_texts(spans, enc), enc.examples), err))
        hf_lnorm.unpatch(model)  # back to fp32 for the next variant

    print(f"{len(enc.examples)} evaluation questions, {seq_len} tokens, {n_calib} calibration questions")
    print(f"{'variant':36s} {'agreement':>9s} {'EM':>6s} {'F1':>6s} {'max |logit err|':>15s}")
    for name, agreement, em, f1, err in rows:
        print(f"{name:36s} {agreement:9.1%} {em:6.1f} {f1:6.1f} {err:15.3f}")
    output = os.path.join(args.output_dir or tempfile.mkdtemp(prefix="quantize_and_check-"), "results.json")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as f:
        json.dump([dict(zip(("variant", "agreement", "em", "f1", "max_logit_err"), row)) for row in rows], f, indent=2)
    print(f"results written to {output}")


if __name__ == "__main__":
    main()
