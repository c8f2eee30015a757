"""Configuration of LNormPolicy: a policy network and a value network as one actor-critic model.

Shipped next to saved weights as remote code: imports only transformers and siblings.
"""

from __future__ import annotations

from typing import Optional, Sequence

from transformers import PretrainedConfig
from transformers.activations import ACT2FN

# transformers copies only the sibling files a remote-code file imports directly as `from .x import ...`
from .attention_lnorm import LNormAttention  # noqa: F401
from .norm_layers_lnorm import LNormLayerNorm  # noqa: F401
from .layers import NORM_TYPES, check_choice, check_dyt_alpha_init

ACTION_SPACES = ("discrete", "continuous")


def _check_positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")


def _check_hidden_sizes(name: str, sizes) -> list:
    if isinstance(sizes, int) or not isinstance(sizes, (list, tuple)) or not sizes:
        raise ValueError(f"{name}={sizes!r} must be a non-empty list of positive integers, e.g. [64, 64]")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"{name}={list(sizes)!r} must be a non-empty list of positive integers, e.g. [64, 64]")
    return list(sizes)


class LNormPolicyConfig(PretrainedConfig):
    """Configuration of ``LNormPolicyModel``: an actor MLP and a critic MLP over a flat observation.

    Each hidden layer is ``activation(norm(linear(x)))`` (with ``activation="relu"`` and
    LayerNorm: ``relu(ln(fc(x)))``), with the norm chosen by ``norm_type`` (``"none"`` is the
    ablation without normalization). ``model_type`` is ``"lnorm-policy"``.

    Args:
        observation_size: length of the (flat, float) observation vector, e.g. 4 for CartPole.
        action_size: number of discrete actions (``action_space="discrete"``), or the dimension of the
            action vector (``"continuous"``).
        action_space: ``discrete`` (a categorical distribution over ``action_size`` logits) |
            ``continuous`` (a diagonal Gaussian: the actor outputs the mean, ``log_std`` is a learned,
            state-independent parameter).
        hidden_sizes: widths of the actor's hidden layers (64, 64 is the usual PPO size for control tasks).
        critic_hidden_sizes: widths of the critic's hidden layers; ``None`` = same as ``hidden_sizes``.
        activation: hidden activation, a key of ``transformers.activations.ACT2FN`` (``tanh`` is the usual
            choice for PPO; ``relu`` is the other common one).
        norm_type: ``layernorm`` | ``rmsnorm`` | ``dyt`` (Dynamic Tanh) | ``none``.
        layer_norm_eps: eps of the norms.
        dyt_alpha_init: starting value of the learnable ``alpha`` of ``norm_type="dyt"`` (Dynamic Tanh,
            ``weight * tanh(alpha * x) + bias``); a positive finite float.
        initial_log_std: starting value of ``log_std`` (continuous actions only).
        actor_output_gain: gain of the orthogonal init of the action head; small (0.01) so the initial
            policy is close to uniform / zero-mean and exploration starts unbiased.
        critic_output_gain: gain of the orthogonal init of the value head.
        **kwargs (Any): other ``PretrainedConfig`` arguments.

    Raises:
        ValueError: a size that is not a positive integer, empty or non-integer hidden sizes,
            an unknown ``action_space``, ``norm_type`` or ``activation``, or a ``dyt_alpha_init`` that is not a
            positive finite float.

    Examples:
        >>> from hf_lnorm.models import LNormPolicyConfig
        >>> config = LNormPolicyConfig(observation_size=8, action_size=2, action_space="continuous", hidden_sizes=[32, 32])
        >>> config.critic_hidden_sizes
        [32, 32]
        >>> LNormPolicyConfig(action_space="multi-discrete")
        Traceback (most recent call last):
        ...
        ValueError: action_space='multi-discrete' is not supported; accepted values: 'discrete', 'continuous'
    """

    model_type = "lnorm-policy"

    def __init__(
        self,
        observation_size: int = 4,
        action_size: int = 2,
        action_space: str = "discrete",
        hidden_sizes: Sequence[int] = (64, 64),
        critic_hidden_sizes: Optional[Sequence[int]] = None,
        activation: str = "tanh",
        norm_type: str = "layernorm",
        layer_norm_eps: float = 1e-5,
        initial_log_std: float = 0.0,
        actor_output_gain: float = 0.01,
        critic_output_gain: float = 1.0,
        dyt_alpha_init: float = 0.5,
        **kwargs,
    ):
        _check_positive_int("observation_size", observation_size)
        _check_positive_int("action_size", action_size)
        check_choice("action_space", action_space, ACTION_SPACES)
        check_choice("norm_type", norm_type, NORM_TYPES)
        if activation not in ACT2FN:
            raise ValueError(f"activation={activation!r} is not supported; accepted values: {', '.join(sorted(ACT2FN))}")
        self.observation_size = observation_size
        self.action_size = action_size
        self.action_space = action_space
        self.hidden_sizes = _check_hidden_sizes("hidden_sizes", hidden_sizes)
        self.critic_hidden_sizes = _check_hidden_sizes(
            "critic_hidden_sizes", hidden_sizes if critic_hidden_sizes is None else critic_hidden_sizes
        )
        self.activation = activation
        self.norm_type = norm_type
        self.layer_norm_eps = layer_norm_eps
        self.dyt_alpha_init = check_dyt_alpha_init(dyt_alpha_init)
        self.initial_log_std = initial_log_std
        self.actor_output_gain = actor_output_gain
        self.critic_output_gain = critic_output_gain
        super().__init__(**kwargs)
