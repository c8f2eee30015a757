"""Translation recipe helpers: a locally trained tokenizer, seq2seq models from a config, BLEU/chrF.

No pretrained translation weights exist offline, so the recipe trains a
joint source+target subword tokenizer on the training split and a model from
a config (the project's ``lnorm-seq2seq`` family or any Hub seq2seq
architecture such as ``marian``, ``bart``, ``t5``).

Examples:
    >>> tok = train_joint_tokenizer(["In the beginning", "En el principio"], vocab_size=300)
    >>> model = build_seq2seq_from_config("marian", tok, {"d_model": 64, "encoder_layers": 1, "decoder_layers": 1})
    >>> sentence = "En el principio creó Dios los cielos y la tierra"
    >>> round(translation_scores([sentence], [sentence])["bleu"], 6)
    100.0
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterable, List, Optional, Sequence

__all__ = ["SPECIAL_TOKENS", "train_joint_tokenizer", "parse_config_overrides", "build_seq2seq_from_config", "translation_scores",
           "check_label_order"]

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>", "bos_token": "<s>"}


def train_joint_tokenizer(texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2):
    """Train a byte-fallback-free BPE tokenizer shared by source and target languages.

    Metaspace pre-tokenization (SentencePiece style ``▁`` word marks) makes
    decoding restore spaces exactly; NFKC normalisation folds compatibility
    characters. Every encoded sequence ends with ``</s>``.

    Args:
        texts: training sentences of both languages.
        vocab_size: target vocabulary size, special tokens included.
        min_frequency: merges must occur at least this often.

    Returns:
        (transformers.PreTrainedTokenizerFast): the tokenizer, with ``<pad>`` (id 0), ``</s>`` (1), ``<unk>`` (2),
            ``<s>`` (3); it returns ``input_ids`` and ``attention_mask`` only, so its output can be passed to a
            seq2seq model's ``generate`` as is.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [SPECIAL_TOKENS[k] for k in ("pad_token", "eos_token", "unk_token", "bos_token")]
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    eos = SPECIAL_TOKENS["eos_token"]
    tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
                                                       special_tokens=[(eos, tok.token_to_id(eos))])
    # Only what the seq2seq models take: without this, transformers 4.x also returns ``token_type_ids`` and
    # ``model.generate(**tokenizer(texts, return_tensors="pt"))`` rejects them.
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_input_names=["input_ids", "attention_mask"], **SPECIAL_TOKENS)


def parse_config_overrides(text: Optional[str]) -> Dict[str, Any]:
    """Parse ``--config_overrides``: a JSON object or ``key=value,key=value`` (values read as JSON when possible).

    Args:
        text: the option value, or ``None``.

    Returns:
        A dict of config attributes.

    Raises:
        ValueError: a ``key=value`` item without ``=``.
    """
    if not text:
        return {}
    text = text.strip()
    if text.startswith("{"):
        return json.loads(text)
    out: Dict[str, Any] = {}
    for item in text.split(","):
        if "=" not in item:
            raise ValueError(f"config_overrides item {item!r} is not key=value (accepted: a JSON object or k=v,k=v)")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v.strip()
    return out


def build_seq2seq_from_config(model_type: str, tokenizer, overrides: Optional[Dict[str, Any]] = None):
    """Build a freshly initialised ``AutoModelForSeq2SeqLM`` for ``model_type`` sized to ``tokenizer``.

    The special token ids are taken from the tokenizer; decoding starts with
    ``<pad>`` (as T5 and Marian do).

    Args:
        model_type: a registered config type, e.g. ``"lnorm-seq2seq"``, ``"marian"``, ``"bart"``, ``"t5"``.
        tokenizer (transformers.PreTrainedTokenizerBase): the tokenizer the model will read.
        overrides: config attributes (sizes, dropout, norm options).

    Returns:
        (transformers.PreTrainedModel): the model (random weights).

    Raises:
        ValueError: ``model_type`` is not a registered config type, or has no seq2seq LM class.
    """
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
               bos_token_id=tokenizer.bos_token_id, decoder_start_token_id=tokenizer.pad_token_id)
    if model_type == "marian":
        ids["decoder_vocab_size"] = len(tokenizer)
    if model_type in ("bart", "marian", "mbart", "fsmt"):
        ids["forced_eos_token_id"] = tokenizer.eos_token_id
    params = {**ids, **(overrides or {})}
    try:
        config = AutoConfig.for_model(model_type, **params)
    except ValueError as err:
        raise ValueError(f"model_type {model_type!r} is not a registered config type ({err}); "
                         f"accepted: 'lnorm-seq2seq' (import hf_lnorm) or a transformers seq2seq type such as 'marian', 'bart', 't5'")
    try:
        return AutoModelForSeq2SeqLM.from_config(config)
    except ValueError as err:
        raise ValueError(f"model_type {model_type!r} has no sequence-to-sequence LM class: {err}")


def translation_scores(predictions: Sequence[str], references: Sequence[str]) -> Dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu defaults: 13a tokenisation, chrF with char order 6, beta 2).

    Args:
        predictions: system outputs, one per segment.
        references: one reference per segment.

    Returns:
        ``{"bleu", "chrf", "count"}``.

    Raises:
        ValueError: the two lists differ in length or are empty.
    """
    import sacrebleu

    if len(predictions) != len(references) or not references:
        raise ValueError(f"need equally many predictions and references, got {len(predictions)} and {len(references)}")
    preds: List[str] = [p.strip() for p in predictions]
    refs: List[str] = [r.strip() for r in references]
    return {"bleu": sacrebleu.corpus_bleu(preds, [refs]).score, "chrf": sacrebleu.corpus_chrf(preds, [refs]).score, "count": len(refs)}


def check_label_order(label_ids, expected: Sequence[Sequence[int]], pad_token_id: int) -> None:
    """Raise unless the evaluated rows are the evaluation set's, in its order.

    Predictions are scored against references by position, so a sampler that reorders the evaluation set
    (transformers' length grouping does, with ``group_by_length``) would pair each prediction with another
    sentence's reference and report scores near zero for a model that translates.

    Args:
        label_ids: the ``(rows, length)`` labels the trainer returned beside the predictions (``-100`` or the pad id
            where padded); rows after ``len(expected)`` (distributed wrap-around padding) are not checked.
        expected: the evaluation set's label ids, in dataset order.
        pad_token_id: the tokenizer's pad id.

    Raises:
        ValueError: labels are missing, or a row holds another example's labels (its index is named).

    Examples:
        >>> check_label_order([[5, 6, 1, -100], [7, 1, -100, -100]], [[5, 6, 1], [7, 1]], pad_token_id=0)
        >>> check_label_order([[7, 1, -100], [5, 6, 1]], [[5, 6, 1], [7, 1]], pad_token_id=0)
        Traceback (most recent call last):
        ...
        ValueError: evaluation row 0 holds the labels of another example than the evaluation set's row 0: predictions would be scored against the wrong references (the evaluation sampler reordered the set)
    """
    if label_ids is None:
        raise ValueError("evaluation returned no labels, so the order of its predictions cannot be checked")
    if len(label_ids) < len(expected):
        raise ValueError(f"evaluation returned {len(label_ids)} label rows for {len(expected)} references")
    for i, want in enumerate(expected):
        got = [int(t) for t in label_ids[i] if int(t) not in (-100, pad_token_id)]
        if got != [int(t) for t in want if int(t) != pad_token_id]:
            raise ValueError(f"evaluation row {i} holds the labels of another example than the evaluation set's row {i}: "
                             "predictions would be scored against the wrong references (the evaluation sampler "
                             "reordered the set)")
