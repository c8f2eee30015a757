"""ONNX export of hf_lnorm's encoder-decoder families: an encoder graph and decoder graphs.

One machinery for ``lnorm-seq2seq`` (text, task ``text2text-generation``) and ``lnorm-speech``
(``automatic-speech-recognition``, see ``export/speech.py``); the two share the LNormSeq2Seq
decoder and differ only in the encoder's input (``input_ids`` or ``input_features``), described
by an ``EncoderDecoderFamily``. Graphs and names follow Optimum's seq2seq exports
(``encoder_model.onnx``, ``decoder_model.onnx``, ``decoder_with_past_model.onnx``):

* encoder: ``<encoder input>``, ``attention_mask`` -> ``last_hidden_state (batch, encoder_sequence_length, hidden)``;
* decoder: ``decoder_input_ids (batch, length)`` (Optimum: ``input_ids``), ``encoder_outputs``
  (Optimum: ``encoder_hidden_states``), ``attention_mask`` over the encoder input (Optimum:
  ``encoder_attention_mask``) -> ``logits`` (and, with past, ``present.{i}.decoder/encoder.key/value``);
* decoder with past: also ``past_key_values.{i}.decoder/encoder.key/value``, one new token per
  call -> ``logits``, ``present.{i}.decoder.key/value``.

Paths:

* transformers 4.57 + optimum-onnx: ``optimum_configs(family, model, task)`` gives Optimum the custom
  ONNX configs (task ``<base>`` -> encoder + decoder; ``<base>-with-past`` -> + decoder with past);
  ``optimum.onnxruntime.ORTModelForSeq2SeqLM`` loads the lnorm-seq2seq export.
* transformers 5.x: ``export_dynamo(family, model, out_dir, opset, task)`` writes the same graphs with
  ``torch.onnx.export`` (dynamo), the decoder with past included where ``family.dynamo_past``
  (lnorm-seq2seq; lnorm-speech keeps its encoder + decoder export on this path).

The example inputs always pad the last row, so a traced graph keeps the masking branch.
The families' specs live in one table (``export/families.py``): this module registers
``TEXT`` (``lnorm-seq2seq``), ``export/speech.py`` registers ``lnorm-speech``. Running the
graphs (``OrtEncoderDecoder``, ``verify``) and per-graph ONNX Runtime fusions and int8
(``optimize_seq2seq``, ``quantize_seq2seq_int8``) are in ``export/seq2seq_runtime.py``.
``hf-lnorm export --target tensorrt`` checks every graph for standard ops and prints a
``trtexec`` command per graph (``export/tensorrt.py``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch

from ..errors import UnsupportedArchitectureError
from .families import (DECODER_FILE, DECODER_WITH_PAST_FILE, ENCODER_FILE, FEATURES, WITH_PAST, EncoderDecoderFamily,
                       decoder_output, decoder_vocab, register_family)


# --------------------------------------------------------------------------- Optimum (transformers 4.57)


def optimum_base_class(base):
    """``base`` (an Optimum seq2seq OnnxConfig) with hf_lnorm's config names, opset 18 and a 1e-4 tolerance."""
    from optimum.utils.normalized_config import NormalizedSeq2SeqConfig

    class LNormEncoderDecoderOnnxConfig(base):
        NORMALIZED_CONFIG_CLASS = NormalizedSeq2SeqConfig.with_args(
            encoder_num_layers="num_hidden_layers",
            decoder_num_layers="num_decoder_layers",
            num_layers="num_decoder_layers",
            encoder_num_attention_heads="num_attention_heads",
            decoder_num_attention_heads="num_attention_heads",
            allow_new=True,
        )
        DEFAULT_ONNX_OPSET = 18
        ATOL_FOR_VALIDATION = 1e-4

    return LNormEncoderDecoderOnnxConfig


def check_task(model, task: str, accepted: Tuple[str, ...], where: str = "") -> None:
    """Raise ``UnsupportedArchitectureError`` unless ``task`` is in ``accepted`` and fits the model's head.

    ``feature-extraction`` exports the bare model (decoder ``last_hidden_state``); the generation tasks
    need the model with its LM head (``logits``).
    """
    name = type(model).__name__
    if task not in accepted:
        raise UnsupportedArchitectureError(f"unsupported task {task!r} for {name}: accepted tasks{where}: {', '.join(map(repr, accepted))}")
    if (task == FEATURES) == bool(model.can_generate()):
        needs = "the bare model (AutoModel)" if task == FEATURES else "the model with its LM head (AutoModelForSeq2SeqLM)"
        raise UnsupportedArchitectureError(f"task {task!r} does not fit {name}: it exports {needs}")


def optimum_configs(family: EncoderDecoderFamily, model, task: str):
    """``(custom_onnx_configs, None)`` for Optimum's exporter, keyed as its encoder-decoder submodels.

    Raises:
        hf_lnorm.export.UnsupportedArchitectureError: ``task`` is not one of ``family.tasks``.
    """
    check_task(model, task, family.tasks)
    use_past = task.endswith(WITH_PAST)
    base_task = FEATURES if task == FEATURES else family.task
    config = family.onnx_config_class()(model.config, task=base_task, use_past=use_past, use_past_in_inputs=False)
    configs = {
        "encoder_model": config.with_behavior("encoder"),
        "decoder_model": config.with_behavior("decoder", use_past=use_past, use_past_in_inputs=False),
    }
    if use_past:
        configs["decoder_with_past_model"] = config.with_behavior("decoder", use_past=True, use_past_in_inputs=True)
    if family.optimum_encoder is None:
        return configs, None
    return configs, lambda m: {name: family.optimum_encoder(m) if name == "encoder_model" else m for name in configs}


# --------------------------------------------------------------------------- torch.onnx (transformers 5.x)


class _Encoder(torch.nn.Module):
    # holds the whole model: an embedding shared with the decoder is registered on the model, not on its encoder
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, source, attention_mask):
        return self.model.get_encoder()(source, attention_mask=attention_mask, return_dict=True).last_hidden_state


def _past_names(num_layers: int, prefix: str, encoder: bool = True) -> List[str]:
    """``{prefix}.{i}.decoder.key/value`` (and ``.encoder.key/value``) per layer, in Optimum's order."""
    parts = ("decoder", "encoder") if encoder else ("decoder",)
    return [f"{prefix}.{i}.{part}.{kv}" for i in range(num_layers) for part in parts for kv in ("key", "value")]


class _Decoder(torch.nn.Module):
    """The decoder as one graph: logits, and with ``use_cache`` the cache as flat ``present.*`` tensors.

    With ``past`` tensors (self-attention key/value, cross-attention key/value per layer) the cache is
    rebuilt as an ``EncoderDecoderCache`` whose cross-attention part is already filled.
    """

    def __init__(self, model, use_cache: bool = False, output: str = "logits"):
        super().__init__()
        self.model = model
        self.use_cache = use_cache
        self.output = output

    def forward(self, decoder_input_ids, encoder_outputs, attention_mask, *past):
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        cache = None
        if past:
            own, cross = DynamicCache(), DynamicCache()
            for i in range(len(past) // 4):
                own.update(past[4 * i], past[4 * i + 1], i)
                cross.update(past[4 * i + 2], past[4 * i + 3], i)
            cache = EncoderDecoderCache(own, cross)
            cache.is_updated.update({i: True for i in range(len(past) // 4)})
        out = self.model(
            attention_mask=attention_mask,
            encoder_outputs=(encoder_outputs,),
            decoder_input_ids=decoder_input_ids,
            past_key_values=cache,
            use_cache=self.use_cache,
            return_dict=True,
        )
        if not self.use_cache:
            return out[self.output]
        present = out["cache"] if "cache" in out else out["past_key_values"]
        flat = []
        for own, cross in zip(present.self_attention_cache.layers, present.cross_attention_cache.layers):
            flat += [own.keys, own.values] + ([] if past else [cross.keys, cross.values])
        return (out.logits, *flat)


def dynamo_with_past(family: EncoderDecoderFamily, model, task: str) -> bool:
    """Whether ``task`` asks the torch.onnx path for the decoder-with-past graph.

    Raises:
        hf_lnorm.export.UnsupportedArchitectureError: a task the torch.onnx path does not export for ``family``.
    """
    accepted = tuple(t for t in family.tasks if family.dynamo_past or not t.endswith(WITH_PAST))
    if task == family.task + WITH_PAST and task not in accepted:
        raise UnsupportedArchitectureError(
            f"task {task!r} for {type(model).__name__} needs Optimum's past-key-values export "
            f"(transformers 4.57 with optimum-onnx); the torch.onnx path exports {family.task!r}"
        )
    check_task(model, task, accepted, " on the torch.onnx path")
    return task.endswith(WITH_PAST)


def export_dynamo(family: EncoderDecoderFamily, model, out_dir: Union[str, Path], opset: int, task: Optional[str] = None) -> List[str]:
    """Write ``encoder_model.onnx`` and ``decoder_model.onnx`` with ``torch.onnx.export(dynamo=True)``.

    With ``task`` ``<family task>-with-past`` the decoder also returns ``present.*`` and
    ``decoder_with_past_model.onnx`` is written (one new token per call, Optimum's input and output names).
    """
    task = task or family.task
    with_past = dynamo_with_past(family, model, task)
    out_dir = Path(out_dir)
    model.eval()
    batch, source, length = family.export_sizes
    inputs = family.example_inputs(model.config, batch, source, length, 0)
    with torch.no_grad():
        hidden = model.get_encoder()(inputs[family.encoder_input], attention_mask=inputs["attention_mask"]).last_hidden_state
    batch_dim = torch.export.Dim("batch_size")
    max_len = model.config.max_position_embeddings
    dec_len = torch.export.Dim("decoder_sequence_length", max=max_len)
    encoder_shapes, hidden_shape, mask_shape = family.dynamo_source_dims(model.config, batch_dim)
    layers = model.config.num_decoder_layers
    decoder_args = (inputs["decoder_input_ids"], hidden, inputs["attention_mask"])
    decoder_names = ["decoder_input_ids", "encoder_outputs", "attention_mask"]
    jobs = [
        (_Encoder(model), (inputs[family.encoder_input], inputs["attention_mask"]), [family.encoder_input, "attention_mask"],
         ["last_hidden_state"], encoder_shapes, ENCODER_FILE),
        (_Decoder(model, use_cache=with_past, output=decoder_output(task)), decoder_args, decoder_names,
         [decoder_output(task)] + (_past_names(layers, "present") if with_past else []),
         ({0: batch_dim, 1: dec_len}, hidden_shape, mask_shape), DECODER_FILE),
    ]
    if with_past:
        with torch.no_grad():
            first = _Decoder(model, use_cache=True)(*decoder_args)[1:]
        past_len = torch.export.Dim("past_decoder_sequence_length", min=2, max=max_len - 1)
        past_shapes = tuple({0: batch_dim, 2: past_len if ".decoder." in n else hidden_shape[1]} for n in _past_names(layers, "p"))
        step = inputs["decoder_input_ids"][:, :1]
        jobs.append((_Decoder(model, use_cache=True), (step, hidden, inputs["attention_mask"], *first),
                     decoder_names + _past_names(layers, "past_key_values"),
                     ["logits"] + _past_names(layers, "present", encoder=False),
                     ({0: batch_dim}, hidden_shape, mask_shape, past_shapes), DECODER_WITH_PAST_FILE))  # *past is one nested arg
    for module, args, names, outputs, shapes, filename in jobs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                args,
                str(out_dir / filename),
                input_names=names,
                output_names=outputs,
                dynamic_shapes=shapes,
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    return sorted(job[-1] for job in jobs)


# --------------------------------------------------------------------------- the lnorm-seq2seq (text) family


def text_example_inputs(config, batch: int = 2, source: int = 7, length: int = 5, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Source ids, a source mask with the last row right-padded, and decoder ids (start token first)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, config.vocab_size, (batch, source), generator=gen)
    mask = torch.ones(batch, source, dtype=torch.long)
    if batch > 1:
        mask[-1, source - max(1, source // 3) :] = 0
        ids[-1][mask[-1] == 0] = config.pad_token_id
    dec = torch.randint(3, decoder_vocab(config), (batch, length), generator=gen)
    dec[:, 0] = config.decoder_start_token_id
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec}


def _fit_dummy_text(generator, config, vocab_size: int) -> None:
    """An Optimum dummy text generator's ids below ``vocab_size``, its length within the position table."""
    generator.vocab_size = vocab_size
    generator.sequence_length = min(generator.sequence_length, config.max_position_embeddings)


def _text_onnx_config_class():
    from optimum.exporters.onnx.config import TextSeq2SeqOnnxConfig
    from optimum.utils import DummySeq2SeqDecoderTextInputGenerator, DummySeq2SeqPastKeyValuesGenerator, DummyTextInputGenerator

    class LNormSeq2SeqSourceGenerator(DummyTextInputGenerator):
        """Source ids and a mask (Optimum's pads every row on the right), within the position table."""

        def __init__(self, task, normalized_config, **kwargs):
            super().__init__(task, normalized_config, **kwargs)
            _fit_dummy_text(self, normalized_config.config, normalized_config.config.vocab_size)

    class LNormSeq2SeqTargetGenerator(DummySeq2SeqDecoderTextInputGenerator):
        """Decoder ids below the target vocabulary (``decoder_vocab_size`` may differ from the source's)."""

        def __init__(self, task, normalized_config, **kwargs):
            super().__init__(task, normalized_config, **kwargs)
            _fit_dummy_text(self, normalized_config.config, decoder_vocab(normalized_config.config))

    class LNormSeq2SeqOnnxConfig(optimum_base_class(TextSeq2SeqOnnxConfig)):
        """LNormSeq2Seq for Optimum: encoder, decoder and decoder-with-past graphs (see the module docstring)."""

        DUMMY_INPUT_GENERATOR_CLASSES = (
            LNormSeq2SeqSourceGenerator,
            LNormSeq2SeqTargetGenerator,
            DummySeq2SeqPastKeyValuesGenerator,
        )

    return LNormSeq2SeqOnnxConfig


class TextEncoderForExport(torch.nn.Module):
    """The LNormSeq2Seq encoder as Optimum traces it, with the whole model registered.

    A shared embedding belongs to the model, not to its encoder; traced through ``model.get_encoder()``
    alone it would be a constant that requires grad, which the TorchScript tracer refuses.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, input_ids, attention_mask=None):
        return self.model.get_encoder()(input_ids, attention_mask=attention_mask, return_dict=True)


def _text_dynamo_dims(config, batch_dim):
    source = torch.export.Dim("encoder_sequence_length", max=config.max_position_embeddings)
    axes = {0: batch_dim, 1: source}
    return (dict(axes), dict(axes)), dict(axes), dict(axes)


TEXT = EncoderDecoderFamily(
    model_type="lnorm-seq2seq",
    task="text2text-generation",
    encoder_input="input_ids",
    example_inputs=text_example_inputs,
    export_sizes=(2, 7, 5),
    verify_sizes=(3, 9, 4),
    onnx_config_class=_text_onnx_config_class,
    dynamo_source_dims=_text_dynamo_dims,
    optimum_encoder=TextEncoderForExport,
    feature_extraction=True,
)


register_family(TEXT)


# names that moved to export/families.py and export/seq2seq_runtime.py -> their new module
_MOVED = {
    **{name: "hf_lnorm.export.families" for name in ("GRAPH_FILES", "family_of")},
    **{name: "hf_lnorm.export.seq2seq_runtime" for name in (
        "OrtEncoderDecoder", "expected_seq2seq_fusions", "graph_files", "optimize_seq2seq", "quantize_seq2seq_int8",
        "token_agreement", "verify")},
}


def __getattr__(name: str):
    """Resolve a name that moved out of this module, with a ``DeprecationWarning`` naming its new module.

    Raises:
        AttributeError: ``name`` was never defined here.
    """
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _MOVED[name]
    warnings.warn(f"hf_lnorm.export.seq2seq.{name} has moved: use 'from {module} import {name}'",
                  DeprecationWarning, stacklevel=2)
    if module == "hf_lnorm.export.families":
        from . import families as target
    else:
        from . import seq2seq_runtime as target
    return getattr(target, name)


__all__ = [
    "DECODER_FILE",
    "DECODER_WITH_PAST_FILE",
    "ENCODER_FILE",
    "EncoderDecoderFamily",
    "TEXT",
    "check_task",
    "dynamo_with_past",
    "export_dynamo",
    "optimum_base_class",
    "optimum_configs",
    "text_example_inputs",
]
