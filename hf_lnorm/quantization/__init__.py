"""Int8 norms and the int8 Linear layers that read them: ``patch(model, mode="quantized")``.

Importing this package registers the mode. The int8 math itself lives in
``hf_lnorm.norms.int8``; here are the parts that need patching: the mode
(``mode.py``), the per-instance int8 Linear layers (``linear.py``), the trace
that finds them (``trace.py``) and ``calibrate`` / ``smooth`` (``calibration.py``).

What the mode does
------------------
* **Norms** compute in fp32 exactly like ``fused`` mode, then quantize their
  output to int8 with one symmetric scale per token (row): ``q = round(y / s)``,
  ``s = max|y_row| / 127``. The int8 tensor and its scales are stashed on the
  norm; the float tensor the norm returns is the exact norm output, so
  non-Linear readers (a residual path, a pooler) see correct float values.
* **Consumers**: the ``nn.Linear`` (and GPT-2 ``Conv1D``) layers that read a
  norm's output are found by tracing one forward pass and matching tensor
  identity (the tensor a norm returned *is* the tensor a Linear received) -
  no per-architecture table. Each consumer is patched per instance: when it is
  called with the very tensor its norm stashed, it reuses the int8 activation
  (quantized once, shared by Q/K/V) and runs an int8 x int8 -> int32 GEMM with
  per-output-channel int8 weights, dequantizing with ``s_row * s_col``.
  Called with anything else it quantizes that input per token itself.
* **Other Linears** (``all_linears=True``, the default): every other
  ``nn.Linear`` / ``Conv1D`` the trace saw (attention output, FFN down
  projection, heads) runs the same int8 GEMM, quantizing its input per token
  inside the layer. ``all_linears=False`` keeps them in float and runs only the
  norms' readers in int8.
* **Norms with no Linear consumer** quantize-dequantize their output and are
  reported as such (``NormRecord.extra["int8"] == "qdq"``).
* ``calibrate(model, batches)`` records per-channel activation ranges of every
  quantized norm; ``calibrate(..., static=True)`` switches the norms to the
  calibrated per-tensor scale. ``smooth(model, batches, alpha)`` computes
  SmoothQuant scales ``s_k = amax_act_k**alpha / amax_w_k**(1 - alpha)`` and
  folds them in: the norm's int8 output becomes ``quantize(norm(x) / s)`` (the
  same as a norm with gain ``w / s`` and bias ``b / s``) and each consumer's
  int8 weight becomes ``quantize(W * s)``. ``fold_smoothing`` is that fold on
  plain tensors; it is exact in float (tested).

Kernels (``kernel=`` mode option, default ``"auto"``): ``"onednn"`` (x86 CPU),
``"int_mm"`` (CUDA) or ``"reference"`` (any device, same numbers); see
``hf_lnorm.norms.int8``.

State while patched
-------------------
Float parameters are never modified: the int8 weights, scales and smoothing
vectors live in plain instance attributes (``_hf_lnorm_int8``) and in the norm's
patch state, not in parameters or buffers. So ``state_dict()`` of a
quantized-patched model is byte-identical to the float model's (saving it saves
the float model) and ``unpatch`` restores everything by deleting attributes.

Example inputs for the trace
----------------------------
``patch(model, mode="quantized", example_inputs=...)`` takes a dict of keyword
arguments, a tuple of positional arguments, or one tensor. Without it, inputs
are built from ``model.config`` by ``hf_lnorm.inputs.dummy_inputs`` (batch 2,
16 tokens; images, audio and log-mel features at their config sizes), chosen
by ``model.main_input_name``.
A model for which neither works is patched with quantize-dequantize norms only,
and the report says why.

torch.ao quantized models
-------------------------
``hf_lnorm.norms.int8.QuantizedTensorLayerNorm`` is a dequantize -> LayerNorm -> requantize
module for models that pass ``torch.ao`` quantized tensors between layers. It
requantizes with output parameters of its own (observed by calibration, or
computed from the output), not with the input's scale, which would clip or waste
the output range because LayerNorm rescales its input. A quantized-mode norm
that receives a quantized tensor takes the same path.

Quantized mode is for inference: int8 paths carry no gradient.

Examples:
    >>> import torch, hf_lnorm
    >>> block = torch.nn.Sequential(torch.nn.LayerNorm(32), torch.nn.Linear(32, 64))
    >>> block = hf_lnorm.patch(block, mode="quantized", example_inputs=torch.randn(4, 32))
    >>> hf_lnorm.patch_report(block)[0].extra["consumers"]
    ['1']
    >>> block = hf_lnorm.unpatch(block)
"""

from .calibration import calibrate, smooth
from .linear import LINEAR_ATTR, int8_layers
from .mode import MODE_NAME, QuantizedMode
from .trace import example_inputs_for, trace_consumers

__all__ = [
    "LINEAR_ATTR",
    "MODE_NAME",
    "QuantizedMode",
    "calibrate",
    "example_inputs_for",
    "int8_layers",
    "smooth",
    "trace_consumers",
]
