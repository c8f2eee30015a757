"""Shared parts of the training experiments: the character-level Shakespeare data, a timed training loop
and seed statistics.

The text is the package's ``shakespeare_sample.txt``; every character is a token (the vocabulary is the
sorted set of characters of the whole file). The last ``VALIDATION_FRACTION`` of the text is held out and
cut into fixed, non-overlapping windows for validation; training batches are random windows of the rest,
drawn from a generator seeded per run, so every configuration of one seed sees the same batches.

``train_interleaved`` trains several models in lockstep (AdamW, linear warm-up, cosine decay) and times each
optimizer step on its own (forward, backward and update); the evaluations between steps are not timed, so
the wall-clock axis of an experiment counts training work only.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..resources import data_file
from ._report import mean_std  # noqa: F401  (re-exported for the char-LM experiments)

__all__ = ["VALIDATION_FRACTION", "CharData", "char_data", "gpt_model", "Run", "train_interleaved", "lm_objective", "mean_std"]

VALIDATION_FRACTION = 0.1


class CharData:
    """The Shakespeare sample as character ids, split into a training head and a held-out tail.

    Args:
        ids: every character of the text as an id, in order.
        vocab: the characters, index = id.
        validation_fraction: the share of the text (its end) held out.
    """

    def __init__(self, ids: torch.Tensor, vocab: Sequence[str], validation_fraction: float = VALIDATION_FRACTION):
        cut = int(len(ids) * (1 - validation_fraction))
        self.vocab = list(vocab)
        self.train_ids = ids[:cut]
        self.valid_ids = ids[cut:]

    @property
    def vocab_size(self) -> int:
        """Number of distinct characters."""
        return len(self.vocab)

    def unigram_entropy(self) -> float:
        """Cross-entropy (nats per character) of the held-out tail under the training head's character
        frequencies (add-one smoothed): the loss of a model that ignores context."""
        counts = torch.bincount(self.train_ids, minlength=self.vocab_size).double() + 1.0
        logp = torch.log(counts / counts.sum())
        return float(-logp[self.valid_ids].mean())

    def train_batch(self, batch_size: int, seq_len: int, generator: torch.Generator) -> torch.Tensor:
        """``(batch_size, seq_len)`` random windows of the training head."""
        starts = torch.randint(0, len(self.train_ids) - seq_len, (batch_size,), generator=generator)
        return torch.stack([self.train_ids[s:s + seq_len] for s in starts.tolist()])  # (B, T)

    def valid_batches(self, batch_size: int, seq_len: int, windows: int) -> List[torch.Tensor]:
        """The first ``windows`` non-overlapping ``seq_len`` windows of the held-out tail, in batches.

        Raises:
            ValueError: the tail holds fewer than ``windows`` windows.
        """
        available = len(self.valid_ids) // seq_len
        if windows > available:
            raise ValueError(f"windows={windows} exceeds the {available} windows of {seq_len} characters held out")
        rows = self.valid_ids[:windows * seq_len].view(windows, seq_len)
        return [rows[i:i + batch_size] for i in range(0, windows, batch_size)]


def char_data() -> CharData:
    """The package's Shakespeare sample as a ``CharData``.

    Returns:
        The split data; the vocabulary is every character of the file.

    Examples:
        >>> data = char_data()
        >>> data.vocab_size > 26 and len(data.valid_ids) < len(data.train_ids)
        True
    """
    text = data_file("shakespeare_sample.txt").read_text(encoding="utf-8")
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    return CharData(torch.tensor([index[c] for c in text], dtype=torch.long), vocab)


def gpt_model(vocab_size: int, seq_len: int, hidden_size: int, layers: int, heads: int, norm_type: str,
              norm_position: str, seed: int) -> nn.Module:
    """A character-level ``LNormGPTForCausalLM`` without dropout, its weights drawn from ``seed``.

    Args:
        vocab_size: number of characters.
        seq_len: context length.
        hidden_size: width.
        layers: number of blocks.
        heads: attention heads.
        norm_type: ``layernorm`` | ``rmsnorm`` | ``dyt`` | ``none``.
        norm_position: ``pre`` | ``post``.
        seed: seeds the initial weights.

    Returns:
        The model, in training mode.
    """
    from ..models import LNormGPTConfig, LNormGPTForCausalLM

    config = LNormGPTConfig(vocab_size=vocab_size, max_position_embeddings=seq_len, hidden_size=hidden_size,
                            num_hidden_layers=layers, num_attention_heads=heads, dropout=0.0, attention_dropout=0.0,
                            norm_type=norm_type, norm_position=norm_position, use_cache=False)
    torch.manual_seed(seed)
    return LNormGPTForCausalLM(config).train()


def lm_objective(data: CharData, sizes: dict, seed: int) -> Tuple[Callable, Callable]:
    """The training loss and the validation metric of a character LM run, on batches drawn from ``seed``.

    Args:
        data: the split text.
        sizes: ``batch_size``, ``seq_len``, ``steps`` and ``valid_windows``.
        seed: seeds the training batches (every model of a seed sees the same ones).

    Returns:
        ``(loss_fn(model, step), evaluate(model))``: the loss of batch ``step``, and the mean validation loss
        in nats per character.
    """
    generator = torch.Generator().manual_seed(seed)
    batches = [data.train_batch(sizes["batch_size"], sizes["seq_len"], generator) for _ in range(sizes["steps"])]
    valid = data.valid_batches(64, sizes["seq_len"], sizes["valid_windows"])

    def loss_fn(m: nn.Module, step: int) -> torch.Tensor:
        return m(input_ids=batches[step], labels=batches[step]).loss

    def evaluate(m: nn.Module) -> float:
        return sum(float(m(input_ids=b, labels=b).loss) * len(b) for b in valid) / sum(len(b) for b in valid)

    return loss_fn, evaluate


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class Run:
    """One model to train in ``train_interleaved``.

    Args:
        model: the model, in training mode.
        loss_fn: ``loss_fn(model, step)`` returns the training loss of batch ``step``.
        evaluate: returns the metric on held-out data (called under ``torch.no_grad`` in eval mode).
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[nn.Module, int], torch.Tensor],
                 evaluate: Callable[[nn.Module], float]):
        self.model = model
        self.loss_fn = loss_fn
        self.evaluate = evaluate


def train_interleaved(runs: Sequence[Run], steps: int, lr: float, warmup: int, eval_every: int,
                      weight_decay: float = 0.0) -> List[Dict[str, object]]:
    """Train several models in lockstep, one optimizer step of each in turn, timing every step on its own.

    Step ``i`` of every model runs before step ``i + 1`` of any, so a change in machine load during the
    run falls on all of them alike. Each model has its own AdamW (betas 0.9, 0.95) with a linear warm-up
    and cosine decay to 0; gradients are not clipped, so instability shows instead of being hidden. A
    model whose loss is not finite stops there (it has diverged); the others go on.

    Args:
        runs: the models with their loss and evaluation functions.
        steps: optimizer steps per model.
        lr: peak learning rate.
        warmup: linear warm-up steps.
        eval_every: evaluate after every this many steps (and before the first and after the last).
        weight_decay: AdamW's decoupled weight decay.

    Returns:
        One dict per run, in order: ``{"curve": [{"step", "seconds", "metric", "train_loss"}, ...],
        "step_seconds_median", "train_seconds", "steps_run", "finite"}``. ``seconds`` is the summed time of
        the model's steps before that evaluation, ``train_loss`` the mean training loss since the previous
        one; a non-finite metric or loss is ``None``.
    """
    states = []
    for run in runs:
        optimizer = torch.optim.AdamW(run.model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, steps, warmup))
        states.append({"run": run, "optimizer": optimizer, "scheduler": scheduler, "times": [], "window": [],
                       "finite": True, "curve": [{"step": 0, "seconds": 0.0, "metric": _measure(run), "train_loss": None}]})
    for step in range(steps):
        for state in states:
            if not state["finite"]:
                continue
            run, optimizer = state["run"], state["optimizer"]
            started = time.perf_counter()
            loss = run.loss_fn(run.model, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            state["scheduler"].step()
            value = float(loss.detach())  # the read-back waits for the step to finish
            state["times"].append(time.perf_counter() - started)
            state["window"].append(value)
            state["finite"] = math.isfinite(value)
            if not state["finite"] or (step + 1) % eval_every == 0 or step + 1 == steps:
                window = state["window"]
                state["curve"].append({"step": step + 1, "seconds": sum(state["times"]),
                                       "metric": _measure(run) if state["finite"] else None,
                                       "train_loss": _finite_or_none(sum(window) / len(window))})
                state["window"] = []
    return [{"curve": s["curve"], "step_seconds_median": statistics.median(s["times"]),
             "train_seconds": sum(s["times"]), "steps_run": len(s["times"]), "finite": s["finite"]} for s in states]


def _measure(run: Run) -> Optional[float]:
    """``run.evaluate`` in eval mode without gradients; ``None`` when not finite."""
    run.model.eval()
    with torch.no_grad():
        value = float(run.evaluate(run.model))
    run.model.train()
    return _finite_or_none(value)


def _finite_or_none(value: float) -> Optional[float]:
    """``value``, or ``None`` when it is inf or nan (JSON has no such numbers)."""
    return value if math.isfinite(value) else None
