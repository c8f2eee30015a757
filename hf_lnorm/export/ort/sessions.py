"""ONNX Runtime CPU inference sessions and their input feeds."""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np

from ._common import PathLike

__all__ = ["SPINNING_KEY", "feed_for", "session"]


SPINNING_KEY = "session.intra_op.allow_spinning"


def session(path: PathLike, threads: Optional[int] = None, spinning: bool = True):
    """A CPU ``InferenceSession`` with all graph optimizations on.

    ORT's own warnings are silenced (log severity 3: errors only).

    Args:
        path: ONNX file.
        threads: intra-op threads; default: ORT's choice (all cores).
        spinning: let the intra-op worker threads spin (busy-wait) after a run, ORT's default. Pass False when
            several sessions or libraries take turns on the same cores: a spinning pool keeps the cores busy
            after its run and slows whatever runs next (``scripts/ort_cpu_ops.py`` measures it).

    Returns:
        (onnxruntime.InferenceSession): a session on the ``CPUExecutionProvider``.

    Examples:
        ```python
        from hf_lnorm.export.ort import feed_for, session

        sess = session("bert-onnx/model.onnx", threads=4, spinning=False)
        start_logits, end_logits = sess.run(None, feed_for(sess, tokenizer("...", return_tensors="np")))
        ```
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry(SPINNING_KEY, "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feed_for(sess, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The subset of ``inputs`` the session takes, as numpy arrays.

    Extra entries (a tokenizer's ``token_type_ids`` for a graph without them)
    are dropped; each value goes through ``np.asarray`` unchanged in dtype.

    Args:
        sess (onnxruntime.InferenceSession): the session that will run the feed.
        inputs: ``{name: array}``, for example a tokenizer's output with ``return_tensors="np"``.

    Returns:
        ``{name: array}`` for exactly the session's inputs, in its input order.

    Raises:
        ValueError: an input the session needs is missing (names it and what was given).

    Examples:
        ```python
        from hf_lnorm.export.ort import feed_for, session

        sess = session("model.onnx")
        outputs = sess.run(None, feed_for(sess, {"input_ids": ids, "attention_mask": mask, "unused": ids}))
        ```
    """
    names = [i.name for i in sess.get_inputs()]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ValueError(f"the ONNX model needs inputs {missing} that were not given (given: {sorted(inputs)})")
    return {n: np.asarray(inputs[n]) for n in names}
