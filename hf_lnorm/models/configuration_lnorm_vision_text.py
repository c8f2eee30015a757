"""Configuration of LNormVisionText, the course's VisionLanguageModel: two encoders, modality LayerNorms, fusion.

``LNormVisionTextConfig`` (``model_type="lnorm-vision-text"``) holds a vision
sub-config (an ``LNormViTConfig``: the image encoder is an ``LNormViTModel``) and
a text sub-config (``LNormVisionTextTextConfig``: token + position embeddings +
Pre-LN blocks); its own fields describe the common width, the fusion
transformer and the classifier.

Shipped next to saved weights as remote code: imports only transformers and siblings.
"""

from __future__ import annotations

from typing import Optional, Union

from transformers import PretrainedConfig

from .configuration_lnorm_vit import LNormViTConfig
# transformers copies only the sibling files a remote-code file imports directly as `from .x import ...`
from .attention_lnorm import LNormAttention  # noqa: F401
from .norm_layers_lnorm import LNormLayerNorm  # noqa: F401
from .layers import set_stack_fields

# The vision encoder when no vision_config is given: a small LNormViT for 32x32 RGB images.
DEFAULT_VISION_CONFIG = dict(image_size=32, patch_size=4, num_channels=3, hidden_size=64, num_hidden_layers=2,
                             num_attention_heads=4, mlp_ratio=2.0, layer_norm_eps=1e-5)


def _check_positive(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}={value!r} is not supported; accepted values: a positive integer")


class LNormVisionTextTextConfig(PretrainedConfig):
    """The text encoder: token + learned position embeddings, bidirectional transformer blocks.

    Args:
        vocab_size: tokenizer vocabulary size.
        max_position_embeddings: longest question in tokens.
        pad_token_id: id of the padding token (its embedding row is not special; padding is masked).
        hidden_size, num_hidden_layers, num_attention_heads, mlp_ratio / intermediate_size, hidden_act,
        dropout, attention_dropout, norm_type, norm_position, layer_norm_eps, initializer_range:
            the transformer stack, as in the other hf_lnorm families.
    """

    model_type = "lnorm-vision-text-text"
    base_config_key = "text_config"

    def __init__(
        self,
        vocab_size: int = 64,
        max_position_embeddings: int = 32,
        hidden_size: int = 64,
        num_hidden_layers: int = 1,
        num_attention_heads: int = 4,
        mlp_ratio: float = 2.0,
        intermediate_size: Optional[int] = None,
        hidden_act: str = "gelu",
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        norm_type: str = "layernorm",
        norm_position: str = "pre",
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        pad_token_id: int = 0,
        **kwargs,
    ):
        _check_positive("vocab_size", vocab_size)
        _check_positive("max_position_embeddings", max_position_embeddings)
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        set_stack_fields(self, hidden_size, num_hidden_layers, num_attention_heads, mlp_ratio, intermediate_size, hidden_act,
                         dropout, attention_dropout, norm_type, norm_position, layer_norm_eps, initializer_range)
        _check_positive("num_hidden_layers", num_hidden_layers)
        super().__init__(pad_token_id=pad_token_id, **kwargs)


def _sub_config(cls, value, name: str, defaults: dict):
    if value is None:
        return cls(**defaults)
    if cls is LNormViTConfig and isinstance(value, PretrainedConfig) and getattr(value, "model_type", None) == "lnorm-vit":
        return value  # also an LNormViTConfig loaded from a different copy of the module (remote code)
    if isinstance(value, cls):
        return value
    if isinstance(value, PretrainedConfig):
        value = value.to_dict()
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict or a {cls.__name__}, got {type(value).__name__}")
    value = {k: v for k, v in value.items() if k not in ("model_type", "transformers_version")}
    return cls(**{**defaults, **value})


class LNormVisionTextConfig(PretrainedConfig):
    """Configuration of ``LNormVisionTextModel`` and ``LNormVisionTextForClassification``.

    Each encoder's output is projected to ``hidden_size`` and normalized by its own norm (modality
    balancing); a type embedding marks the modality; a fusion transformer runs over
    ``[fusion CLS] + image tokens + text tokens`` (text padding masked) and the classifier reads the
    fusion CLS token.

    Args:
        vision_config: dict or ``LNormViTConfig`` of the image encoder; default: ``DEFAULT_VISION_CONFIG``.
        text_config: dict or ``LNormVisionTextTextConfig``.
        hidden_size: common width of the fusion transformer.
        num_hidden_layers: fusion layers.
        num_attention_heads, mlp_ratio / intermediate_size, hidden_act, dropout, attention_dropout,
        layer_norm_eps, initializer_range: the fusion stack.
        norm_type: norm of the modality projections and the fusion stack (``layernorm`` | ``rmsnorm`` |
            ``none``); a sub-config that does not set its own ``norm_type`` takes this one, so one flag
            switches every norm.
        norm_position: ``pre`` | ``post`` for the fusion stack (and for sub-configs that do not set theirs).
        classifier_dropout: dropout before the classifier.
        num_labels / id2label / label2id: the answer classes.
    """

    model_type = "lnorm-vision-text"
    sub_configs = {"vision_config": LNormViTConfig, "text_config": LNormVisionTextTextConfig}

    def __init__(
        self,
        vision_config: Optional[Union[dict, LNormViTConfig]] = None,
        text_config: Optional[Union[dict, LNormVisionTextTextConfig]] = None,
        hidden_size: int = 64,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        mlp_ratio: float = 2.0,
        intermediate_size: Optional[int] = None,
        hidden_act: str = "gelu",
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        norm_type: str = "layernorm",
        norm_position: str = "pre",
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        classifier_dropout: float = 0.0,
        **kwargs,
    ):
        set_stack_fields(self, hidden_size, num_hidden_layers, num_attention_heads, mlp_ratio, intermediate_size, hidden_act,
                         dropout, attention_dropout, norm_type, norm_position, layer_norm_eps, initializer_range)
        _check_positive("num_hidden_layers", num_hidden_layers)
        inherited = {"norm_type": norm_type, "norm_position": norm_position}
        vision_defaults = {**DEFAULT_VISION_CONFIG, **inherited} if vision_config is None else inherited
        self.vision_config = _sub_config(LNormViTConfig, vision_config, "vision_config", vision_defaults)
        self.text_config = _sub_config(LNormVisionTextTextConfig, text_config, "text_config", inherited)
        self.classifier_dropout = classifier_dropout
        super().__init__(**kwargs)

    def to_diff_dict(self):
        """As ``PretrainedConfig.to_diff_dict``, but each sub-config keeps its ``norm_type`` / ``norm_position``
        even when they equal the class defaults, so that loading does not let the top-level flags override them."""
        diff = super().to_diff_dict()
        for key in self.sub_configs:
            sub = getattr(self, key, None)
            if isinstance(diff.get(key), dict) and sub is not None:
                diff[key].update(norm_type=sub.norm_type, norm_position=sub.norm_position)
        return diff

    # Properties the export machinery and generic tooling read from the top-level config.
    @property
    def image_size(self) -> int:
        return self.vision_config.image_size

    @property
    def num_channels(self) -> int:
        return self.vision_config.num_channels

    @property
    def vocab_size(self) -> int:
        return self.text_config.vocab_size

    @property
    def max_position_embeddings(self) -> int:
        return self.text_config.max_position_embeddings
