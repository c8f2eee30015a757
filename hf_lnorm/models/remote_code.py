"""Make a saved hf_lnorm model loadable with ``trust_remote_code=True`` where hf_lnorm is not installed.

``RemoteCodeMixin`` (mixed into every family's ``PreTrainedModel``) extends
``save_pretrained`` so that next to the safetensors weights it writes

* the family's configuration and modeling files and every sibling file they
  import relatively (``layers.py``, this file), found by reading their imports;
* a complete ``auto_map`` in ``config.json``: every Auto class of the family,
  not only the class being saved (transformers itself writes only that one);
* a model card (``README.md``): config summary, norm settings, intended use,
  training data, how to load it.

``push_to_hub`` saves the same folder (plus an optional tokenizer) and uploads
it in one commit, keeping the generated card.

This file is shipped as remote code too, so it imports only torch,
transformers and (inside ``push_to_hub``) huggingface_hub, which transformers
depends on.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from typing import Dict, List, Optional

_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.(\w*)\s+import\s+([\w, ()]+)", re.MULTILINE)


def relative_import_files(module_file: str) -> List[str]:
    """Return ``module_file`` and every sibling file it imports relatively, recursively.

    Args:
        module_file: path of a ``.py`` file.

    Returns:
        Absolute paths, ``module_file`` first, each once.
    """
    folder = os.path.dirname(os.path.abspath(module_file))
    found: List[str] = []
    todo = [os.path.abspath(module_file)]
    while todo:
        path = todo.pop()
        if path in found:
            continue
        found.append(path)
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
        for module, names in _RELATIVE_IMPORT.findall(source):
            candidates = [module] if module else [n.strip() for n in names.strip("()").split(",") if n.strip()]
            for name in candidates:
                sibling = os.path.join(folder, name + ".py")
                if os.path.isfile(sibling):
                    todo.append(sibling)
    return found


def _count_parameters(model) -> int:
    seen = {}
    for param in model.parameters():
        seen[param.data_ptr()] = param.numel()  # tied weights count once
    return sum(seen.values())


def model_card(model, repo_id: Optional[str] = None, training_data: Optional[str] = None, intended_use: Optional[str] = None) -> str:
    """Write the model card (Markdown with YAML metadata) of an hf_lnorm model.

    Args:
        model: a family model (uses its ``config`` and the class attributes ``card_description``,
            ``card_intended_use``, ``card_pipeline_tag``, ``card_config_keys``, ``card_norm_layout``, ``auto_map_classes``).
        repo_id: name shown in the title and the loading example.
        training_data: what the weights were trained on; "not recorded" when ``None``.
        intended_use: overrides the family's default intended-use text.

    Returns:
        The card text.
    """
    config = model.config
    name = repo_id or getattr(config, "_name_or_path", "") or type(model).__name__
    auto_class = next((k for k, v in model.auto_map_classes.items() if v.endswith("." + type(model).__name__)), "AutoModel")
    rows = [("model_type", config.model_type), ("architecture", type(model).__name__), ("parameters", f"{_count_parameters(model):,}")]
    rows += [(key, getattr(config, key)) for key in model.card_config_keys if hasattr(config, key)]
    # families without a pre/post choice (e.g. LNormPolicy's MLPs) describe their layout in `card_norm_layout`
    norm_type, norm_position = config.norm_type, getattr(config, "norm_position", None)
    norm_text = {
        "layernorm": "LayerNorm (mean and variance over the hidden dimension, learned gain and bias)",
        "rmsnorm": "RMSNorm (root mean square over the hidden dimension, learned gain)",
        "none": "no normalization (ablation)",
    }[norm_type]
    position_text = {
        "pre": "Pre-LN: each sub-layer reads `norm(x)` and adds its output to the residual stream; a final norm precedes the output head",
        "post": "Post-LN: each sub-layer's output is added to its input and the sum is normalized (original Transformer)",
    }.get(norm_position)
    position_line = (
        f"- `norm_position={norm_position!r}`: {position_text}" if position_text else f"- Layout: {model.card_norm_layout}"
    )
    lines = [
        "---",
        "library_name: transformers",
        f"pipeline_tag: {model.card_pipeline_tag}",
        "tags:",
        "- hf-lnorm",
        f"- {config.model_type}",
        "- layer-normalization",
        "- custom_code",
        "---",
        "",
        f"# {name}",
        "",
        model.card_description,
        "",
        "## Configuration",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in rows],
        "",
        "## Normalization",
        "",
        f"- `norm_type={norm_type!r}`: {norm_text}",
        position_line,
        f"- `layer_norm_eps={getattr(config, 'layer_norm_eps', None)}`",
        "- The norm layers are plain modules with `weight` (and `bias`) parameters, so `hf_lnorm.patch(model)` can swap in fused kernels.",
        "",
        "## Intended use",
        "",
        intended_use or model.card_intended_use,
        "",
        "## Training data",
        "",
        training_data or "Not recorded for this checkpoint.",
        "",
        "## How to load",
        "",
        "The modeling code is stored next to the weights; hf_lnorm does not need to be installed.",
        "",
        "```python",
        f"from transformers import {auto_class}",
        f'model = {auto_class}.from_pretrained("{name}", trust_remote_code=True)',
        "```",
        "",
    ]
    return "\n".join(lines)


class RemoteCodeMixin:
    """``save_pretrained`` / ``push_to_hub`` that ship the family's code, a full ``auto_map`` and a model card.

    A family sets ``config_file`` / ``modeling_file`` (the module files) and
    ``auto_map_classes`` (Auto class name -> ``"module.ClassName"``).
    """

    auto_map_classes: Dict[str, str] = {}
    card_description = "An hf_lnorm model."
    card_intended_use = "Research on the effect of layer normalization; small-scale experiments."
    card_pipeline_tag = "text-generation"
    card_config_keys: tuple = ()
    card_norm_layout = "see the configuration"  # families without norm_position describe their norm layout here

    @classmethod
    def code_files(cls) -> List[str]:
        """The ``.py`` files a saved model needs: configuration, modeling and their relative imports."""
        import sys

        files: List[str] = []
        for module_name in {cls.__module__, cls.config_class.__module__}:
            for path in relative_import_files(sys.modules[module_name].__file__):
                if path not in files:
                    files.append(path)
        return files

    def save_pretrained(self, save_directory, *args, training_data: Optional[str] = None, intended_use: Optional[str] = None, **kwargs):
        """``PreTrainedModel.save_pretrained`` plus code files, full ``auto_map`` and model card.

        Args:
            save_directory: output folder.
            training_data: sentence for the model card's "Training data" section.
            intended_use: overrides the model card's "Intended use" section.
            *args, **kwargs: passed to ``PreTrainedModel.save_pretrained`` (weights are always safetensors).

        Returns:
            Whatever ``PreTrainedModel.save_pretrained`` returns.
        """
        kwargs.pop("safe_serialization", None)  # safetensors only (the 4.x default; 5.x has no other format)
        auto_map = dict(getattr(self.config, "auto_map", None) or {})
        auto_map.update(self.auto_map_classes)
        self.config.auto_map = auto_map
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            for path in self.code_files():
                target = os.path.join(save_directory, os.path.basename(path))
                if os.path.abspath(path) != os.path.abspath(target):
                    shutil.copyfile(path, target)
            card = model_card(self, kwargs.get("repo_id") or _card_name(save_directory), training_data, intended_use)
            _write_text(os.path.join(save_directory, "README.md"), card)
        return result

    def push_to_hub(
        self,
        repo_id: str,
        *,
        tokenizer=None,
        commit_message: Optional[str] = None,
        private: Optional[bool] = None,
        token=None,
        revision: Optional[str] = None,
        create_pr: bool = False,
        training_data: Optional[str] = None,
        intended_use: Optional[str] = None,
        **save_kwargs,
    ):
        """Upload weights, code, model card (and ``tokenizer`` if given) to ``repo_id`` in one commit.

        Args:
            repo_id: ``"user/name"`` on the Hub (``HF_ENDPOINT`` selects the server).
            tokenizer: a tokenizer to save into the same repository.
            commit_message, private, token, revision, create_pr: as in ``huggingface_hub.HfApi``.
            training_data, intended_use: model card text (see ``save_pretrained``).
            **save_kwargs: passed to ``save_pretrained`` (e.g. ``max_shard_size``).

        Returns:
            The ``CommitInfo`` of the upload.
        """
        from huggingface_hub import CommitOperationAdd, HfApi

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, training_data=training_data, intended_use=intended_use, **save_kwargs)
            _write_text(os.path.join(folder, "README.md"), model_card(self, repo_id, training_data, intended_use))
            if tokenizer is not None:
                tokenizer.save_pretrained(folder)
            operations = [
                CommitOperationAdd(path_in_repo=os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"), path_or_fileobj=os.path.join(root, name))
                for root, _, names in os.walk(folder)
                for name in sorted(names)
            ]
            # One plain commit (preupload + commit endpoints) rather than upload_folder, whose
            # implementation differs across huggingface_hub versions.
            return api.create_commit(
                repo_id=repo_id,
                operations=operations,
                commit_message=commit_message or f"Upload {type(self).__name__}",
                revision=revision,
                create_pr=create_pr,
            )


def _card_name(save_directory) -> str:
    return os.path.basename(os.path.normpath(str(save_directory)))


def _write_text(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)
