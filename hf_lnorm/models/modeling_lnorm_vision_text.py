"""LNormVisionText: a vision-language classifier as a Hugging Face model.

* Vision encoder: an ``LNormViTModel`` (patch embedding by a strided
  convolution, class token, learned positions, Pre-LN blocks, final norm);
  all its tokens (class token first) go on to the fusion.
* Text encoder: token + learned position embeddings, bidirectional Pre-LN
  blocks (padding masked), final norm.
* Modality balancing: each encoder's tokens are projected to the common width
  and normalized by that modality's own norm (``vision_norm``, ``text_norm``),
  then a modality-type embedding is added.
* Fusion: a transformer over ``[fusion CLS] + image tokens + text tokens``; the
  text padding mask is honoured. ``LNormVisionTextForClassification`` reads the
  fusion CLS token (answer classification for visual question answering).

Every stack comes from ``layers.build_stack``, so ``norm_type`` / ``norm_position``
switch all norms, and ``hf_lnorm.patch`` finds them. LoRA ``target_modules``:
``qkv_proj``, ``out_proj``, ``fc_in``, ``fc_out``.

Shipped next to saved weights as remote code: imports only torch, transformers
and sibling files.

Examples:
    >>> import torch
    >>> from hf_lnorm.models import LNormVisionTextConfig, LNormVisionTextForClassification
    >>> model = LNormVisionTextForClassification(LNormVisionTextConfig(num_labels=13))
    >>> out = model(pixel_values=torch.randn(2, 3, 32, 32), input_ids=torch.randint(0, 64, (2, 7)))
    >>> out.logits.shape
    torch.Size([2, 13])
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

from .configuration_lnorm_vision_text import LNormVisionTextConfig, LNormVisionTextTextConfig
# transformers copies only the sibling files a remote-code file imports directly as `from .x import ...`
from .attention_lnorm import LNormAttention  # noqa: F401
from .norm_layers_lnorm import LNormLayerNorm  # noqa: F401
from .layers import build_norm, build_stack, init_weights, output_flags, run_stack, sequence_classification_loss
from .modeling_utils_lnorm import model_output
from .modeling_lnorm_vit import LNormViTModel, init_vit_weights
from .remote_code import RemoteCodeMixin

from .layers import _init  # transformers 5.x init functions that skip loaded tensors, else torch.nn.init

VISION_TYPE, TEXT_TYPE = 0, 1


def _key_mask(attention_mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """``(B, S)`` 0/1 mask -> boolean ``(B, 1, 1, S)`` for SDPA (True = attend); ``None`` stays ``None``.

    No "is there any padding?" shortcut: the same graph runs for every input (torch.export / ONNX).
    """
    if attention_mask is None:
        return None
    return attention_mask[:, None, None, :].bool()


class LNormVisionTextPreTrainedModel(RemoteCodeMixin, PreTrainedModel):
    """Weight init, Auto-class wiring and remote-code saving shared by the LNormVisionText models.

    ``save_pretrained`` writes the modeling code next to the weights, so the
    folder loads with ``trust_remote_code=True`` where hf_lnorm is not installed.

    Examples:
        ```python
        from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor

        processor = AutoProcessor.from_pretrained("my-vqa", trust_remote_code=True)
        model = AutoModelForVisualQuestionAnswering.from_pretrained("my-vqa", trust_remote_code=True)
        ```
    """

    config_class = LNormVisionTextConfig
    base_model_prefix = "vision_text"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LNormBlock"]
    _supports_sdpa = True
    auto_map_classes = {
        "AutoConfig": "configuration_lnorm_vision_text.LNormVisionTextConfig",
        "AutoModel": "modeling_lnorm_vision_text.LNormVisionTextModel",
        "AutoModelForVisualQuestionAnswering": "modeling_lnorm_vision_text.LNormVisionTextForClassification",
    }
    card_description = (
        "LNormVisionText: a vision-language classifier from the hf_lnorm package. "
        "A small ViT and a text transformer are each projected to a common width and normalized by their own "
        "LayerNorm (modality balancing), then fused by a transformer over the concatenated tokens; the classifier "
        "reads the fusion CLS token."
    )
    card_intended_use = (
        "Visual question answering as classification over a closed answer set on small synthetic images (easy-VQA), "
        "and LayerNorm ablations in multimodal fusion. Not intended for natural images or open-ended questions."
    )
    card_pipeline_tag = "visual-question-answering"
    card_config_keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "num_labels",
                        "image_size", "vocab_size")

    def _init_weights(self, module: nn.Module) -> None:
        config = self.config
        depth = config.num_hidden_layers + config.vision_config.num_hidden_layers + config.text_config.num_hidden_layers
        std = config.initializer_range
        init_weights(module, std, depth)
        init_vit_weights(module, std)
        if isinstance(module, LNormVisionTextModel):
            _init.normal_(module.fusion_cls_token, mean=0.0, std=std)


class LNormVisionTextTextEncoder(nn.Module):
    """Question ids ``(B, T)`` -> ``(B, T, hidden)`` (bidirectional; padding masked)."""

    def __init__(self, config: LNormVisionTextTextConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.layers, self.final_norm = build_stack(config, config.num_hidden_layers, causal=False)

    def forward(self, input_ids: torch.LongTensor, attention_mask: Optional[torch.Tensor] = None,
                output_attentions: bool = False, output_hidden_states: bool = False):
        config = self.config
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be a 2D (batch, sequence) tensor, got shape {tuple(input_ids.shape)}")
        length = input_ids.shape[1]
        if length > config.max_position_embeddings:
            raise ValueError(
                f"question of {length} tokens is longer than text_config.max_position_embeddings="
                f"{config.max_position_embeddings}; truncate it (processor(..., truncation=True))"
            )
        positions = torch.arange(length, device=input_ids.device)[None, :]
        hidden = self.dropout(self.embed_tokens(input_ids) + self.embed_positions(positions))
        hidden, all_hidden, all_attn, _ = run_stack(
            self.layers, self.final_norm, hidden, output_attentions, output_hidden_states, attention_mask=_key_mask(attention_mask)
        )
        return hidden, all_hidden, all_attn


class LNormVisionTextModel(LNormVisionTextPreTrainedModel):
    """Both encoders, the per-modality projection + norm, and the fusion transformer (no head).

    Returns a ``BaseModelOutputWithPooling`` whose ``last_hidden_state`` is the fusion output
    ``(B, 1 + 1 + num_patches + T, hidden)`` and ``pooler_output`` its first (fusion CLS) token.

    Args:
        config: the model configuration.

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import LNormVisionTextConfig, LNormVisionTextModel
        >>> model = LNormVisionTextModel(LNormVisionTextConfig())  # 32 x 32 images: 64 patches
        >>> out = model(pixel_values=torch.randn(2, 3, 32, 32), input_ids=torch.randint(0, 64, (2, 7)))
        >>> out.last_hidden_state.shape, out.pooler_output.shape
        (torch.Size([2, 73, 64]), torch.Size([2, 64]))
    """

    def __init__(self, config: LNormVisionTextConfig):
        super().__init__(config)
        self.vision_encoder = LNormViTModel(config.vision_config)
        self.text_encoder = LNormVisionTextTextEncoder(config.text_config)
        self.vision_projection = nn.Linear(config.vision_config.hidden_size, config.hidden_size)
        self.vision_norm = build_norm(config.norm_type, config.hidden_size, config.layer_norm_eps, config.dyt_alpha_init)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.hidden_size)
        self.text_norm = build_norm(config.norm_type, config.hidden_size, config.layer_norm_eps, config.dyt_alpha_init)
        self.modality_type_embeddings = nn.Embedding(2, config.hidden_size)
        self.fusion_cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.dropout = nn.Dropout(config.dropout)
        self.layers, self.final_norm = build_stack(config, config.num_hidden_layers, causal=False)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.text_encoder.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.text_encoder.embed_tokens = value

    def forward(
        self,
        pixel_values: Optional[torch.Tensor] = None,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> Union[Tuple, BaseModelOutputWithPooling]:
        """Fuse an image and a question.

        Args:
            pixel_values: ``(B, num_channels, image_size, image_size)`` (what the processor returns).
            input_ids: ``(B, T)`` question token ids.
            attention_mask: ``(B, T)`` 1 for real tokens, 0 for padding (``None``: no padding).
            output_attentions: also return the fusion stack's attention weights.
            output_hidden_states: also return the fusion stack's hidden states.
            return_dict: return a ``ModelOutput`` rather than a tuple.
            **kwargs (Any): accepted for Trainer compatibility; unused.

        Returns:
            ``BaseModelOutputWithPooling``: ``last_hidden_state (B, 2 + num_patches + T, hidden)`` and
                ``pooler_output (B, hidden)``, the fusion CLS token.

        Raises:
            ValueError: a missing image or question, different batch sizes, a mask of another shape than
                ``input_ids``, or a question longer than ``text_config.max_position_embeddings``.
        """
        output_attentions, output_hidden_states, return_dict = output_flags(self.config, output_attentions, output_hidden_states, return_dict)
        if pixel_values is None or input_ids is None:
            missing = [n for n, v in (("pixel_values", pixel_values), ("input_ids", input_ids)) if v is None]
            raise ValueError(f"LNormVisionText needs both an image and a question; missing: {', '.join(missing)}")
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(f"pixel_values has batch size {pixel_values.shape[0]} but input_ids has {input_ids.shape[0]}; pass one image per question")
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, expected the shape of input_ids {tuple(input_ids.shape)}")

        image = self.vision_encoder(pixel_values, return_dict=True).last_hidden_state
        text, _, _ = self.text_encoder(input_ids, attention_mask)
        types = self.modality_type_embeddings.weight
        image = self.vision_norm(self.vision_projection(image)) + types[VISION_TYPE]
        text = self.text_norm(self.text_projection(text)) + types[TEXT_TYPE]
        batch = image.shape[0]
        cls = self.fusion_cls_token.expand(batch, -1, -1)
        hidden = self.dropout(torch.cat([cls, image, text], dim=1))
        mask = None
        if attention_mask is not None:
            visible = attention_mask.new_ones(batch, 1 + image.shape[1])
            mask = _key_mask(torch.cat([visible, attention_mask], dim=1))
        hidden, all_hidden, all_attn, _ = run_stack(
            self.layers, self.final_norm, hidden, output_attentions, output_hidden_states, attention_mask=mask
        )
        pooled = hidden[:, 0]
        return model_output(BaseModelOutputWithPooling, return_dict, last_hidden_state=hidden, pooler_output=pooled,
                            hidden_states=all_hidden, attentions=all_attn)


class LNormVisionTextForClassification(LNormVisionTextPreTrainedModel):
    """LNormVisionText with a linear classifier on the fusion CLS token (answer classes for VQA).

    ``labels``: ``(B,)`` class ids (cross-entropy), or ``(B, num_labels)`` floats for multi-label
    targets (binary cross-entropy), following ``config.problem_type`` as transformers does.

    Args:
        config: the model configuration (``num_labels`` answer classes).

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import LNormVisionTextConfig, LNormVisionTextForClassification
        >>> model = LNormVisionTextForClassification(LNormVisionTextConfig(num_labels=13))
        >>> out = model(pixel_values=torch.randn(2, 3, 32, 32), input_ids=torch.randint(0, 64, (2, 7)),
        ...             attention_mask=torch.tensor([[1] * 7, [1] * 4 + [0] * 3]), labels=torch.tensor([0, 12]))
        >>> out.logits.shape, out.loss.shape
        (torch.Size([2, 13]), torch.Size([]))
    """

    def __init__(self, config: LNormVisionTextConfig):
        super().__init__(config)
        self.vision_text = LNormVisionTextModel(config)
        self.classifier_dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.vision_text.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.vision_text.set_input_embeddings(value)

    def forward(
        self,
        pixel_values: Optional[torch.Tensor] = None,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> Union[Tuple, SequenceClassifierOutput]:
        """Answer logits ``(B, num_labels)``; the loss when ``labels`` are given (see the class docstring).

        Args:
            pixel_values: ``(B, num_channels, image_size, image_size)`` images.
            input_ids: ``(B, T)`` question token ids.
            attention_mask: ``(B, T)`` 1 for real tokens, 0 for padding.
            labels: ``(B,)`` class ids, or ``(B, num_labels)`` floats for multi-label targets.
            output_attentions: also return the fusion stack's attention weights.
            output_hidden_states: also return the fusion stack's hidden states.
            return_dict: return a ``ModelOutput`` rather than a tuple.
            **kwargs (Any): accepted for Trainer compatibility; unused.

        Returns:
            ``SequenceClassifierOutput`` with ``logits (B, num_labels)`` and ``loss`` when ``labels`` are given.

        Raises:
            ValueError: inputs ``LNormVisionTextModel.forward`` refuses.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        out = self.vision_text(
            pixel_values=pixel_values,
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        logits = self.classifier(self.classifier_dropout(out.pooler_output))
        loss = None
        if labels is not None:
            loss = sequence_classification_loss(self.config, logits, labels)
        if not return_dict:
            parts = tuple(v for v in (logits, out.hidden_states, out.attentions) if v is not None)
            return ((loss,) + parts) if loss is not None else parts
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)


__all__ = [
    "LNormVisionTextForClassification",
    "LNormVisionTextModel",
    "LNormVisionTextPreTrainedModel",
    "LNormVisionTextTextEncoder",
]
