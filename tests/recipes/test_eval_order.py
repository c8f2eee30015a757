"""With ``group_by_length`` the recipes' trainers still evaluate in dataset order (transformers 4.57 and 5.x
length-group the evaluation set too), and the translation recipe refuses to score rows out of order."""

import datasets
import pytest
import torch
from transformers import HfArgumentParser, Seq2SeqTrainingArguments

from hf_lnorm.recipes.common import parse_recipe_args
from hf_lnorm.recipes.translation import check_label_order

from .conftest import load_script


class _Tiny(torch.nn.Module):
    def forward(self, input_ids=None, attention_mask=None, labels=None):
        return {"loss": input_ids.float().mean()}


def _eval_rows(trainer_class, tmp_path):
    config = tmp_path / "c.json"
    config.write_text('{"group_by_length": true, "output_dir": "%s", "per_device_eval_batch_size": 4, '
                      '"report_to": "none", "seed": 3}' % (tmp_path / "out"))
    (args,) = parse_recipe_args(HfArgumentParser([Seq2SeqTrainingArguments]), [str(config)])
    lengths = [3, 11, 1, 7, 15, 2, 9, 5, 13, 4, 8, 6]  # the first ids of each row are its index
    rows = [{"input_ids": [i] + [7] * (n - 1)} for i, n in enumerate(lengths)]
    dataset = datasets.Dataset.from_list(rows)

    def collate(batch):
        width = max(len(b["input_ids"]) for b in batch)
        return {"input_ids": torch.tensor([b["input_ids"] + [0] * (width - len(b["input_ids"])) for b in batch])}

    trainer = trainer_class(model=_Tiny(), args=args, eval_dataset=dataset, data_collator=collate)
    return [int(b["input_ids"][j, 0]) for b in trainer.get_eval_dataloader() for j in range(len(b["input_ids"]))]


@pytest.mark.parametrize("script, trainer", [("run_translation", "TranslationTrainer"),
                                             ("run_qa", "QuestionAnsweringTrainer")])
def test_recipe_trainers_evaluate_in_dataset_order_with_group_by_length(script, trainer, tmp_path):
    assert _eval_rows(getattr(load_script(script), trainer), tmp_path) == list(range(12))


def test_check_label_order_names_the_first_row_out_of_place():
    expected = [[5, 6, 1], [7, 1], [8, 9, 9, 1]]
    check_label_order([[5, 6, 1, -100], [7, 1, -100, -100], [8, 9, 9, 1], [5, 6, 1, -100]], expected, pad_token_id=0)
    with pytest.raises(ValueError, match="row 1 holds the labels of another example"):
        check_label_order([[5, 6, 1, -100], [8, 9, 9, 1], [7, 1, -100, -100]], expected, pad_token_id=0)
    with pytest.raises(ValueError, match="returned 2 label rows for 3 references"):
        check_label_order([[5, 6, 1], [7, 1, 0]], expected, pad_token_id=0)
    with pytest.raises(ValueError, match="no labels"):
        check_label_order(None, expected, pad_token_id=0)


def test_translation_recipe_with_group_by_length_evaluates_in_order_and_guards_it(run_translation, tmp_path, monkeypatch):
    """The tiny recipe run with length grouping passes its order check; with transformers' own (length-grouped)
    evaluation sampler put back, the check stops the run instead of scoring predictions against other references."""
    from transformers import Seq2SeqTrainer

    from .conftest import translation_args, write_config

    cfg = translation_args(str(tmp_path / "ok"), group_by_length=True, max_eval_samples=12, per_device_eval_batch_size=4)
    res = run_translation.main([write_config(str(tmp_path / "ok.json"), cfg)])
    assert res["eval_samples"] == 12
    monkeypatch.setattr(run_translation.TranslationTrainer, "_get_eval_sampler", Seq2SeqTrainer._get_eval_sampler)
    cfg = translation_args(str(tmp_path / "stock"), group_by_length=True, max_eval_samples=12, per_device_eval_batch_size=4)
    with pytest.raises(ValueError, match="holds the labels of another example"):
        run_translation.main([write_config(str(tmp_path / "stock.json"), cfg)])
