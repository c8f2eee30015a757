"""Deprecated location of the quantized-mode names: they live in ``hf_lnorm.norms.int8`` and ``hf_lnorm.quantization``.

``from hf_lnorm.norms.quantized import X`` still works for every name that used
to be defined here and gives the same object as the new location, with a
``DeprecationWarning`` that names it. The lookup is lazy (a module
``__getattr__``), so importing this module does not import the patch layer.
"""

import warnings

_INT8 = "hf_lnorm.norms.int8"
_QUANTIZATION = "hf_lnorm.quantization"

# old name -> (new module, new name)
MOVED = {
    **{name: (_INT8, name) for name in (
        "ACT_QMAX", "KERNELS", "Int8Weight", "QuantizedActivation", "QuantizedTensorLayerNorm", "fold_smoothing",
        "int8_linear", "quantize_activation", "quantize_dequantize", "quantize_per_token", "quantize_weight",
        "resolve_kernel", "smoothing_scales", "swap_layer_norms_for_quantized_tensors",
        "_CompiledQuantizer", "_onednn_weight_qmax", "_quantize_rows_u8",
    )},
    "_check_alpha": (_INT8, "check_alpha"),
    **{name: (_QUANTIZATION, name) for name in (
        "LINEAR_ATTR", "MODE_NAME", "QuantizedMode", "calibrate", "example_inputs_for", "int8_layers", "smooth",
        "trace_consumers",
    )},
}


def __getattr__(name: str):
    """Resolve a moved name from its new module, warning with the new import path.

    Raises:
        AttributeError: ``name`` was never defined here.
    """
    try:
        module, new_name = MOVED[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    warnings.warn(f"hf_lnorm.norms.quantized.{name} has moved: use 'from {module} import {new_name}'",
                  DeprecationWarning, stacklevel=2)
    if module == _INT8:
        from . import int8 as target
    else:
        from .. import quantization as target  # above norms: only this shim reaches up, lazily
    return getattr(target, new_name)


def __dir__():
    return sorted(set(globals()) | set(MOVED))
