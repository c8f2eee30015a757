"""LNormViT: a Vision Transformer as a Hugging Face model, with switchable normalization.

Patch embedding (a strided ``Conv2d``), a learned class token, learned position
embeddings, transformer blocks from ``layers.build_stack`` (Pre-LN by default;
``config.norm_type`` / ``config.norm_position`` switch the norms), a final norm
and, in ``LNormViTForImageClassification``, a linear head on the pooled token.

``LNormViTModel`` is a standalone image encoder: it returns ``last_hidden_state``
``(B, 1 + num_patches, hidden)`` (class token first) and ``pooler_output``
``(B, hidden)`` (the class token, or the mean of the patch tokens with
``config.pooling="mean"``), so other families can use it as their vision branch.

PEFT/LoRA ``target_modules``: ``qkv_proj`` and ``out_proj`` (attention),
``fc_in`` and ``fc_out`` (MLP).

Shipped next to saved weights as remote code: imports only torch, transformers
and sibling files.

Examples:
    >>> import torch
    >>> from hf_lnorm.models import LNormViTConfig, LNormViTForImageClassification
    >>> config = LNormViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32,
    ...                         num_hidden_layers=2, num_attention_heads=4, num_labels=10)
    >>> LNormViTForImageClassification(config)(torch.randn(2, 1, 8, 8)).logits.shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

from .configuration_lnorm_vit import LNormViTConfig
# transformers copies only the sibling files a remote-code file imports directly as `from .x import ...`
from .attention_lnorm import LNormAttention  # noqa: F401
from .norm_layers_lnorm import LNormLayerNorm  # noqa: F401
from .layers import build_stack, init_weights, output_flags, run_stack, sequence_classification_loss
from .modeling_utils_lnorm import model_output
from .remote_code import RemoteCodeMixin

from .layers import _init  # transformers 5.x init functions that skip loaded tensors, else torch.nn.init


def check_pixel_values(pixel_values, config: LNormViTConfig) -> None:
    """Raise a clear error unless ``pixel_values`` is a float ``(B, num_channels, image_size, image_size)`` tensor.

    Args:
        pixel_values (torch.Tensor): the model input.
        config: the model's config (``num_channels``, ``image_size``).

    Raises:
        TypeError: not a floating-point tensor.
        ValueError: not shaped ``(B, num_channels, image_size, image_size)`` (the message says what to change).
    """
    if not torch.is_tensor(pixel_values):
        raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
    size = config.image_size
    expected = f"(batch, {config.num_channels}, {size}, {size})"
    if pixel_values.dim() != 4:
        raise ValueError(
            f"pixel_values must be 4-D {expected} (batch, channels, height, width); got shape {tuple(pixel_values.shape)}"
        )
    channels = pixel_values.shape[1]
    if channels != config.num_channels:
        raise ValueError(
            f"pixel_values has {channels} channels (shape {tuple(pixel_values.shape)}), but this model expects "
            f"num_channels={config.num_channels}: {expected}. Convert the images (e.g. with LNormViTImageProcessor"
            f"(num_channels={config.num_channels})) or use a model configured for {channels} channels"
        )
    if tuple(pixel_values.shape[2:]) != (size, size):
        raise ValueError(
            f"pixel_values has height x width {pixel_values.shape[2]} x {pixel_values.shape[3]}, but this model expects "
            f"image_size={size}: {expected}. Resize the images (LNormViTImageProcessor(size={size}) does)"
        )
    if not pixel_values.is_floating_point():
        raise TypeError(f"pixel_values must be a floating-point tensor, got dtype {pixel_values.dtype}")


class LNormViTEmbeddings(nn.Module):
    """Patch embedding (strided convolution), class token and learned position embeddings."""

    def __init__(self, config: LNormViTConfig):
        super().__init__()
        self.config = config
        self.patch_embed = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.hidden_size))
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``(B, 1 + num_patches, hidden)`` tokens (class token first)."""
        check_pixel_values(pixel_values, self.config)
        pixel_values = pixel_values.to(self.patch_embed.weight.dtype)
        patches = self.patch_embed(pixel_values).flatten(2).transpose(1, 2)  # (B, num_patches, hidden), raster order
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        return self.dropout(torch.cat([cls, patches], dim=1) + self.position_embeddings)


def init_vit_weights(module: nn.Module, std: float) -> None:
    """Truncated-normal init of what ``init_weights`` leaves alone in a ViT: the patch convolution, class token and positions.

    Args:
        module: one module (called by ``PreTrainedModel`` for every submodule).
        std: ``config.initializer_range``.
    """
    if isinstance(module, nn.Conv2d):
        _init.trunc_normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            _init.zeros_(module.bias)
    elif isinstance(module, LNormViTEmbeddings):
        _init.trunc_normal_(module.cls_token, mean=0.0, std=std)
        _init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)


class LNormViTPreTrainedModel(RemoteCodeMixin, PreTrainedModel):
    """Weight init, Auto-class wiring and remote-code saving shared by the LNormViT models.

    Truncated-normal init of the patch convolution, class token and positions,
    GPT-2 style init of the blocks, norm gains at 1. ``save_pretrained`` writes the
    modeling code next to the weights, so the folder loads with
    ``trust_remote_code=True`` where hf_lnorm is not installed.

    Examples:
        ```python
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        processor = AutoImageProcessor.from_pretrained("my-vit", trust_remote_code=True)
        model = AutoModelForImageClassification.from_pretrained("my-vit", trust_remote_code=True)
        ```
    """

    config_class = LNormViTConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["LNormViTEmbeddings", "LNormBlock"]
    _supports_sdpa = True
    auto_map_classes = {
        "AutoConfig": "configuration_lnorm_vit.LNormViTConfig",
        "AutoModel": "modeling_lnorm_vit.LNormViTModel",
        "AutoModelForImageClassification": "modeling_lnorm_vit.LNormViTForImageClassification",
    }
    card_description = (
        "LNormViT: a Vision Transformer (patch embedding, class token, learned positions, Pre-LN blocks, final "
        "norm) from the hf_lnorm package, built to study layer normalization (the normalization type and its "
        "position are configuration flags)."
    )
    card_intended_use = (
        "Small-scale image classification and LayerNorm ablations (pre-LN vs post-LN, LayerNorm vs RMSNorm vs none); "
        "also an image encoder for other hf_lnorm families. Not intended for production use."
    )
    card_pipeline_tag = "image-classification"
    card_config_keys = (
        "image_size",
        "patch_size",
        "num_channels",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
        "dropout",
        "pooling",
        "num_labels",
    )

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        init_weights(module, std, self.config.num_hidden_layers)
        init_vit_weights(module, std)


class LNormViTModel(LNormViTPreTrainedModel):
    """The LNormViT encoder: embeddings, blocks, final norm (pre-LN only) and the pooled token.

    Args:
        config: the model configuration.

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import LNormViTConfig, LNormViTModel
        >>> model = LNormViTModel(LNormViTConfig(image_size=8, patch_size=2, num_channels=3, hidden_size=32,
        ...                                      num_hidden_layers=2, num_attention_heads=4))
        >>> out = model(torch.randn(2, 3, 8, 8))
        >>> out.last_hidden_state.shape, out.pooler_output.shape
        (torch.Size([2, 17, 32]), torch.Size([2, 32]))
    """

    def __init__(self, config: LNormViTConfig):
        super().__init__(config)
        self.embeddings = LNormViTEmbeddings(config)
        self.layers, self.final_norm = build_stack(config, config.num_hidden_layers, causal=False)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Conv2d:
        return self.embeddings.patch_embed

    def forward(
        self,
        pixel_values: Optional[torch.Tensor] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> Union[Tuple, BaseModelOutputWithPooling]:
        """Encode images.

        Args:
            pixel_values: ``(B, num_channels, image_size, image_size)`` float images (see ``LNormViTImageProcessor``).
            output_attentions: also return each block's attention weights.
            output_hidden_states: also return the hidden states.
            return_dict: return a ``ModelOutput`` (default ``config.return_dict``) rather than a tuple.
            **kwargs (Any): accepted for Trainer compatibility; unused.

        Returns:
            ``BaseModelOutputWithPooling``: ``last_hidden_state (B, 1 + num_patches, hidden)`` (class token first),
                ``pooler_output (B, hidden)``, optional hidden states (embeddings + one per block, the last one after the
                final norm) and attentions ``(B, heads, 1 + num_patches, 1 + num_patches)``.

        Raises:
            ValueError: ``pixel_values`` is missing or not shaped ``(B, num_channels, image_size, image_size)``.
            TypeError: ``pixel_values`` is not a float tensor.
        """
        config = self.config
        if pixel_values is None:
            raise ValueError("pixel_values is required: (batch, num_channels, image_size, image_size) float images")
        output_attentions, output_hidden_states, return_dict = output_flags(config, output_attentions, output_hidden_states, return_dict)

        hidden = self.embeddings(pixel_values)
        hidden, all_hidden, all_attn, _ = run_stack(self.layers, self.final_norm, hidden, output_attentions, output_hidden_states)
        pooled = hidden[:, 0] if config.pooling == "cls" else hidden[:, 1:].mean(dim=1)

        return model_output(BaseModelOutputWithPooling, return_dict, last_hidden_state=hidden, pooler_output=pooled,
                            hidden_states=all_hidden, attentions=all_attn)


class LNormViTForImageClassification(LNormViTPreTrainedModel):
    """LNormViT with a linear classification head on the pooled token (``config.pooling``).

    Args:
        config: the model configuration (``num_labels``, ``problem_type`` matter here).

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import LNormViTConfig, LNormViTForImageClassification
        >>> config = LNormViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32,
        ...                         num_hidden_layers=2, num_attention_heads=4, num_labels=10)
        >>> out = LNormViTForImageClassification(config)(torch.randn(2, 1, 8, 8), labels=torch.tensor([3, 7]))
        >>> out.logits.shape, out.loss.shape
        (torch.Size([2, 10]), torch.Size([]))
    """

    def __init__(self, config: LNormViTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vit = LNormViTModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Conv2d:
        return self.vit.embeddings.patch_embed

    def forward(
        self,
        pixel_values: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> Union[Tuple, ImageClassifierOutput]:
        """Classify images.

        Args:
            pixel_values: ``(B, num_channels, image_size, image_size)`` float images.
            labels: ``(B,)`` class ids (``num_labels > 1``), floats for regression (``num_labels == 1``), or
                ``(B, num_labels)`` multi-hot floats (``problem_type="multi_label_classification"``).
            output_attentions: also return attention weights.
            output_hidden_states: also return hidden states.
            return_dict: return a ``ModelOutput`` rather than a tuple.
            **kwargs (Any): accepted for Trainer compatibility; unused.

        Returns:
            ``ImageClassifierOutput`` with ``logits (B, num_labels)`` and ``loss`` when ``labels`` are given.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        out = self.vit(pixel_values, output_attentions=output_attentions, output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.classifier(out.pooler_output)
        loss = sequence_classification_loss(self.config, logits, labels) if labels is not None else None
        if not return_dict:
            rest = tuple(v for v in (out.hidden_states, out.attentions) if v is not None)
            return ((loss,) if loss is not None else ()) + (logits,) + rest
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)


__all__ = ["LNormViTModel", "LNormViTForImageClassification", "LNormViTPreTrainedModel", "check_pixel_values"]
