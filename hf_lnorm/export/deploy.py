"""Deployable folders of ``hf-lnorm optimize``: writing one, its README, loading it in one line, and checking it.

A route's ``load_hint`` is one Python expression in ``PATH`` (the folder, a string), for example
``onnxruntime.InferenceSession(PATH + "/model.onnx")`` or
``hf_lnorm.patch(AutoModelForQuestionAnswering.from_pretrained(PATH).eval())``. ``load`` evaluates it, importing
each name it uses (a module such as ``onnxruntime`` or ``torch``, or a class of ``transformers``, Optimum's
``optimum.onnxruntime`` or ``optimum.intel``); ``import_lines`` writes the same imports for the README.
``runner_for`` turns what it returns (a PyTorch module, a compiled module, an ONNX Runtime session, an
OpenVINO compiled model, an Optimum model) into a numpy runner.

``verify`` loads a written folder in a fresh Python process through its load line, answers the evaluation data
with the folder's own tokenizer and returns how many answers equal the ones the job recorded.

Examples:
    ```python
    from hf_lnorm.export import deploy

    model = deploy.load("hf-lnorm-optimized/model", 'onnxruntime.InferenceSession(PATH + "/model.onnx")')
    run = deploy.runner_for(model, ("start_logits", "end_logits"))
    ```
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .._json import write_json
from .openvino import telemetry_off

__all__ = ["EVAL_BATCH", "batched", "import_lines", "load", "readme", "runner_for", "verify", "write_folder"]

EVAL_BATCH = 8  # evaluation batch size; dynamic int8 scales depend on the batch, so the job and verify share it

_SEARCH = ("transformers", "optimum.onnxruntime", "optimum.intel", "hf_lnorm")


def _resolve(name: str) -> Tuple[str, Optional[str], Any]:
    """``(module, attribute or None, object)`` for a top-level name of a load hint.

    The imports run with OpenVINO's telemetry off (importing ``openvino`` or ``optimum.intel`` initialises it)."""
    with telemetry_off():
        try:
            return name, None, importlib.import_module(name)
        except ImportError:
            pass
        for module_name in _SEARCH:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            if hasattr(module, name):
                return module_name, name, getattr(module, name)
    raise NameError(f"load hint name {name!r} is neither a module nor a class of {', '.join(_SEARCH)}")


def _names(hint: str) -> List[str]:
    tree = ast.parse(hint, mode="eval")
    found: List[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id != "PATH" and node.id not in found:
            found.append(node.id)
    return found


class _Namespace(dict):
    """Names of a load hint, imported on first use."""

    def __missing__(self, name: str):
        value = _resolve(name)[2]
        self[name] = value
        return value


def import_lines(hint: str, strict: bool = True) -> List[str]:
    """The import statements a load hint needs (``import torch``, ``from transformers import AutoModel...``).

    Args:
        hint: the load hint.
        strict: raise for a name that cannot be imported here; False writes a comment line naming it instead.

    Raises:
        NameError: ``strict`` and a name of the hint cannot be imported.
    """
    lines = []
    for name in _names(hint):
        try:
            module, attr, _ = _resolve(name)
        except NameError:
            if strict:
                raise
            lines.append(f"# {name}: not importable where this folder was written; install the package that provides it")
            continue
        lines.append(f"import {module}" if attr is None else f"from {module} import {attr}")
    return lines


def load(path, hint: str):
    """Evaluate a route's load hint with ``PATH`` bound to ``str(path)`` (OpenVINO's telemetry off meanwhile).

    Raises:
        NameError: the hint names something that cannot be imported.
    """
    with telemetry_off():  # the hint may import and call OpenVINO or Optimum Intel
        return eval(compile(hint, "<load hint>", "eval"), {"__builtins__": __builtins__}, _Namespace(PATH=str(path)))


def runner_for(model, output_names: Sequence[str]):
    """A numpy runner (feed dict -> outputs in ``output_names`` order) over what a load hint returned."""
    if hasattr(model, "get_inputs") and hasattr(model, "run"):  # onnxruntime.InferenceSession
        names = [o.name for o in model.get_outputs()]
        inputs = [i.name for i in model.get_inputs()]
        index = [names.index(n) for n in output_names]

        def run_ort(feed):
            outs = model.run(None, {k: np.asarray(feed[k]) for k in inputs})
            return tuple(outs[i] for i in index)

        return run_ort
    if type(model).__module__.startswith("openvino"):  # openvino CompiledModel
        inputs = [p.get_any_name() for p in model.inputs]

        def run_ov(feed):
            result = model({k: feed[k] for k in inputs})
            return tuple(np.asarray(result[model.output(n)], dtype=np.float32) for n in output_names)

        return run_ov
    import torch

    def run_torch(feed):
        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed.items()}, return_dict=True)
        return tuple(_as_numpy(out[n]) for n in output_names)

    return run_torch


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().float().numpy()
    return np.asarray(x, dtype=np.float32)


def batched(run, inputs: Mapping[str, np.ndarray], batch: int = EVAL_BATCH) -> Tuple[np.ndarray, ...]:
    """``run`` over ``inputs`` in slices of ``batch`` rows, outputs concatenated."""
    n = next(iter(inputs.values())).shape[0]
    parts = [run({k: v[i : i + batch] for k, v in inputs.items()}) for i in range(0, n, batch)]
    return tuple(np.concatenate(p) for p in zip(*parts))


def _trim_paragraph() -> str:
    from .trimming import PAD_FILL

    return ("The model takes any batch size and sequence length, and runs only up to the last real token of each "
            "batch (by `attention_mask`): the longer the padding of your inputs, the more time it saves, and inputs "
            f"without padding run at the untrimmed model's speed. Its outputs past that token hold {PAD_FILL:g}.")


def readme(route: str, description: str, hint: str, folder_name: str, task, model_description: str, facts: Mapping[str, Any]) -> str:
    """The README of a deployed folder: the one load line, how the route was made, what it measured.

    Args:
        route, description: the route's name and one-line description.
        hint: its load hint (``PATH`` stands for the folder).
        folder_name: what the README calls the folder in its code (``PATH = ...``).
        task: the ``hf_lnorm.export.tasks.Task``.
        model_description: the source model.
        facts: ``notes`` (list), ``calibration`` / ``evaluation`` (one line each), ``rows`` (report rows of this
            route), ``quality`` (dict at the evaluation length), ``machine`` (one line), ``chosen`` (bool), ``why`` (line),
            ``trim_padding`` (bool: the model skips each batch's trailing padding).
    """
    lines = [f"# {route}: {model_description}", "", f"{description}. Written by `hf-lnorm optimize`"
             + (" as the chosen route" if facts.get("chosen") else " as one of the routes it compared") + ".", ""]
    if facts.get("why"):
        lines += [facts["why"], ""]
    lines += ["## Load", "", "```python", *import_lines(hint, strict=False), "from transformers import AutoTokenizer", "",
              f"PATH = {folder_name!r}", f"model = {hint}", "tokenizer = AutoTokenizer.from_pretrained(PATH)", "```", ""]
    if hint.startswith("onnxruntime.InferenceSession"):
        lines += [f"With Optimum (optimum-onnx, transformers 4.57) the folder also loads as "
                  f"`optimum.onnxruntime.{task.optimum_class}.from_pretrained(PATH)`, which works in "
                  f'`transformers.pipeline("{task.pipeline}", model=model, tokenizer=tokenizer)`.', ""]
        if facts.get("trim_padding"):
            lines += [_trim_paragraph(), ""]
    elif hint.startswith("openvino."):
        ov_class = task.optimum_class.replace("ORTModel", "OVModel")
        # The same inference precision as the load line: Optimum Intel otherwise compiles with the plugin's default.
        ov_config = ', ov_config={"INFERENCE_PRECISION_HINT": "f32"}' if '"INFERENCE_PRECISION_HINT": "f32"' in hint else ""
        lines += [f"With Optimum Intel (optimum-intel 1.x on transformers 4.57) the folder also loads as "
                  f"`optimum.intel.{ov_class}.from_pretrained(PATH{ov_config})`, which works in "
                  f'`transformers.pipeline("{task.pipeline}", model=model, tokenizer=tokenizer)`.', ""]
        if facts.get("trim_padding"):
            lines += [_trim_paragraph() + " Compiling it for one static shape (`reshape`) does not make its inner "
                      "length static.", ""]
        else:
            lines += ["The model takes any batch size and sequence length. To serve one input shape only, "
                      f"`optimum.intel.{ov_class}.from_pretrained(PATH{ov_config}, compile=False).reshape(BATCH, SEQ)` "
                      "compiles it for that shape, which the CPU plugin may run faster; it then accepts inputs of that "
                      "shape only (pad to it), and an int8 model's logits, and so some answers, can differ from the "
                      "dynamic-shape model's measured below.", ""]
    else:
        lines += ["The folder holds the fp32 weights (`save_pretrained`); the call around `from_pretrained` above is "
                  "the route.", ""]
    lines += ["## How it was made", ""]
    lines += [f"- {line}" for line in (facts.get("calibration"), facts.get("evaluation")) if line]
    lines += [f"- {note}" for note in facts.get("notes", [])]
    quality = facts.get("quality") or {}
    if quality:
        formats = {"agreement": ".3f", "max_abs_err": ".2e"}
        lines += ["", "## Measured", "", "Quality: " + ", ".join(f"{k.replace('_', ' ')} {format(v, formats.get(k, '.1f'))}"
                                                    for k, v in quality.items() if v is not None) + ".", ""]
    rows = facts.get("rows") or []
    if rows:
        lines += ["| batch | seq | median ms | speedup vs pytorch-fp32 |", "|---|---|---|---|"]
        for r in rows:
            speed = "-" if r.get("speedup_vs_stock") is None else f"{r['speedup_vs_stock']:.2f}x"
            lines.append(f"| {r['batch']} | {r['seq']} | {r['median_ms']:.2f} | {speed} |")
        lines.append("")
    if facts.get("machine"):
        lines += [facts["machine"], ""]
    return "\n".join(lines)


def write_folder(path: Path, built, tokenizer, readme_text: str) -> None:
    """A route's deployable folder: ``built.deploy(path)``, the tokenizer and ``README.md``."""
    path.mkdir(parents=True, exist_ok=True)
    built.deploy(path)
    tokenizer.save_pretrained(path)
    (path / "README.md").write_text(readme_text, encoding="utf-8")


_CHILD = "import sys; from hf_lnorm.export.deploy import _answer; _answer(*sys.argv[1:])"


def _answer(folder: str, hint: str, task_name: str, data: str, limit: str, seq: str, out: str) -> None:
    """Child side of ``verify``: load ``folder`` through ``hint``, answer the data, write the answers to ``out``."""
    import warnings

    from transformers import AutoConfig, AutoTokenizer

    from .tasks import get_task

    task = get_task(task_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load(folder, hint)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    enc = task.encode(tokenizer, task.read(data, int(limit)), int(seq))
    outputs = batched(runner_for(model, task.output_names), enc.inputs)
    write_json(Path(out), task.answers(outputs, enc, config))


def verify(folder: Path, hint: str, task, data: Path, limit: int, seq: int, expected: Mapping[str, Any],
           threads: int = 0, timeout: float = 900.0) -> Dict[str, Any]:
    """Load ``folder`` in a fresh Python process through ``hint`` and compare its answers with ``expected``.

    Args:
        folder: the deployed folder.
        hint: its load hint.
        task: the ``Task``.
        data, limit, seq: the evaluation data file, how many examples, the sequence length (as the job encoded them).
        expected: the job's answers per example id (``answers.json``).
        threads: OMP_NUM_THREADS for the child (0: inherit).
        timeout: seconds before the child is stopped.

    Returns:
        ``{"equal": n, "total": m, "differing": [first ids that differ], "error": None or the child's last line}``.
    """
    import os

    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory(prefix="hf-lnorm-verify-") as tmp:
        out = Path(tmp) / "answers.json"
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(folder), hint, task.name, str(data), str(limit), str(seq), str(out)],
                              capture_output=True, text=True, env=env, timeout=timeout)
        if proc.returncode != 0 or not out.is_file():
            tail = [line for line in proc.stderr.splitlines() if line.strip()]
            return {"equal": 0, "total": len(expected), "differing": [], "error": tail[-1] if tail else f"exit {proc.returncode}"}
        got = json.loads(out.read_text(encoding="utf-8"))
    differing = [k for k in expected if got.get(k) != expected[k]]
    return {"equal": len(expected) - len(differing), "total": len(expected), "differing": differing[:10], "error": None}
