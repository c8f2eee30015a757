"""The committed recipe configs parse under the installed transformers line."""

import os

import pytest
from transformers import HfArgumentParser, Seq2SeqTrainingArguments, TrainingArguments

from hf_lnorm.recipes.common import parse_recipe_args

from .conftest import ROOT, load_script


@pytest.mark.parametrize("script, config, training_args", [
    ("run_qa", "qa_minilm.json", TrainingArguments),
    ("run_translation", "translation_lnorm_seq2seq.json", Seq2SeqTrainingArguments),
])
def test_default_config_parses(script, config, training_args, tmp_path):
    module = load_script(script)
    types = [module.ModelArguments, module.DataTrainingArguments, training_args]
    parsed = parse_recipe_args(HfArgumentParser(types), [os.path.join(ROOT, "configs", config), "--output_dir", str(tmp_path)])
    args = parsed[-1]
    assert isinstance(args, training_args)
    assert args.output_dir == str(tmp_path)


def test_warmup_ratio_means_the_same_on_both_lines(tmp_path):
    config = tmp_path / "c.json"
    config.write_text('{"warmup_ratio": 0.1, "output_dir": "x"}')
    (args,) = parse_recipe_args(HfArgumentParser([TrainingArguments]), [str(config)])
    assert args.get_warmup_steps(1000) == 100


def test_warmup_ratio_out_of_range_is_an_error(tmp_path):
    config = tmp_path / "c.json"
    config.write_text('{"warmup_ratio": 1.5, "output_dir": "x"}')
    with pytest.raises(ValueError, match="warmup_ratio"):
        parse_recipe_args(HfArgumentParser([TrainingArguments]), [str(config)])


def test_group_by_length_survives_on_both_lines(tmp_path):
    config = tmp_path / "c.json"
    config.write_text('{"group_by_length": true, "output_dir": "x"}')
    (args,) = parse_recipe_args(HfArgumentParser([TrainingArguments]), [str(config)])
    assert getattr(args, "group_by_length", None) is True or getattr(args, "train_sampling_strategy", None) == "group_by_length"


def test_resumable_checkpoint_skips_half_written_checkpoints(tmp_path):
    from hf_lnorm.recipes.common import resumable_checkpoint

    assert resumable_checkpoint(str(tmp_path / "missing")) is None
    for step, state in [(10, '{"global_step": 10}'), (20, '{"global_step": 2'), (30, None), (5, '{"global_step": 5}')]:
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
    (tmp_path / "checkpoint-x").mkdir()
    # 30 has no state (killed before writing it), 20 a truncated one (killed while writing it)
    assert resumable_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-10")
