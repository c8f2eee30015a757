"""Configuration of LNormVisionText, a vision-language classifier: two encoders, modality LayerNorms, fusion.

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

    The ``text_config`` of an ``LNormVisionTextConfig``; pass it as a dict or an
    instance. ``model_type`` is ``"lnorm-vision-text-text"``.

    Args:
        vocab_size: tokenizer vocabulary size.
        max_position_embeddings: longest question in tokens.
        hidden_size: width of the text encoder.
        num_hidden_layers: text encoder layers (at least 1).
        num_attention_heads: heads per attention layer; must divide ``hidden_size``.
        mlp_ratio: MLP width as a multiple of ``hidden_size``.
        intermediate_size: MLP width; overrides ``mlp_ratio`` when given.
        hidden_act: MLP activation (a key of ``transformers.activations.ACT2FN``).
        dropout: dropout on embeddings and residual branches.
        attention_dropout: dropout on attention weights.
        norm_type: ``layernorm`` | ``rmsnorm`` | ``dyt`` (Dynamic Tanh) | ``none``.
        norm_position: ``pre`` | ``post``.
        layer_norm_eps: eps of the norms.
        dyt_alpha_init: starting value of the learnable ``alpha`` of ``norm_type="dyt"`` (Dynamic Tanh,
            ``weight * tanh(alpha * x) + bias``); a positive finite float.
        initializer_range: std of the normal init.
        pad_token_id: id of the padding token (its embedding row is not special; padding is masked).
        **kwargs (Any): other ``PretrainedConfig`` arguments.

    Raises:
        ValueError: a size that is not a positive integer, ``hidden_size`` not divisible by
            ``num_attention_heads``, an unknown ``norm_type`` / ``norm_position``, or a ``dyt_alpha_init`` that is
            not a positive finite float.

    Examples:
        >>> from hf_lnorm.models import LNormVisionTextTextConfig
        >>> LNormVisionTextTextConfig(vocab_size=200, hidden_size=32, num_attention_heads=4).intermediate_size
        64
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
        dyt_alpha_init: float = 0.5,
        **kwargs,
    ):
        _check_positive("vocab_size", vocab_size)
        _check_positive("max_position_embeddings", max_position_embeddings)
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        set_stack_fields(self, hidden_size, num_hidden_layers, num_attention_heads, mlp_ratio, intermediate_size, hidden_act,
                         dropout, attention_dropout, norm_type, norm_position, layer_norm_eps, initializer_range,
                         dyt_alpha_init)
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

    ``model_type`` is ``"lnorm-vision-text"``. ``image_size``,
    ``num_channels``, ``vocab_size`` and ``max_position_embeddings`` are read-only
    views of the sub-configs' fields.

    Args:
        vision_config: dict or ``LNormViTConfig`` of the image encoder; default: ``DEFAULT_VISION_CONFIG``
            (32 x 32 RGB images, patches of 4, width 64, 2 layers).
        text_config: dict or ``LNormVisionTextTextConfig``.
        hidden_size: common width of the fusion transformer.
        num_hidden_layers: fusion layers (at least 1).
        num_attention_heads: heads per fusion attention layer; must divide ``hidden_size``.
        mlp_ratio: fusion MLP width as a multiple of ``hidden_size``.
        intermediate_size: fusion MLP width; overrides ``mlp_ratio`` when given.
        hidden_act: fusion MLP activation.
        dropout: dropout on residual branches of the fusion stack.
        attention_dropout: dropout on the fusion attention weights.
        norm_type: norm of the modality projections and the fusion stack (``layernorm`` | ``rmsnorm`` |
            ``dyt`` | ``none``); a sub-config that does not set its own ``norm_type`` takes this one, so one flag
            switches every norm.
        norm_position: ``pre`` | ``post`` for the fusion stack (and for sub-configs that do not set theirs).
        layer_norm_eps: eps of the fusion norms.
        dyt_alpha_init: starting value of the learnable ``alpha`` of ``norm_type="dyt"`` (Dynamic Tanh,
            ``weight * tanh(alpha * x) + bias``), a positive finite float; sub-configs that do not set
            their own take this one.
        initializer_range: std of the normal init.
        classifier_dropout: dropout before the classifier.
        **kwargs (Any): other ``PretrainedConfig`` arguments; ``num_labels`` / ``id2label`` / ``label2id``
            are the answer classes.

    Raises:
        ValueError: a bad fusion-stack size or norm setting (as the other families), or a bad sub-config field.
        TypeError: a sub-config that is neither a dict nor the expected config class.

    Examples:
        >>> from hf_lnorm.models import LNormVisionTextConfig
        >>> config = LNormVisionTextConfig(text_config={"vocab_size": 100}, norm_type="rmsnorm", num_labels=5)
        >>> config.vision_config.norm_type, config.text_config.norm_type, config.vocab_size, config.image_size
        ('rmsnorm', 'rmsnorm', 100, 32)
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
        dyt_alpha_init: float = 0.5,
        **kwargs,
    ):
        set_stack_fields(self, hidden_size, num_hidden_layers, num_attention_heads, mlp_ratio, intermediate_size, hidden_act,
                         dropout, attention_dropout, norm_type, norm_position, layer_norm_eps, initializer_range,
                         dyt_alpha_init)
        _check_positive("num_hidden_layers", num_hidden_layers)
        inherited = {"norm_type": norm_type, "norm_position": norm_position, "dyt_alpha_init": self.dyt_alpha_init}
        vision_defaults = {**DEFAULT_VISION_CONFIG, **inherited} if vision_config is None else inherited
        self.vision_config = _sub_config(LNormViTConfig, vision_config, "vision_config", vision_defaults)
        self.text_config = _sub_config(LNormVisionTextTextConfig, text_config, "text_config", inherited)
        self.classifier_dropout = classifier_dropout
        super().__init__(**kwargs)

    def to_diff_dict(self):
        """As ``PretrainedConfig.to_diff_dict``, but each sub-config keeps its norm fields.

        A sub-config's ``norm_type``, ``norm_position`` and ``dyt_alpha_init`` are kept even when they equal
        the class defaults, so that loading does not let the top-level flags override them.

        Returns:
            (dict): the serializable differences from the default config.
        """
        diff = super().to_diff_dict()
        for key in self.sub_configs:
            sub = getattr(self, key, None)
            if isinstance(diff.get(key), dict) and sub is not None:
                diff[key].update(norm_type=sub.norm_type, norm_position=sub.norm_position,
                                 dyt_alpha_init=getattr(sub, "dyt_alpha_init", 0.5))
        return diff

    # Properties the export machinery and generic tooling read from the top-level config.
    @property
    def image_size(self) -> int:
        """``vision_config.image_size``."""
        return self.vision_config.image_size

    @property
    def num_channels(self) -> int:
        """``vision_config.num_channels``."""
        return self.vision_config.num_channels

    @property
    def vocab_size(self) -> int:
        """``text_config.vocab_size``."""
        return self.text_config.vocab_size

    @property
    def max_position_embeddings(self) -> int:
        """``text_config.max_position_embeddings``."""
        return self.text_config.max_position_embeddings
