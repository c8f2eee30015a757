"""Helpers shared by the ONNX Runtime modules: path type and atomic ONNX saves."""

from __future__ import annotations

from pathlib import Path
from typing import Union

from ..._json import staged_file

PathLike = Union[str, Path]


def _save_atomically(model, output_path: PathLike) -> None:
    """``onnx.save`` to a hidden temporary name beside ``output_path``, then rename: no half-written graph."""
    import onnx

    with staged_file(output_path) as tmp:
        onnx.save(model, tmp)
