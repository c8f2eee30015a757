"""Export a patched QA model to ONNX, answer questions with ONNX Runtime, and compare with PyTorch.

`hf_lnorm.export.export` writes the graph with Optimum's exporter where optimum-onnx is
installed (transformers 4.57) and `torch.onnx.export` (dynamo) otherwise; patched norms
become the standard `LayerNormalization` op. The file runs in a plain `onnxruntime.InferenceSession`.

    python examples/export_and_serve_ort.py                      # the bundled MiniLM QA model, 600 questions
    python examples/export_and_serve_ort.py --model path/to/qa-model
    python examples/export_and_serve_ort.py --quick              # 8 questions of 128 tokens
"""

import argparse
import os
import tempfile

import numpy as np
import onnxruntime as ort
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

import hf_lnorm
from hf_lnorm.export import export
from hf_lnorm.export.qa import best_spans, encode, exact_match_f1, load_squad, span_agreement, span_texts
from hf_lnorm.loading import default_qa_model
from hf_lnorm.resources import QA_EVAL_FILE, data_file


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="extractive-QA model folder or Hub id (default: the bundled MiniLM QA model)")
    parser.add_argument("--quick", action="store_true", help="8 questions of 128 tokens")
    parser.add_argument("--output-dir", help="new folder for the ONNX model (default: a fresh temporary folder)")
    args = parser.parse_args()
    if args.output_dir and os.path.exists(args.output_dir):
        parser.error(f"--output-dir {args.output_dir!r} already exists; pass a new folder")
    path = args.model or default_qa_model()[0]
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = hf_lnorm.patch(AutoModelForQuestionAnswering.from_pretrained(path).eval())
    output_dir = os.path.join(args.output_dir or tempfile.mkdtemp(prefix="export_and_serve_ort-"), "onnx")
    # verify=False: this script compares ONNX Runtime with PyTorch itself, on real questions
    result = export(model, output_dir, task="question-answering", verify=False)
    onnx_file = result.onnx_files[0]
    print(f"exported {result.output_dir / onnx_file} ({result.method}, opset {result.opset}, "
          f"{result.op_types[onnx_file]['LayerNormalization']} LayerNormalization ops)")

    session = ort.InferenceSession(str(result.output_dir / onnx_file), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    n_questions, seq_len = (8, 128) if args.quick else (None, 384)
    enc = encode(tokenizer, load_squad(data_file(*QA_EVAL_FILE), limit=n_questions), seq_len)
    ort_out, torch_out = [], []
    for i in range(0, len(enc.examples), 16):
        batch = {k: v[i:i + 16] for k, v in enc.inputs.items() if k in names}  # int64 numpy arrays
        ort_out.append(dict(zip([o.name for o in session.get_outputs()], session.run(None, batch))))
        with torch.no_grad():
            torch_out.append(model(**{k: torch.from_numpy(v) for k, v in batch.items()}))
    ort_logits = [np.concatenate([o[key] for o in ort_out]) for key in ("start_logits", "end_logits")]
    torch_logits = [torch.cat([o[key] for o in torch_out]).numpy() for key in ("start_logits", "end_logits")]
    ort_spans, torch_spans = best_spans(*ort_logits, enc), best_spans(*torch_logits, enc)
    answers = span_texts(ort_spans, enc)

    first = enc.examples[0]
    print(f"question: {first.question}\nONNX Runtime answer: {answers[0]!r} "
          f"(PyTorch: {span_texts(torch_spans, enc)[0]!r}, reference: {first.answers[0]!r})")
    em, f1 = exact_match_f1(answers, enc.examples)
    print(f"{len(enc.examples)} questions: ONNX Runtime EM {em:.1f} F1 {f1:.1f}, "
          f"span agreement with PyTorch {span_agreement(ort_spans, torch_spans):.1%}")
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ort_logits, torch_logits))
    print(f"max |ONNX Runtime - PyTorch| logits: {diff:.2e}")


if __name__ == "__main__":
    main()
