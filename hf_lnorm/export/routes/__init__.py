"""The routes ``hf-lnorm optimize`` tries: one module per runtime, each exporting ``ROUTES``.

    pytorch.py    PyTorch eager fp32, patched, torch.compile, hf_lnorm int8, torch's dynamic int8
    ort.py        ONNX Runtime fp32 and its int8 variants
    openvino.py   OpenVINO fp32/bf16 and NNCF int8 variants

``all_routes()`` lists them in report order. Adding a runtime means adding a module here
and its name to ``ROUTE_MODULES``.
"""

from __future__ import annotations

import importlib
from typing import List

from .base import Built, Feed, Outputs, Route, RouteContext, Runner

ROUTE_MODULES = ("pytorch", "ort", "openvino")

__all__ = ["Built", "Feed", "Outputs", "ROUTE_MODULES", "Route", "RouteContext", "Runner", "all_routes"]


def all_routes() -> List[Route]:
    """Every route of every module in ``ROUTE_MODULES``, in order (the modules import their runtimes lazily)."""
    routes: List[Route] = []
    for name in ROUTE_MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        routes.extend(module.ROUTES)
    return routes
