"""Export Hugging Face models (patched or not, hf_lnorm families included) to ONNX.

``export(model, output)`` writes an ONNX model that ONNX Runtime, Optimum's
``ORTModelFor*`` classes and TensorRT can load: Optimum's exporter where
optimum-onnx is installed (transformers 4.57), ``torch.onnx.export`` (dynamo)
otherwise. The implementation lives in ``hf_lnorm.export.onnx``; this package
keeps the public names.

Examples:
    ```python
    from hf_lnorm.export import export

    result = export("path/to/bert", "bert-onnx", task="question-answering")
    print(result.method, result.onnx_files, result.max_abs_err)
    ```
"""

from .onnx import (
    DEFAULT_OPSET,
    DYNAMO_MIN_OPSET,
    METHOD_DYNAMO,
    METHOD_OPTIMUM,
    MIN_OPSET,
    TARGETS,
    TASKS,
    ExportResult,
    ModelNotFoundError,
    OutputExistsError,
    UnsafeOutputError,
    UnsupportedArchitectureError,
    check_output_dir,
    default_method,
    dummy_inputs,
    export,
    family_onnx_configs,
    infer_task,
    input_spec,
    input_spec_for_trt,
    load_model,
    onnx_files_in,
    onnx_op_types,
    onnx_opset,
    optimum_available,
    resolve_model,
    staged_output_dir,
    standard_op_problems,
    verify_onnx,
)

__all__ = [
    "DEFAULT_OPSET",
    "ExportResult",
    "ModelNotFoundError",
    "OutputExistsError",
    "TASKS",
    "UnsafeOutputError",
    "UnsupportedArchitectureError",
    "default_method",
    "dummy_inputs",
    "export",
    "infer_task",
    "load_model",
    "onnx_op_types",
    "onnx_opset",
    "optimum_available",
    "standard_op_problems",
    "staged_output_dir",
    "verify_onnx",
]
