"""Reusable pieces of the fine-tuning recipes (``scripts/run_qa.py``, ``scripts/run_translation.py``).

The modules:

* ``squad_metrics``: SQuAD v1.1 exact match / F1 (official normalisation);
* ``qa``: sliding-window QA features and offset-mapping answer decoding;
* ``data_files``: validation of local SQuAD / translation files (one clear error per problem);
* ``common``: argument parsing with JSON configs, hf_lnorm patch and LoRA switches, resumable checkpoints;
* ``translation``: local tokenizer training, seq2seq model building, BLEU/chrF.
"""
