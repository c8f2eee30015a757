"""ONNX Runtime CPU inference sessions and their input feeds."""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np

from ._common import PathLike

__all__ = ["feed_for", "session"]


def session(path: PathLike, threads: Optional[int] = None):
    """A CPU ``InferenceSession`` with all graph optimizations on.

    Args:
        path: ONNX file.
        threads: intra-op threads; default: ORT's choice (all cores).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feed_for(sess, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The subset of ``inputs`` the session takes, as int64 / float32 arrays."""
    names = [i.name for i in sess.get_inputs()]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ValueError(f"the ONNX model needs inputs {missing} that were not given (given: {sorted(inputs)})")
    return {n: np.asarray(inputs[n]) for n in names}
