"""Find the Linear layers that read each norm's output: one forward pass, matched by tensor identity.

No per-architecture table: a forward hook records the tensor each norm returns,
a forward pre-hook on every Linear-like layer looks its input up by identity.
"""

from __future__ import annotations

import contextlib
from typing import Dict, List, Tuple

import torch
from torch import nn

from ..inputs import dummy_inputs
from ..patching import STATE_ATTR
from .linear import _is_consumer_candidate

__all__ = ["example_inputs_for", "trace_consumers"]

TRACING = "tracing"  # key in a quantized norm's patch state while trace_consumers runs its model


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _call(model: nn.Module, inputs):
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def example_inputs_for(model: nn.Module, batch: int = 2, seq_len: int = 16):
    """A forward-pass input built from ``model.config`` (``hf_lnorm.inputs.dummy_inputs``), or None.

    What quantized mode traces with when ``patch`` gets no ``example_inputs``.
    The values are seeded, so two calls give the same tensors.

    Args:
        model (torch.nn.Module): a Hugging Face model (a PEFT model is unwrapped to its base model).
        batch: batch size.
        seq_len: sequence length for token inputs (images, audio and log-mel features
            use their config sizes).

    Returns:
        (dict[str, torch.Tensor] | None): keyword arguments for ``model(**inputs)``, or None when the
            model has no config or its main input is not one ``dummy_inputs`` knows.

    Examples:
        >>> import torch
        >>> from transformers import BertConfig, BertModel
        >>> from hf_lnorm.quantization import example_inputs_for
        >>> config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...                     num_attention_heads=4, intermediate_size=64)
        >>> inputs = example_inputs_for(BertModel(config), batch=2, seq_len=8)
        >>> inputs["input_ids"].shape
        torch.Size([2, 8])
        >>> example_inputs_for(torch.nn.Linear(4, 4)) is None
        True
    """
    base = getattr(model, "get_base_model", lambda: model)()
    if getattr(base, "config", None) is None:
        return None
    try:
        return dummy_inputs(model, batch_size=batch, seq_len=seq_len, generator=torch.Generator().manual_seed(1234))
    except (ValueError, AttributeError, TypeError):
        return None


def trace_consumers(model: nn.Module, norms: Dict[str, nn.Module], inputs) -> Tuple[Dict[str, List[str]], Dict[str, nn.Module]]:
    """Run one forward pass and match norm outputs to Linear inputs by tensor identity.

    A Linear consumes a norm when the very tensor the norm returned is its
    input; a Linear that reads the norm's output through any other operation
    (a dropout in training mode, a reshape) does not count. The pass runs in eval
    mode without gradients; hooks and training flags are removed and restored
    afterwards.

    Args:
        model: the model (its norms may already be patched).
        norms: ``{name: module}`` of the norms whose readers are wanted.
        inputs (dict | tuple | torch.Tensor): the input of ``model(...)``: keyword arguments, positional
            arguments, or one tensor.

    Returns:
        ``(consumers, called)``: ``{norm name: [linear names]}`` and
            ``{linear name: module}`` for every Linear the pass called.

    Raises:
        Exception: whatever the model's forward raises on ``inputs``.

    Examples:
        >>> import torch
        >>> from hf_lnorm.quantization import trace_consumers
        >>> model = torch.nn.Sequential(torch.nn.LayerNorm(8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
        >>> consumers, called = trace_consumers(model, {"0": model[0]}, torch.randn(3, 8))
        >>> consumers, sorted(called)
        ({'0': ['1']}, ['1', '2'])
    """
    outputs: Dict[int, str] = {}
    keep: List[torch.Tensor] = []  # holds the traced outputs so their ids stay unique during the pass
    consumers: Dict[str, List[str]] = {n: [] for n in norms}
    layers: Dict[str, nn.Module] = {}
    handles = []

    def on_norm_output(name):
        def hook(_module, _args, output):
            if isinstance(output, torch.Tensor):
                outputs[id(output)] = name
                keep.append(output)
        return hook

    def on_linear_input(name, layer):
        def hook(_module, args, kwargs):
            x = args[0] if args else next(iter(kwargs.values()), None)
            layers[name] = layer
            src = outputs.get(id(x)) if isinstance(x, torch.Tensor) else None
            if src is not None and name not in consumers[src]:
                consumers[src].append(name)
        return hook

    try:
        for name, norm in norms.items():
            handles.append(norm.register_forward_hook(on_norm_output(name)))
        for name, module in model.named_modules():
            if _is_consumer_candidate(module) is not None:
                handles.append(module.register_forward_pre_hook(on_linear_input(name, module), with_kwargs=True))
        for norm in norms.values():  # per instance: the quantized norms of this model return plain floats meanwhile
            state = norm.__dict__.get(STATE_ATTR)
            if state is not None:
                state.extra[TRACING] = True
        with torch.no_grad(), _eval_mode(model):
            _call(model, inputs)
    finally:
        for norm in norms.values():
            state = norm.__dict__.get(STATE_ATTR)
            if state is not None:
                state.extra.pop(TRACING, None)
        for h in handles:
            h.remove()
    return consumers, layers
