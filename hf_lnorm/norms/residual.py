"""Residual add + LayerNorm fusion inside Hugging Face post-LN blocks.

BERT's ``BertSelfOutput`` / ``BertOutput`` (and the many models that copy
them: RoBERTa, ELECTRA, DeBERTa's output blocks, ...) compute
``LayerNorm(dropout(dense(hidden_states)) + input_tensor)``. Such a block is
recognised by *structure*, not by class name: its only children are one
``nn.Linear``, at most one ``nn.Dropout`` and one norm that ``patch`` has
already classified as a plain last-dim LayerNorm, and its forward takes two
tensors. Each candidate is then *verified* on probe inputs (the block's own
forward beside the fused one, fp32 error <= 1e-5, half <= 2e-2); a block
that disagrees keeps plain norm patching, and the report says why.

A fused block follows its norm's backend: ``triton`` on CUDA runs the fused
Triton add+norm; in CPU inference ``cpp`` and ``aten`` run ``add_layer_norm_``,
which adds the residual into the ``dense`` output in place (that tensor is
fresh and private to the block) and then normalizes (``cpp``: in the same pass,
the C++ kernels of ``norms/cpu`` for float32; ``aten``: ``F.layer_norm``, bit
for bit the stock block). Everything else (autograd, ``torch.compile``, other
devices) and every graph trace (``fused.tracing``) runs the block's own
``norm(h + residual)`` through the patched norm, so a traced graph records the
stock block's ops and the norm's graph form (``fused.traced_norm``).

Patching is per instance: the block's ``forward`` instance attribute is set
and its previous value kept, so ``unfuse_residual_blocks`` restores it exactly.

Examples:
    ```python
    import hf_lnorm
    from hf_lnorm.norms.residual import fused_block_names

    model = hf_lnorm.patch(bert)  # a BertModel
    fused_block_names(model)[:1]  # ['encoder.layer.0.attention.output']
    ```
"""

from __future__ import annotations

import inspect
import types
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import torch
from torch import nn

from . import cpu, fastpath, ops
from .fused import tracing
from .reference import LAYER_NORM

RESIDUAL_ATTR = "_hf_lnorm_residual"
NORM_STATE_ATTR = "_hf_lnorm_state"  # the attribute patching.py keeps on a patched norm
_MISSING = object()


@dataclass
class _ResidualState:
    dense: str
    dropout: Optional[str]
    norm: str
    forward_attr: str
    previous: Any


@dataclass
class BlockMatch:
    """A post-LN block candidate: names of its children, relative to the block."""

    name: str
    module: nn.Module
    dense: str
    dropout: Optional[str]
    norm: str


def _is_plain_layer_norm(module: nn.Module) -> bool:
    state = module.__dict__.get(NORM_STATE_ATTR)
    return state is not None and state.spec.variant == LAYER_NORM and state.spec.normalized_ndim == 1


def _takes_two_tensors(module: nn.Module) -> bool:
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return False
    params = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in params if p.default is p.empty]
    return len(params) == 2 and len(required) == 2


def find_post_ln_blocks(model: nn.Module) -> List[BlockMatch]:
    """Blocks shaped like ``norm(dropout(dense(h)) + residual)`` whose norm is patched.

    Args:
        model: a model after ``hf_lnorm.patch`` (only patched norms qualify).

    Returns:
        One ``BlockMatch`` per structural candidate (not yet verified).
    """
    found = []
    for name, module in model.named_modules():
        if RESIDUAL_ATTR in module.__dict__:
            continue
        children = list(module.named_children())
        if not 2 <= len(children) <= 3:
            continue
        dense = [n for n, c in children if type(c) is nn.Linear]
        drops = [n for n, c in children if isinstance(c, nn.Dropout)]
        norms = [n for n, c in children if _is_plain_layer_norm(c)]
        if len(dense) != 1 or len(norms) != 1 or len(drops) > 1 or len(dense) + len(drops) + len(norms) != len(children):
            continue
        if not _takes_two_tensors(module):
            continue
        found.append(BlockMatch(name, module, dense[0], drops[0] if drops else None, norms[0]))
    return found


def _norm_args(norm: nn.Module):
    state = norm.__dict__[NORM_STATE_ATTR]
    w = norm.weight if state.spec.has_weight else None
    b = norm.bias if state.spec.has_bias else None
    return w, b, getattr(norm, state.spec.eps_attr), state.backend


def _fused_block_forward(self, hidden_states, input_tensor):
    st = self.__dict__[RESIDUAL_ATTR]
    children = self._modules
    norm = children[st.norm]
    h = children[st.dense](hidden_states)
    if st.dropout is not None:
        h = children[st.dropout](h)
    norm_state = norm.__dict__.get(NORM_STATE_ATTR)
    fast = None if norm_state is None else norm_state.fast
    if fast is not None and fast.cpp and fast.layer_norm and fastpath.plain_eager(h):
        # decided when the norm was patched (norms/fastpath.py): plain eager float32 CPU inference of a
        # LayerNorm the C++ kernel computes; h is the Linear's fresh output, so the sum is written into it
        params = norm._parameters
        w = params["weight"] if fast.has_weight else None
        b = params["bias"] if fast.has_bias else None
        if (type(input_tensor) is torch.Tensor and input_tensor.dtype is torch.float32 and input_tensor.is_cpu
                and h.shape == input_tensor.shape and h.is_contiguous()
                and not (torch.is_grad_enabled() and input_tensor.requires_grad)
                and fastpath.cpp_inference_ok(h, fast.size, w, b)):
            x = input_tensor if input_tensor.is_contiguous() else input_tensor.contiguous()
            return torch.ops.hf_lnorm_cpu.add_norm(x, h, w, b, getattr(norm, fast.eps_attr), False, True)[0]
    if norm_state is None or tracing(h) or h.shape != input_tensor.shape:
        # the norm was unpatched on its own, a graph is being traced (it records the stock block's add and the
        # patched norm's graph form, see fused.traced_norm), or an unusual call
        return norm(h + input_tensor)
    w, b, eps, backend = _norm_args(norm)
    if (w is not None and w.dtype != h.dtype) or h.dtype != input_tensor.dtype:
        return norm(h + input_tensor)  # mixed precision: the patched norm knows the original's rules
    inference = not torch.is_grad_enabled() or not any(
        t is not None and t.requires_grad for t in (h, input_tensor, w, b)
    )
    if backend == "triton" and h.device.type == "cuda":
        return ops.triton_norm_fwd(h, input_tensor, w, b, float(eps), "layer_norm")[0]
    if (
        backend in ("cpp", "aten")
        and inference
        and h.device.type == "cpu"
        and h.is_contiguous()
        and not ops.compiling(h)
    ):
        # h is the Linear's fresh output, private to this call: add into it, then normalize
        # (cpp: the C++ CPU kernels in float32; aten: the add, then F.layer_norm, as the stock block)
        return ops.add_layer_norm_(input_tensor, h, w, b, eps, impl="auto" if backend == "cpp" else "aten")[0]
    return norm(h + input_tensor)  # autograd, compile, other devices: the patched norm's own path


def _set_forward(module: nn.Module, match: BlockMatch) -> None:
    hooked = "_hf_hook" in module.__dict__ and "_old_forward" in module.__dict__
    attr = "_old_forward" if hooked else "forward"
    previous = module.__dict__.get(attr, _MISSING)
    module.__dict__[RESIDUAL_ATTR] = _ResidualState(match.dense, match.dropout, match.norm, attr, previous)
    module.__dict__[attr] = types.MethodType(_fused_block_forward, module)


def _restore_forward(module: nn.Module) -> None:
    st = module.__dict__.pop(RESIDUAL_ATTR)
    if st.previous is _MISSING:
        module.__dict__.pop(st.forward_attr, None)
    else:
        module.__dict__[st.forward_attr] = st.previous


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / max(1.0, float(b.abs().max())))


def _probe(match: BlockMatch) -> Tuple[bool, float, str]:
    """Run the block's own forward beside the fused one. Returns (ok, error, why)."""
    module = match.module
    dense = getattr(module, match.dense)
    dtype, device = dense.weight.dtype, dense.weight.device
    gen = torch.Generator().manual_seed(20240611)
    h = (torch.randn(2, 5, dense.in_features, generator=gen) * 2.0).to(device=device, dtype=dtype)
    r = (torch.randn(2, 5, dense.out_features, generator=gen) * 2.0 + 0.5).to(device=device, dtype=dtype)
    training = [(m, m.training) for m in module.modules()]
    module.eval()  # dropout off: the comparison must be deterministic
    try:
        with torch.no_grad():
            try:
                want = module(h, r)
            except Exception as exc:  # the block does not take (hidden, residual) after all
                return False, float("inf"), f"block forward(h, residual) raised {type(exc).__name__}: {exc}"
            if not isinstance(want, torch.Tensor):
                return False, float("inf"), "block forward does not return a single tensor"
            _set_forward(module, match)
            try:
                got = module(h, r)
            except Exception as exc:
                return False, float("inf"), f"fused forward raised {type(exc).__name__}: {exc}"
            finally:
                _restore_forward(module)
    finally:
        for m, flag in training:
            m.training = flag
    if got.shape != want.shape or got.dtype != want.dtype:
        return False, float("inf"), f"fused output {tuple(got.shape)}/{got.dtype} vs {tuple(want.shape)}/{want.dtype}"
    err = _rel_err(got, want)
    limit = 1e-5 if dtype == torch.float32 else 2e-2
    if not err <= limit:
        return False, err, f"probe error {err:.2e} > {limit:.0e}"
    return True, err, ""


def fuse_residual_blocks(model: nn.Module) -> List[Tuple[BlockMatch, bool, float, str]]:
    """Find, verify and fuse the post-LN residual blocks of a patched model, in place.

    Args:
        model: a model whose norms ``hf_lnorm.patch`` has patched.

    Returns:
        ``(match, fused, probe_error, reason)`` per candidate block; ``fused`` is
            False (with the reason) when the probe disagreed.
    """
    results = []
    for match in find_post_ln_blocks(model):
        ok, err, why = _probe(match)
        if ok:
            _set_forward(match.module, match)
        results.append((match, ok, err, why))
    return results


def unfuse_residual_blocks(model: nn.Module) -> int:
    """Restore every fused block of ``model``. Returns how many were restored.

    It also frees the idle output blocks the C++ CPU kernels keep
    (``cpu.empty_cache``; ``unpatch`` runs through here): idle blocks are
    unused by definition, and a model still patched refills them in one forward.
    """
    count = 0
    for module in model.modules():
        if RESIDUAL_ATTR in module.__dict__:
            _restore_forward(module)
            count += 1
    cpu.empty_cache()
    return count


def fused_block_names(model: nn.Module) -> List[str]:
    """Dotted names of the blocks of ``model`` that currently run the fused add+norm."""
    return [n for n, m in model.named_modules() if RESIDUAL_ATTR in m.__dict__]
