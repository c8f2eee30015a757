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
``verify(family, model, out_dir)`` runs every graph in ONNX Runtime on fresh inputs of other sizes
(padding included) and returns the largest absolute difference from PyTorch;
``OrtEncoderDecoder(family, out_dir).generate(...)`` decodes greedily through the graphs (no Optimum needed).

After the export, per graph (the output directory loads like the export):
``optimize_seq2seq(onnx_dir, output_dir, config)`` applies ONNX Runtime's fusions (SkipLayerNormalization,
BiasGelu; attention stays unfused) and returns the fused-op counts, ``expected_seq2seq_fusions(config)``
what they should reach; ``quantize_seq2seq_int8(onnx_dir, output_dir)`` writes dynamic int8 graphs;
``token_agreement`` compares greedy outputs. ``hf-lnorm export --target tensorrt`` checks every graph for
standard ops and prints a ``trtexec`` command per graph (``export/tensorrt.py``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

import numpy as np
import torch

ENCODER_FILE = "encoder_model.onnx"
DECODER_FILE = "decoder_model.onnx"
DECODER_WITH_PAST_FILE = "decoder_with_past_model.onnx"
WITH_PAST = "-with-past"
FEATURES = "feature-extraction"  # the bare encoder-decoder (no LM head): the decoder's last_hidden_state
T = TypeVar("T")


@dataclass(frozen=True)
class EncoderDecoderFamily:
    """What differs between hf_lnorm's encoder-decoder families.

    Attributes:
        model_type: ``config.model_type``.
        task: the export task without past (``<task>-with-past`` adds the decoder-with-past graph).
        encoder_input: name of the encoder's main input (``input_ids`` / ``input_features``).
        example_inputs: ``(config, batch, source, length, seed) -> {encoder_input, attention_mask, decoder_input_ids}``,
            the last row right-padded; ``source`` counts tokens or frames.
        export_sizes / verify_sizes: ``(batch, source, length)`` for the export trace and for ``verify``.
        onnx_config_class: ``() -> Optimum OnnxConfig class`` (imports Optimum lazily).
        dynamo_source_dims: ``(config, batch_dim) -> (encoder input shapes, decoder encoder_outputs shape,
            decoder attention_mask shape)`` for ``torch.export``.
        optimum_encoder: ``model -> module`` Optimum exports as the encoder (default: ``model.get_encoder()``).
        dynamo_past: whether the torch.onnx path writes the decoder-with-past graph for ``<task>-with-past``.
        feature_extraction: whether task ``feature-extraction`` (the bare model, no past) is exported.
    """

    model_type: str
    task: str
    encoder_input: str
    example_inputs: Callable[..., Dict[str, torch.Tensor]]
    export_sizes: Tuple[int, int, int]
    verify_sizes: Tuple[int, int, int]
    onnx_config_class: Callable[[], type]
    dynamo_source_dims: Callable[..., Tuple[tuple, dict, dict]]
    optimum_encoder: Optional[Callable[[torch.nn.Module], torch.nn.Module]] = None
    dynamo_past: bool = True
    feature_extraction: bool = False

    @property
    def tasks(self) -> Tuple[str, ...]:
        return (self.task, self.task + WITH_PAST) + ((FEATURES,) if self.feature_extraction else ())


def decoder_output(task: str) -> str:
    """The decoder graph's main output: ``last_hidden_state`` for the bare model's features, else ``logits``."""
    return "last_hidden_state" if task == FEATURES else "logits"


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
    from . import UnsupportedArchitectureError

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
    from . import UnsupportedArchitectureError

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


# --------------------------------------------------------------------------- verification

# Optimum names the decoder inputs input_ids / encoder_hidden_states / encoder_attention_mask
_ALIASES = {"input_ids": "decoder_input_ids", "encoder_hidden_states": "encoder_outputs", "encoder_attention_mask": "attention_mask"}


class OrtEncoderDecoder:
    """The exported graphs in ONNX Runtime sessions (CPU): ``encode``, ``decode`` and greedy ``generate``.

    Works on both export paths (Optimum's decoder input names are mapped); needs no Optimum.
    """

    def __init__(self, family: EncoderDecoderFamily, out_dir: Union[str, Path]):
        import onnxruntime as ort

        out_dir = Path(out_dir)
        self.family = family
        names = [ENCODER_FILE, DECODER_FILE] + ([DECODER_WITH_PAST_FILE] if (out_dir / DECODER_WITH_PAST_FILE).exists() else [])
        self.sessions = {n: ort.InferenceSession(str(out_dir / n), providers=["CPUExecutionProvider"]) for n in names}

    @property
    def has_past(self) -> bool:
        return DECODER_WITH_PAST_FILE in self.sessions

    def _run(self, filename: str, feed: Dict[str, torch.Tensor]) -> Dict[str, np.ndarray]:
        sess = self.sessions[filename]
        # a text encoder's input_ids are its own; the decoders' follow Optimum's names
        aliases = {} if filename == ENCODER_FILE else _ALIASES
        feed = {name: feed[aliases.get(name, name)].numpy() for name in (i.name for i in sess.get_inputs())}
        outs = [o.name for o in sess.get_outputs()]
        return dict(zip(outs, sess.run(outs, feed)))

    def encode(self, source: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._run(ENCODER_FILE, {self.family.encoder_input: source, "attention_mask": attention_mask})["last_hidden_state"])

    def decode(self, decoder_input_ids, hidden, attention_mask, past: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, np.ndarray]:
        """Decoder outputs by name; with ``past`` (``past_key_values.*``) through the decoder-with-past graph."""
        feed = {"decoder_input_ids": decoder_input_ids, "encoder_outputs": hidden, "attention_mask": attention_mask, **(past or {})}
        return self._run(DECODER_WITH_PAST_FILE if past else DECODER_FILE, feed)

    @staticmethod
    def next_past(outputs: Dict[str, np.ndarray], past: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """``past_key_values.*`` for the next step: the new ``present.*``, cross-attention entries kept from ``past``."""
        new = {"past_key_values." + k[len("present."):]: torch.from_numpy(v) for k, v in outputs.items() if k.startswith("present.")}
        return {**(past or {}), **new}

    def generate(self, source, attention_mask, config, max_new_tokens: int = 20) -> torch.Tensor:
        """Greedy decoding as ``model.generate(do_sample=False, num_beams=1)``: start token first, pad after EOS."""
        hidden = self.encode(source, attention_mask)
        tokens = torch.full((source.shape[0], 1), config.decoder_start_token_id, dtype=torch.long)
        done = torch.zeros(source.shape[0], dtype=torch.bool)
        past = None
        for _ in range(max_new_tokens):
            step = tokens[:, -1:] if past is not None else tokens
            out = self.decode(step, hidden, attention_mask, past)
            if self.has_past:
                past = self.next_past(out, past)
            nxt = torch.from_numpy(out["logits"][:, -1].argmax(-1))
            nxt = torch.where(done, torch.full_like(nxt, config.pad_token_id), nxt)
            tokens = torch.cat([tokens, nxt[:, None]], 1)
            done |= nxt == config.eos_token_id
            if bool(done.all()):
                break
        return tokens


def verify(family: EncoderDecoderFamily, model, out_dir: Union[str, Path], inputs: Optional[Dict[str, torch.Tensor]] = None) -> float:
    """Largest |ONNX Runtime - PyTorch| over the encoder output and the decoder logits (and the decoder with past).

    Args:
        inputs: ``{encoder_input, attention_mask, decoder_input_ids}``; default: ``family.example_inputs`` at
            ``family.verify_sizes`` (other sizes than the export's, last row padded).
    """
    graphs = OrtEncoderDecoder(family, out_dir)
    if inputs is None:
        inputs = family.example_inputs(model.config, *family.verify_sizes, 1)
    source, mask, ids = inputs[family.encoder_input], inputs["attention_mask"], inputs["decoder_input_ids"]

    model.eval()
    with torch.no_grad():
        ref_hidden = model.get_encoder()(source, attention_mask=mask).last_hidden_state
        ref = model(attention_mask=mask, encoder_outputs=(ref_hidden,), decoder_input_ids=ids, use_cache=False, return_dict=True)
    err = float((graphs.encode(source, mask) - ref_hidden).abs().max())
    got = graphs.decode(ids, ref_hidden, mask)
    name = "logits" if "logits" in got else "last_hidden_state"  # the bare model's features
    err = max(err, float(np.abs(got[name] - ref[name].numpy()).max()))
    if graphs.has_past:
        # one more token on top of the cache the full decoder just produced
        nxt = torch.randint(3, _decoder_vocab(model.config), (ids.shape[0], 1), generator=torch.Generator().manual_seed(2))
        step = graphs.decode(nxt, ref_hidden, mask, graphs.next_past(got))
        with torch.no_grad():
            full = model(attention_mask=mask, encoder_outputs=(ref_hidden,), decoder_input_ids=torch.cat([ids, nxt], 1), use_cache=False).logits
        err = max(err, float(np.abs(step["logits"][:, -1] - full[:, -1].numpy()).max()))
    return err


def _decoder_vocab(config) -> int:
    return getattr(config, "decoder_vocab_size", None) or config.vocab_size


# --------------------------------------------------------------------------- ONNX Runtime fusions and int8, per graph

GRAPH_FILES = (ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE)


def graph_files(onnx_dir: Union[str, Path]) -> List[str]:
    """The encoder-decoder graphs in ``onnx_dir`` (``GRAPH_FILES`` present there, in that order)."""
    return [name for name in GRAPH_FILES if (Path(onnx_dir) / name).is_file()]


def _per_graph(onnx_dir: Union[str, Path], output_dir: Union[str, Path], convert: Callable[[Path, Path], T]) -> Dict[str, T]:
    """``convert(src, dst)`` for every graph of ``onnx_dir``, written under the same name in ``output_dir``.

    The other files of ``onnx_dir`` (``config.json``, ``generation_config.json``, the tokenizer) are copied, so
    ``output_dir`` loads like the export (``OrtEncoderDecoder``, Optimum's ``ORTModelForSeq2SeqLM``).

    Raises:
        FileNotFoundError: ``onnx_dir`` holds no encoder-decoder graph.
        ValueError: ``output_dir`` is ``onnx_dir``.
    """
    import shutil

    onnx_dir, output_dir = Path(onnx_dir), Path(output_dir)
    files = graph_files(onnx_dir)
    if not files:
        raise FileNotFoundError(f"no encoder-decoder ONNX graph ({', '.join(GRAPH_FILES)}) in {onnx_dir}")
    if output_dir.exists() and output_dir.resolve() == onnx_dir.resolve():
        raise ValueError(f"output directory {output_dir} is the input directory; write the converted graphs elsewhere")
    output_dir.mkdir(parents=True, exist_ok=True)
    for path in onnx_dir.iterdir():
        if path.is_file() and path.suffix != ".onnx":
            shutil.copy2(path, output_dir / path.name)
    return {name: convert(onnx_dir / name, output_dir / name) for name in files}


def optimize_seq2seq(onnx_dir: Union[str, Path], output_dir: Union[str, Path], config, disable: Sequence[str] = ()) -> Dict[str, Dict[str, int]]:
    """ONNX Runtime's transformer fusions (``hf_lnorm.export.ort.optimize_onnx``) on every graph of an export.

    ``lnorm-seq2seq`` uses ORT's ``bart`` pattern set (``ORT_MODEL_TYPES``). What fuses (ORT 1.32, both export
    paths): every ``LayerNormalization`` becomes a ``SkipLayerNormalization`` (residual add folded in) and each
    block's MLP activation a ``BiasGelu``; attention stays unfused (no ``Attention`` / ``MultiHeadAttention``):
    none of ORT's attention patterns matches the ``scaled_dot_product_attention`` subgraph (boolean-mask
    ``Where`` before the softmax, ``IsNaN`` guard after it) of either exporter. ``expected_seq2seq_fusions``
    gives the counts to check.

    Args:
        onnx_dir: the export (``encoder_model.onnx``, ``decoder_model.onnx``, optionally ``decoder_with_past_model.onnx``).
        output_dir: where the fused graphs go, under the same names (with the export's other files).
        config: the model's config (heads, hidden size, ``model_type``).
        disable: fusions to switch off (see ``optimize_onnx``).
    Returns:
        Per graph file, the fused-op counts (``hf_lnorm.export.ort.FUSED_OPS``).
    """
    from .ort import optimize_onnx

    return _per_graph(onnx_dir, output_dir, lambda src, dst: optimize_onnx(src, dst, config, disable=disable))


def expected_seq2seq_fusions(config) -> Dict[str, Dict[str, int]]:
    """Per graph file, the fused-op counts ``optimize_seq2seq`` reaches (for ``check_fusions``).

    Norms (``norm_type="layernorm"``): one ``LayerNormalization`` or ``SkipLayerNormalization`` per norm,
    2 per encoder block and 3 per decoder block (self-attention, cross-attention, MLP), plus the final norm of
    each stack with ``norm_position="pre"``. GELU MLPs: one Gelu-family op per block. No ``Attention`` (see
    ``optimize_seq2seq``). Other norm types and activations make no claim on those ops.
    """
    pre = getattr(config, "norm_position", "pre") == "pre"
    layernorm = getattr(config, "norm_type", "layernorm") == "layernorm"
    gelu = str(getattr(config, "hidden_act", "")).startswith("gelu")

    def stack(layers: int, norms_per_block: int) -> Dict[str, int]:
        out = {}
        if layernorm:
            out["LayerNormalization+SkipLayerNormalization"] = norms_per_block * layers + int(pre)
        if gelu:
            out["gelu"] = layers
        return out

    decoder = stack(config.num_decoder_layers, 3)
    return {ENCODER_FILE: stack(config.num_hidden_layers, 2), DECODER_FILE: decoder, DECODER_WITH_PAST_FILE: dict(decoder)}


def quantize_seq2seq_int8(onnx_dir: Union[str, Path], output_dir: Union[str, Path], **kwargs) -> Dict[str, Path]:
    """Dynamic int8 (``hf_lnorm.export.ort.quantize_dynamic_int8``, ``kwargs`` passed on) of every graph.

    The input may be the plain export or ``optimize_seq2seq``'s fused graphs; ``output_dir`` loads like the export.

    Returns:
        Per graph file, the int8 model's path.
    """
    from .ort import quantize_dynamic_int8

    return _per_graph(onnx_dir, output_dir, lambda src, dst: quantize_dynamic_int8(src, dst, **kwargs))


def token_agreement(reference: torch.Tensor, other: torch.Tensor, pad_token_id: int) -> float:
    """Share of ``reference``'s generated tokens (start token and padding excluded) that ``other`` has at the same place.

    Sequences of different lengths are compared on the reference's positions (missing ones count as misses).
    """
    ref = reference[:, 1:]
    got = torch.full_like(ref, -1)
    width = min(ref.shape[1], other.shape[1] - 1)
    got[:, :width] = other[:, 1 : width + 1]
    real = ref != pad_token_id
    return float(((ref == got) & real).sum()) / max(1, int(real.sum()))


# --------------------------------------------------------------------------- the lnorm-seq2seq (text) family


def text_example_inputs(config, batch: int = 2, source: int = 7, length: int = 5, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Source ids, a source mask with the last row right-padded, and decoder ids (start token first)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, config.vocab_size, (batch, source), generator=gen)
    mask = torch.ones(batch, source, dtype=torch.long)
    if batch > 1:
        mask[-1, source - max(1, source // 3) :] = 0
        ids[-1][mask[-1] == 0] = config.pad_token_id
    dec = torch.randint(3, _decoder_vocab(config), (batch, length), generator=gen)
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
            _fit_dummy_text(self, normalized_config.config, _decoder_vocab(normalized_config.config))

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


def family_of(model) -> Optional[EncoderDecoderFamily]:
    """The ``EncoderDecoderFamily`` of an hf_lnorm encoder-decoder model, else ``None``."""
    from .speech import SPEECH

    model_type = getattr(getattr(model, "config", None), "model_type", "")
    return next((f for f in (TEXT, SPEECH) if f.model_type == model_type), None)


__all__ = [
    "DECODER_FILE",
    "DECODER_WITH_PAST_FILE",
    "ENCODER_FILE",
    "EncoderDecoderFamily",
    "GRAPH_FILES",
    "OrtEncoderDecoder",
    "TEXT",
    "dynamo_with_past",
    "expected_seq2seq_fusions",
    "export_dynamo",
    "family_of",
    "graph_files",
    "optimize_seq2seq",
    "optimum_configs",
    "quantize_seq2seq_int8",
    "text_example_inputs",
    "token_agreement",
    "verify",
]
