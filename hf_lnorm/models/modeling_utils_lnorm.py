"""Output plumbing shared by the model families' forwards.

Shipped next to saved weights as remote code (each modeling file imports it
directly), so it imports only torch, transformers and its sibling files.
"""

from __future__ import annotations

from typing import Optional

import torch
from transformers.modeling_outputs import BaseModelOutput

# transformers copies only the sibling files a remote-code file imports directly as `from .x import ...`
from .attention_lnorm import LNormAttention  # noqa: F401
from .norm_layers_lnorm import LNormLayerNorm  # noqa: F401
from .layers import build_attention_mask, padded_for_export, run_stack


def model_output(output_class, return_dict: bool, **fields):
    """``output_class(**fields)``, or with ``return_dict=False`` the tuple of the fields that are not None, in order.

    Args:
        output_class (type): a ``ModelOutput`` class.
        return_dict: build ``output_class`` rather than a tuple.
        **fields (Any): the output's fields, in order.

    Returns:
        (transformers.utils.ModelOutput | tuple): the output.

    Examples:
        >>> import torch
        >>> h = torch.zeros(1, 2, 4)
        >>> out = model_output(BaseModelOutput, False, last_hidden_state=h, hidden_states=None, attentions=None)
        >>> len(out), out[0] is h
        (1, True)
    """
    if not return_dict:
        return tuple(v for v in fields.values() if v is not None)
    return output_class(**fields)


def encode_bidirectional(stack: torch.nn.Module, hidden: torch.Tensor, key_mask: Optional[torch.Tensor],
                         output_attentions: bool, output_hidden_states: bool, return_dict: bool):
    """An encoder stack's pass over embedded inputs, without a causal mask.

    Args:
        stack: a module with ``layers`` and ``final_norm`` (from ``layers.build_stack``).
        hidden: ``(B, S, hidden)`` embedded inputs.
        key_mask: ``(B, S)`` with 1 for real positions, or None.
        output_attentions: resolved flag (``layers.output_flags``).
        output_hidden_states: resolved flag.
        return_dict: resolved flag.

    Returns:
        (transformers.modeling_outputs.BaseModelOutput | tuple): ``last_hidden_state (B, S, hidden)`` and the optional hidden states / attentions.
    """
    mask, _ = build_attention_mask(key_mask, hidden.shape[1], 0, causal=False, padded=padded_for_export(key_mask))
    hidden, all_hidden, all_attn, _ = run_stack(
        stack.layers, stack.final_norm, hidden, output_attentions, output_hidden_states, attention_mask=mask
    )
    return model_output(BaseModelOutput, return_dict, last_hidden_state=hidden, hidden_states=all_hidden, attentions=all_attn)
