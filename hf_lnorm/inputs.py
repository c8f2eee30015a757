"""Random example inputs for any Hugging Face model, built from its config.

Used by ``hf-lnorm patch`` to compare a patched model with the stock one, and
by the tests. Covers the input kinds transformers models take: token ids
(with decoder ids for encoder-decoders), images, raw audio and log-mel
features.

Examples:
    >>> from transformers import BertConfig, BertModel
    >>> from hf_lnorm.inputs import dummy_inputs
    >>> model = BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
    ...                              intermediate_size=64))
    >>> inputs = dummy_inputs(model, batch_size=2, seq_len=8)
    >>> model(**inputs).last_hidden_state.shape
    torch.Size([2, 8, 32])
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn


def _cfg(config, *names, default=None):
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


def _sub(config, name):
    return getattr(config, name, None) or config


def dummy_inputs(
    model: nn.Module,
    batch_size: int = 2,
    seq_len: int = 8,
    generator: Optional[torch.Generator] = None,
) -> Dict[str, torch.Tensor]:
    """Random inputs matching ``model.main_input_name`` and its config.

    Args:
        model: a transformers ``PreTrainedModel`` (or a PEFT wrapper of one).
        batch_size: batch size.
        seq_len: sequence length of token inputs (images and audio use their config sizes).
        generator: optional ``torch.Generator`` for reproducible inputs.

    Returns:
        A dict of keyword arguments for ``model(**inputs)``.

    Raises:
        ValueError: the model's main input kind is not one this helper knows.
    """
    base = getattr(model, "get_base_model", lambda: model)()
    config = base.config
    name = getattr(base, "main_input_name", "input_ids")
    g = generator or torch.Generator().manual_seed(0)
    device = next((p.device for p in base.parameters()), torch.device("cpu"))
    out: Dict[str, torch.Tensor] = {}
    if name == "input_ids":
        text_cfg = _sub(config, "text_config")
        vocab = _cfg(text_cfg, "vocab_size", default=100)
        out["input_ids"] = torch.randint(3, max(4, vocab), (batch_size, seq_len), generator=g)
        out["attention_mask"] = torch.ones(batch_size, seq_len, dtype=torch.long)
        if getattr(config, "is_encoder_decoder", False):
            out["decoder_input_ids"] = torch.randint(3, max(4, vocab), (batch_size, max(2, seq_len // 2)), generator=g)
    elif name == "pixel_values":
        vis = _sub(config, "vision_config")
        size = _cfg(vis, "image_size", default=32)
        size = size if isinstance(size, int) else int(size[0] if isinstance(size, (list, tuple)) else size["height"])
        chans = _cfg(vis, "num_channels", default=3)
        out["pixel_values"] = torch.randn(batch_size, chans, size, size, generator=g)
    elif name == "input_values":
        out["input_values"] = torch.randn(batch_size, 1600, generator=g)
    elif name == "input_features":
        mels = _cfg(config, "num_mel_bins", "feature_size", default=80)
        frames = 2 * _cfg(config, "max_source_positions", default=seq_len)
        if getattr(config, "model_type", "") == "lnorm-speech":  # time-major (batch, frames, mels), subsampled by 4
            out["input_features"] = torch.randn(batch_size, 4 * seq_len, mels, generator=g)
        else:
            out["input_features"] = torch.randn(batch_size, mels, frames, generator=g)
        if getattr(config, "is_encoder_decoder", False):
            vocab = _cfg(config, "vocab_size", default=100)
            out["decoder_input_ids"] = torch.randint(3, max(4, vocab), (batch_size, 4), generator=g)
    elif name == "observations":  # LNormPolicy: flat float observations
        out["observations"] = torch.randn(batch_size, config.observation_size, generator=g)
    else:
        raise ValueError(
            f"no dummy input for main_input_name {name!r}; "
            "accepted: input_ids, pixel_values, input_values, input_features, observations"
        )
    if name == "pixel_values" and getattr(config, "text_config", None) is not None:  # image + question models
        vocab = _cfg(config.text_config, "vocab_size", default=100)
        seq_len = min(seq_len, _cfg(config.text_config, "max_position_embeddings", default=seq_len))
        out["input_ids"] = torch.randint(min(3, vocab - 1), vocab, (batch_size, seq_len), generator=g)
        out["attention_mask"] = torch.ones(batch_size, seq_len, dtype=torch.long)
    return {k: v.to(device) for k, v in out.items()}
