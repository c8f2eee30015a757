"""Fixtures for the recipe tests: tiny models and the scripts loaded as modules."""

import json
import os
import subprocess
import sys

import pytest

from hf_lnorm.resources import data_file

from ..conftest import load_script, minilm_path  # noqa: F401 (load_script: the recipe tests import it from here)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QA_SAMPLE_TRAIN = str(data_file("qa", "sample_train.json"))
QA_SAMPLE_DEV = str(data_file("qa", "sample_dev.json"))
BIBLE_SAMPLE = str(data_file("bible_en_es_sample.jsonl"))
HOLDOUT_BOOKS = "Ruth,Jonah,Hag,Joel,Titus,Phlm,Jude"


@pytest.fixture(scope="session")
def run_qa():
    return load_script("run_qa")


@pytest.fixture(scope="session")
def run_translation():
    return load_script("run_translation")


@pytest.fixture(scope="session")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path())


@pytest.fixture(scope="session")
def tiny_qa_model_dir(tmp_path_factory, minilm_tokenizer):
    """A 2-layer, 32-wide BERT QA model with the MiniLM tokenizer, saved to a folder."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(minilm_tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    path = str(tmp_path_factory.mktemp("tiny_bert_qa"))
    BertForQuestionAnswering(cfg).save_pretrained(path)
    minilm_tokenizer.save_pretrained(path)
    return path


def qa_args(model_dir: str, out: str, **over) -> dict:
    """A tiny QA config (windows of 96 tokens so long contexts are split)."""
    cfg = {"model_name_or_path": model_dir, "train_file": QA_SAMPLE_TRAIN, "validation_file": QA_SAMPLE_DEV,
           "output_dir": out, "do_train": True, "do_eval": True, "max_seq_length": 96, "doc_stride": 32,
           "max_train_samples": 48, "max_eval_samples": 24, "per_device_train_batch_size": 8, "per_device_eval_batch_size": 16,
           "learning_rate": 1e-3, "max_steps": 3, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
           "seed": 0, "dataloader_pin_memory": False, "eval_first_sentence_baseline": True}
    cfg.update(over)
    return cfg


def translation_args(out: str, **over) -> dict:
    """A tiny translation config on the committed Bible sample."""
    cfg = {"train_file": BIBLE_SAMPLE, "holdout_books": HOLDOUT_BOOKS, "model_type": "lnorm-seq2seq",
           "config_overrides": json.dumps({"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 128}),
           "tokenizer_vocab_size": 400, "output_dir": out, "do_train": True, "do_eval": True, "predict_with_generate": True,
           "max_train_samples": 256, "max_eval_samples": 16, "per_device_train_batch_size": 16, "per_device_eval_batch_size": 16,
           "learning_rate": 3e-3, "max_steps": 4, "logging_steps": 1, "save_strategy": "no", "report_to": "none", "seed": 0,
           "generation_max_length": 24, "max_source_length": 64, "max_target_length": 64, "eval_copy_source_baseline": True,
           "dataloader_pin_memory": False}
    cfg.update(over)
    return cfg


def write_config(path: str, cfg: dict) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f)
    return path


def subprocess_env() -> dict:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": ROOT + os.pathsep + env.get("PYTHONPATH", "")})
    return env


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_cmd(num_processes: int, script: str, *args: str) -> list:
    """``accelerate launch`` on CPU: torchrun-style launcher, the script gets ``--use_cpu true`` (gloo backend)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(num_processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
            os.path.join(ROOT, "scripts", script), *args, "--use_cpu", "true"]


def run(cmd, timeout=240, **kw):
    return subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw)
