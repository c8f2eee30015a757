"""LayerNorm-centred model families, registered with the transformers Auto classes on import.

Families (one flat folder, so each family's files can be shipped as remote code):

* ``lnorm-gpt``: ``LNormGPTConfig``, ``LNormGPTModel``, ``LNormGPTForCausalLM``,
  ``LNormGPTForSequenceClassification`` (and the ImageGPT mode with ``ImageGPTColorProcessor``).
* ``lnorm-seq2seq``: ``LNormSeq2SeqConfig``, ``LNormSeq2SeqModel``, ``LNormSeq2SeqForConditionalGeneration``.

Example:
    >>> import hf_lnorm  # registers the families
    >>> from transformers import AutoConfig, AutoModelForCausalLM
    >>> config = AutoConfig.for_model("lnorm-gpt", vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
    >>> type(AutoModelForCausalLM.from_config(config)).__name__
    'LNormGPTForCausalLM'
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
)

from .configuration_lnorm_gpt import LNormGPTConfig
from .configuration_lnorm_seq2seq import LNormSeq2SeqConfig
from .layers import NORM_POSITIONS, NORM_TYPES, LNormLayerNorm, LNormRMSNorm
from .modeling_lnorm_gpt import (
    LNormGPTForCausalLM,
    LNormGPTForSequenceClassification,
    LNormGPTModel,
    LNormGPTPreTrainedModel,
)
from .processing_lnorm_imagegpt import ImageGPTColorProcessor, complete_images
from .modeling_lnorm_seq2seq import (
    LNormSeq2SeqForConditionalGeneration,
    LNormSeq2SeqModel,
    LNormSeq2SeqPreTrainedModel,
)

_REGISTRATIONS = [
    (LNormGPTConfig, AutoModel, LNormGPTModel),
    (LNormGPTConfig, AutoModelForCausalLM, LNormGPTForCausalLM),
    (LNormGPTConfig, AutoModelForSequenceClassification, LNormGPTForSequenceClassification),
    (LNormSeq2SeqConfig, AutoModel, LNormSeq2SeqModel),
    (LNormSeq2SeqConfig, AutoModelForSeq2SeqLM, LNormSeq2SeqForConditionalGeneration),
]


def register_auto_classes() -> None:
    """Register every family config and head with the Auto classes (idempotent; runs on import)."""
    for config_class, auto_class, model_class in _REGISTRATIONS:
        try:
            AutoConfig.register(config_class.model_type, config_class)
        except ValueError:  # already registered (module reloaded)
            pass
        try:
            auto_class.register(config_class, model_class)
        except ValueError:
            pass


register_auto_classes()

__all__ = [
    "ImageGPTColorProcessor",
    "complete_images",
    "NORM_POSITIONS",
    "NORM_TYPES",
    "LNormGPTConfig",
    "LNormGPTForCausalLM",
    "LNormGPTForSequenceClassification",
    "LNormGPTModel",
    "LNormGPTPreTrainedModel",
    "LNormLayerNorm",
    "LNormSeq2SeqConfig",
    "LNormSeq2SeqForConditionalGeneration",
    "LNormSeq2SeqModel",
    "LNormSeq2SeqPreTrainedModel",
    "LNormRMSNorm",
    "register_auto_classes",
]
