#!/usr/bin/env python
"""Train a byte-level BPE tokenizer on offline text and save it as a ``PreTrainedTokenizerFast``.

Special tokens get fixed ids, the defaults of the hf_lnorm model configs:
``<pad>``=0, ``<s>``=1, ``</s>``=2, ``<unk>``=3. With ``--add-eos`` every encoded
sequence ends in ``</s>`` (what a translation model's source and target need).

    python scripts/prepare_data.py shakespeare        # -> data/cache/shakespeare.txt
    python scripts/train_tokenizer.py --input data/cache/shakespeare.txt --vocab-size 8000 \\
        --output outputs/tokenizers/shakespeare
    python scripts/prepare_data.py bible              # -> data/cache/bible_en_es.jsonl
    python scripts/train_tokenizer.py --input data/cache/bible_en_es.jsonl --fields en,es --add-eos \\
        --vocab-size 12000 --output outputs/tokenizers/bible_en_es

The sample files committed under ``data/`` work as ``--input`` too (the tests use them).
The output folder is written under a temporary name and renamed when complete; an
existing one is replaced only with ``--overwrite`` and only if this project wrote it
(``hf_lnorm.outputs``): a folder of other files is refused before training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Iterable, Iterator, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]


def read_texts(path: str, fields: Optional[Sequence[str]] = None) -> Iterator[str]:
    """Yield the training text of ``path``: lines of a ``.txt``, or the given fields of each JSON line.

    Args:
        path: a text file, or a ``.jsonl`` file when ``fields`` is given.
        fields: JSON keys whose values are yielded (e.g. ``["en", "es"]``).

    Returns:
        An iterator over non-empty strings.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist; build it with `python scripts/prepare_data.py ...` (see data/README or DATA.md)")
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if fields:
                row = json.loads(line)
                for key in fields:
                    if row.get(key):
                        yield row[key]
            elif line.strip():
                yield line.rstrip("\n")


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 8000, add_eos: bool = False, min_frequency: int = 2):
    """Train a byte-level BPE tokenizer.

    Args:
        texts: training strings.
        vocab_size: target vocabulary size, special tokens included.
        add_eos: append ``</s>`` to every encoded sequence.
        min_frequency: minimum pair frequency for a merge.

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with ``pad/bos/eos/unk`` set.

    Example:
        >>> tok = train_bpe_tokenizer(["to be or not to be"] * 10, vocab_size=300)
        >>> tok.decode(tok("to be").input_ids)
        'to be'
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size <= len(SPECIAL_TOKENS) + 256:
        raise ValueError(f"vocab_size={vocab_size} is too small; a byte-level BPE needs more than {len(SPECIAL_TOKENS) + 256}")
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if add_eos:
        eos_id = tokenizer.token_to_id("</s>")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)]
        )
    else:
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def save_tokenizer(tokenizer, output: str, overwrite: bool = False, protect: Sequence[Optional[str]] = ()) -> None:
    """Save to ``output`` through a staging folder renamed into place (``hf_lnorm.outputs.staged_output_dir``).

    Args:
        tokenizer: what to save (``save_pretrained``).
        output: the tokenizer folder to write.
        overwrite: replace an earlier output of this project (never a folder of other files).
        protect: input files the output must neither be nor contain (the training text).
    Raises:
        OutputExistsError: ``output`` exists and may not be replaced (``UnsafeOutputError`` for other files).
    """
    from hf_lnorm.outputs import staged_output_dir

    with staged_output_dir(output, overwrite, protect, writer="scripts/train_tokenizer.py") as tmp:
        tokenizer.save_pretrained(tmp)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, help="text file, or .jsonl with --fields")
    parser.add_argument("--fields", default=None, help="comma-separated JSON keys to train on (e.g. en,es)")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--add-eos", action="store_true", help="append </s> to every encoded sequence")
    parser.add_argument("--output", required=True, help="folder for the PreTrainedTokenizerFast files")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output folder written by an earlier run (never a folder of other files)")
    args = parser.parse_args(argv)
    from hf_lnorm.outputs import OutputExistsError, check_output_dir

    try:
        check_output_dir(args.output, args.overwrite, [args.input])
    except OutputExistsError as exc:
        print(f"train_tokenizer: error: {exc}", file=sys.stderr)
        return 2
    fields = [f.strip() for f in args.fields.split(",")] if args.fields else None
    try:
        tokenizer = train_bpe_tokenizer(read_texts(args.input, fields), args.vocab_size, args.add_eos)
    except (FileNotFoundError, ValueError) as exc:
        print(f"train_tokenizer: error: {exc}", file=sys.stderr)
        return 2
    save_tokenizer(tokenizer, args.output, args.overwrite, [args.input])
    print(f"saved a {len(tokenizer)}-token BPE tokenizer to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
