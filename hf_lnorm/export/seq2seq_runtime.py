"""The ONNX Runtime side of the encoder-decoder exports (``export/seq2seq.py``, ``export/speech.py``).

* ``OrtEncoderDecoder(family, out_dir)`` holds the graphs in ONNX Runtime sessions:
  ``encode``, ``decode`` and greedy ``generate`` (no Optimum needed);
* ``verify(family, model, out_dir)`` runs every graph on fresh inputs of other sizes
  (padding included) and returns the largest absolute difference from PyTorch;
* per graph of an export (the output directory loads like the export):
  ``optimize_seq2seq`` applies ONNX Runtime's fusions (SkipLayerNormalization,
  BiasGelu; attention stays unfused) and returns the fused-op counts,
  ``expected_seq2seq_fusions`` what they should reach, ``quantize_seq2seq_int8``
  writes dynamic int8 graphs;
* ``token_agreement`` compares greedy outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, TypeVar, Union

import numpy as np
import torch

from .families import DECODER_FILE, DECODER_WITH_PAST_FILE, ENCODER_FILE, GRAPH_FILES, EncoderDecoderFamily, decoder_vocab

__all__ = [
    "OrtEncoderDecoder",
    "expected_seq2seq_fusions",
    "graph_files",
    "optimize_seq2seq",
    "quantize_seq2seq_int8",
    "token_agreement",
    "verify",
]

T = TypeVar("T")

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
        nxt = torch.randint(3, decoder_vocab(model.config), (ids.shape[0], 1), generator=torch.Generator().manual_seed(2))
        step = graphs.decode(nxt, ref_hidden, mask, graphs.next_past(got))
        with torch.no_grad():
            full = model(attention_mask=mask, encoder_outputs=(ref_hidden,), decoder_input_ids=torch.cat([ids, nxt], 1), use_cache=False).logits
        err = max(err, float(np.abs(step["logits"][:, -1] - full[:, -1].numpy()).max()))
    return err


# --------------------------------------------------------------------------- ONNX Runtime fusions and int8, per graph


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
        config (transformers.PretrainedConfig): the model's config (heads, hidden size, ``model_type``).
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
