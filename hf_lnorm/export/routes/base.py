"""What every route of ``hf-lnorm optimize`` provides, and what the job hands it.

A *route* turns the fp32 model into one deployable variant (PyTorch, ONNX Runtime,
OpenVINO, ...). The job (``hf_lnorm.export.optimize``) only loops: for each available
route it calls ``build(ctx)``, then evaluates and times the returned runner beside
every other route's, picks the fastest one within the accuracy budget and asks it to
``deploy`` itself. A new runtime is one new module under ``hf_lnorm.export.routes``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

Feed = Dict[str, np.ndarray]
Outputs = Tuple[np.ndarray, ...]
Runner = Callable[[Feed], Outputs]


@dataclass
class RouteContext:
    """What the job gives every route's ``build``.

    Attributes:
        model: the fp32 model as loaded (eval mode). A route that changes it works on a copy.
        tokenizer: its fast tokenizer.
        task: ``"question-answering"``, ``"text-classification"`` or ``"token-classification"``.
        output_names: the model outputs a runner returns, in order (``("start_logits", "end_logits")`` for QA,
            ``("logits",)`` otherwise).
        workdir: a folder for this route only (inside the job's staged output); everything it writes goes here.
        threads: intra-op threads for the runtime (the job's ``--threads``, resolved: never 0).
        calibration: calibration feeds from the training split (never the evaluation questions), one dict of
            int64 arrays per batch; empty when the job has none.
        shapes: the ``(batch, seq)`` cells the runner will be timed at (a route may specialise to them).
        onnx_path: the plain fp32 ONNX export, shared by the routes that need one (``Route.needs_onnx``);
            None for routes that do not ask for it.
        fused_onnx: ORT's fused fp32 graph, when the job built one (``Route.needs_fused_onnx``), else None.
        extra: job-wide options a route may read (``smooth_alpha``, ``opset``, ``seed``, ...).
        shared: one dict the job hands every route of a run, for work two routes can reuse (a quantized model
            both build on); keys are prefixed with the route module's name.
    """

    model: Any
    tokenizer: Any
    task: str
    output_names: Tuple[str, ...]
    workdir: Path
    threads: int
    calibration: List[Feed] = field(default_factory=list)
    shapes: Sequence[Tuple[int, int]] = ()
    onnx_path: Optional[Path] = None
    fused_onnx: Optional[Path] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    shared: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Built:
    """A built route.

    Attributes:
        runner: numpy feed (``input_ids``, ``attention_mask``, maybe ``token_type_ids``, int64) -> outputs in
            ``ctx.output_names`` order, float32 numpy. It may specialise itself per input shape on first call
            (a static-shape compile); that first call is never timed.
        deploy: writes a folder at the given (not yet existing, or empty) path that a user loads in one line;
            the job adds the tokenizer and a README. None: the route cannot be saved (stated in ``notes``).
        load_hint: the one line that loads the deployed folder, e.g.
            ``"ORTModelForQuestionAnswering.from_pretrained(PATH)"``.
        notes: what the route did (choices made, counts), for the report.
        info: JSON-ready details for the report (chosen alpha, excluded layers, precision, ...).
    """

    runner: Runner
    deploy: Optional[Callable[[Path], None]] = None
    load_hint: Optional[str] = None
    notes: List[str] = field(default_factory=list)
    info: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Route:
    """One variant the job can build.

    Attributes:
        name: the report row name, e.g. ``"ort-int8-per-token"``, ``"openvino-int8-default"``.
        runtime: ``"pytorch"``, ``"onnxruntime"`` or ``"openvino"``.
        description: one line for the report and ``--help``.
        build: ``build(ctx) -> Built``.
        requires: importable modules it needs (checked before any work; a missing one skips the route with a
            warning naming the pip command in ``install_hint``).
        needs_onnx / needs_fused_onnx: whether the job must export (and ORT-fuse) before building it.
        reference: True for the off-the-shelf baselines a user would pick instead (PyTorch fp32 eager,
            torch.compile, torch's dynamic int8, OpenVINO's default int8, ...); the job reports them and can
            choose them too.
        tasks: the tasks it supports.
    """

    name: str
    runtime: str
    description: str
    build: Callable[[RouteContext], Built]
    requires: Tuple[str, ...] = ()
    install_hint: str = ""
    needs_onnx: bool = False
    needs_fused_onnx: bool = False
    reference: bool = False
    tasks: Tuple[str, ...] = ("question-answering", "text-classification", "token-classification")

    def missing(self) -> List[str]:
        """The modules in ``requires`` that cannot be imported here."""
        out = []
        for module in self.requires:
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                out.append(module)
        return out
