"""LNormPolicy: a policy network and a value network as one Hugging Face actor-critic model.

``LNormPolicyModel`` holds two MLPs over a flat observation: the actor (ending
in the action head: categorical logits, or the mean of a diagonal Gaussian
with a learned ``log_std``) and the critic (ending in a scalar value). Every
hidden layer is ``activation(norm(linear(x)))`` with the norm chosen by
``config.norm_type`` (layernorm | rmsnorm | dyt | none).

``forward(observations)`` returns the action-distribution parameters
(``logits``) and ``value``; given ``actions`` it also returns their
``log_prob`` and the distribution's ``entropy`` (what PPO / A2C need), and
given ``labels`` (expert actions) a behaviour-cloning loss, so ``Trainer``
can fit the policy to demonstrations. ``act`` samples (or takes the most
likely) actions for rollouts, ``evaluate_actions`` scores stored ones.

transformers has no Auto class for reinforcement-learning policies; the model
is registered with ``AutoModel`` (and ``AutoConfig``).

Shipped next to saved weights as remote code: imports only torch, transformers
and sibling files.

Examples:
    >>> import torch
    >>> from hf_lnorm.models import LNormPolicyConfig, LNormPolicyModel
    >>> policy = LNormPolicyModel(LNormPolicyConfig(observation_size=4, action_size=2))
    >>> step = policy.act(torch.zeros(8, 4))
    >>> step.actions.shape, step.log_prob.shape, step.value.shape
    (torch.Size([8]), torch.Size([8]), torch.Size([8]))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from .configuration_lnorm_policy import LNormPolicyConfig
# transformers copies only the sibling files a remote-code file imports directly as `from .x import ...`
from .attention_lnorm import LNormAttention  # noqa: F401
from .norm_layers_lnorm import LNormLayerNorm  # noqa: F401
from .layers import LNormDyT, LNormRMSNorm, build_norm
from .remote_code import RemoteCodeMixin

from .layers import _init  # transformers 5.x init functions that skip loaded tensors, else torch.nn.init


@dataclass
class LNormPolicyOutput(ModelOutput):
    """Output of ``LNormPolicyModel.forward``.

    A ``transformers.utils.ModelOutput``: read fields by name or index; fields
    that were not computed are None and left out of the tuple form.

    Args:
        loss: behaviour-cloning loss ``-log_prob(labels).mean()`` when ``labels`` are given.
        logits: ``(..., action_size)``: categorical logits (discrete) or the Gaussian mean (continuous).
        value: ``(...)``: the critic's state value.
        log_prob: ``(...)``: log-probability of the given ``actions`` (when given).
        entropy: ``(...)``: entropy of the action distribution (when ``actions`` or ``labels`` are given).

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import LNormPolicyConfig, LNormPolicyModel
        >>> policy = LNormPolicyModel(LNormPolicyConfig(observation_size=4, action_size=3))
        >>> out = policy(torch.zeros(5, 4), actions=torch.tensor([0, 1, 2, 0, 1]))
        >>> out.logits.shape, out.value.shape, out.log_prob.shape, out.loss is None
        (torch.Size([5, 3]), torch.Size([5]), torch.Size([5]), True)
    """

    loss: Optional[torch.FloatTensor] = None
    logits: Optional[torch.FloatTensor] = None
    value: Optional[torch.FloatTensor] = None
    log_prob: Optional[torch.FloatTensor] = None
    entropy: Optional[torch.FloatTensor] = None


class PolicyStep(NamedTuple):
    """What ``LNormPolicyModel.act`` returns: chosen actions, their log-probability, the state value.

    A named tuple of three tensors: ``actions`` (``(batch,)`` long ids, or
    ``(batch, action_size)`` floats for continuous actions), ``log_prob``
    ``(batch,)`` and ``value`` ``(batch,)``.

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import LNormPolicyConfig, LNormPolicyModel
        >>> policy = LNormPolicyModel(LNormPolicyConfig(observation_size=4, action_size=2))
        >>> actions, log_prob, value = policy.act(torch.zeros(3, 4), deterministic=True)
        >>> actions.dtype, log_prob.shape
        (torch.int64, torch.Size([3]))
    """

    actions: torch.Tensor
    log_prob: torch.Tensor
    value: torch.Tensor


class LNormPolicyMLP(nn.Module):
    """Hidden layers ``activation(norm(linear(x)))``; the output is the last hidden layer's activation."""

    def __init__(self, input_size: int, hidden_sizes: Sequence[int], activation: str, norm_type: str, eps: float,
                 dyt_alpha_init: float = 0.5):
        super().__init__()
        sizes = [input_size, *hidden_sizes]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.norms = nn.ModuleList(build_norm(norm_type, b, eps, dyt_alpha_init) for b in sizes[1:])
        self.act = ACT2FN[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear, norm in zip(self.linears, self.norms):
            x = self.act(norm(linear(x)))  # (..., hidden)
        return x


class LNormPolicyPreTrainedModel(RemoteCodeMixin, PreTrainedModel):
    """Weight init, Auto-class wiring and remote-code saving of LNormPolicy.

    Orthogonal init (gain sqrt(2) for hidden layers, ``actor_output_gain`` and
    ``critic_output_gain`` for the heads), zero biases, norm gains at 1.
    ``save_pretrained`` writes the modeling code next to the weights, so the
    folder loads with ``AutoModel.from_pretrained(folder, trust_remote_code=True)``
    where hf_lnorm is not installed.

    Examples:
        ```python
        from transformers import AutoModel

        policy = AutoModel.from_pretrained("my-policy", trust_remote_code=True)
        ```
    """

    config_class = LNormPolicyConfig
    base_model_prefix = "policy"
    main_input_name = "observations"
    _no_split_modules = ["LNormPolicyMLP"]
    auto_map_classes = {
        "AutoConfig": "configuration_lnorm_policy.LNormPolicyConfig",
        "AutoModel": "modeling_lnorm_policy.LNormPolicyModel",
    }
    card_description = (
        "LNormPolicy: an actor-critic policy (separate actor and critic MLPs, a normalization layer after every "
        "hidden layer) from the hf_lnorm package, built to study layer normalization in reinforcement learning."
    )
    card_intended_use = (
        "Control of small simulated environments (e.g. gymnasium CartPole-v1) and LayerNorm ablations in RL "
        "(norm_type layernorm vs rmsnorm vs none). Load with AutoModel: transformers has no reinforcement-learning "
        "Auto class. Not for real-world control."
    )
    card_pipeline_tag = "reinforcement-learning"
    card_config_keys = (
        "observation_size",
        "action_size",
        "action_space",
        "hidden_sizes",
        "critic_hidden_sizes",
        "activation",
    )
    card_norm_layout = "each hidden layer of the actor and the critic is `activation(norm(linear(x)))`"

    def _init_weights(self, module: nn.Module) -> None:
        """Orthogonal init (gain sqrt(2) for hidden layers, small for the action head), zero biases, norms at 1 / 0.

        DyT layers also get ``alpha`` at their ``alpha_init``.
        """
        config = self.config
        if isinstance(module, nn.Linear):
            gain = getattr(module, "init_gain", math.sqrt(2.0))
            _init.orthogonal_(module.weight, gain=gain)
            if module.bias is not None:
                _init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, LNormRMSNorm, LNormDyT)):
            if module.weight is not None:
                _init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                _init.zeros_(module.bias)
            if isinstance(module, LNormDyT):
                _init.constant_(module.alpha, module.alpha_init)
        elif isinstance(module, LNormPolicyModel) and module.log_std is not None:
            _init.constant_(module.log_std, config.initial_log_std)


class LNormPolicyModel(LNormPolicyPreTrainedModel):
    """Actor-critic policy: ``forward(observations)`` -> action-distribution ``logits`` and ``value``.

    The actor and the critic are separate MLPs over the observation; the actor
    ends in the action head, the critic in a scalar value head. Continuous
    action spaces add a learned, state-independent ``log_std``.

    Args:
        config: the model configuration.

    Examples:
        >>> import torch
        >>> from hf_lnorm.models import LNormPolicyConfig, LNormPolicyModel
        >>> policy = LNormPolicyModel(LNormPolicyConfig(observation_size=4, action_size=2))
        >>> observations = torch.randn(8, 4)
        >>> step = policy.act(observations, generator=torch.Generator().manual_seed(0))
        >>> log_prob, entropy, value = policy.evaluate_actions(observations, step.actions)
        >>> torch.allclose(log_prob, step.log_prob), value.shape
        (True, torch.Size([8]))
    """

    def __init__(self, config: LNormPolicyConfig):
        super().__init__(config)
        eps, alpha = config.layer_norm_eps, config.dyt_alpha_init
        self.actor = LNormPolicyMLP(config.observation_size, config.hidden_sizes, config.activation, config.norm_type, eps, alpha)
        self.action_head = nn.Linear(config.hidden_sizes[-1], config.action_size)
        self.action_head.init_gain = config.actor_output_gain
        self.critic = LNormPolicyMLP(config.observation_size, config.critic_hidden_sizes, config.activation, config.norm_type, eps,
                                     alpha)
        self.value_head = nn.Linear(config.critic_hidden_sizes[-1], 1)
        self.value_head.init_gain = config.critic_output_gain
        if config.action_space == "continuous":
            self.log_std = nn.Parameter(torch.full((config.action_size,), float(config.initial_log_std)))
        else:
            self.log_std = None
        self.post_init()

    # ------------------------------------------------------------------ inputs

    def _observations(self, observations) -> torch.Tensor:
        """Validate ``observations`` (a tensor or array of shape ``(..., observation_size)``) and cast to the model dtype."""
        expected = self.config.observation_size
        if not torch.is_tensor(observations):
            try:
                observations = torch.as_tensor(observations)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise TypeError(
                    f"observations must be a tensor or array of shape (batch, {expected}), got {type(observations).__name__} ({exc})"
                ) from None
        if observations.dim() == 0 or observations.shape[-1] != expected:
            raise ValueError(
                f"observations of shape {tuple(observations.shape)} do not fit this policy: expected (batch, {expected}) "
                f"(observation_size={expected})"
            )
        if observations.is_complex() or observations.dtype == torch.bool:
            raise TypeError(f"observations must be real numbers, got dtype {observations.dtype}")
        param = self.action_head.weight
        return observations.to(device=param.device, dtype=param.dtype)

    def _actions(self, actions, batch_shape: torch.Size, device) -> torch.Tensor:
        """Validate actions against the action space: integer ids in ``[0, action_size)`` or ``(..., action_size)`` floats."""
        config = self.config
        actions = torch.as_tensor(actions, device=device)
        if config.action_space == "discrete":
            if actions.is_floating_point():
                if not torch.equal(actions, actions.round()):
                    raise ValueError(f"discrete actions must be integer ids in [0, {config.action_size}), got non-integer values")
                actions = actions.long()
            if tuple(actions.shape) != tuple(batch_shape):
                raise ValueError(f"actions of shape {tuple(actions.shape)} do not match the observations: expected {tuple(batch_shape)}")
            if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= config.action_size):
                raise ValueError(
                    f"discrete actions must be in [0, {config.action_size}), got values from {int(actions.min())} to {int(actions.max())}"
                )
            return actions.long()
        expected = (*batch_shape, config.action_size)
        if tuple(actions.shape) != expected:
            raise ValueError(f"continuous actions of shape {tuple(actions.shape)} do not match the observations: expected {expected}")
        return actions.to(self.action_head.weight.dtype)

    # ------------------------------------------------------------------ distribution

    def distribution(self, logits: torch.Tensor) -> torch.distributions.Distribution:
        """The action distribution for the actor's output: ``Categorical(logits)`` or a diagonal ``Normal(mean, exp(log_std))``.

        Args:
            logits: the actor's output (``LNormPolicyOutput.logits``).

        Returns:
            The distribution, computed in float32.
        """
        if self.config.action_space == "discrete":
            return torch.distributions.Categorical(logits=logits.float())
        std = self.log_std.float().exp().expand_as(logits)
        return torch.distributions.Independent(torch.distributions.Normal(logits.float(), std), 1)

    def forward(
        self,
        observations: torch.Tensor,
        actions: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> Union[Tuple, LNormPolicyOutput]:
        """Action-distribution parameters and state value of a batch of observations.

        Args:
            observations: ``(batch, observation_size)`` (any leading shape works) floats.
            actions: actions to score: ``(batch,)`` integer ids (discrete) or ``(batch, action_size)`` (continuous);
                adds ``log_prob`` and ``entropy`` to the output.
            labels: expert actions (same format as ``actions``) for behaviour cloning; adds
                ``loss = -log_prob(labels).mean()``.
            return_dict: return a ``LNormPolicyOutput`` (default) or a tuple of its non-``None`` fields.
            **kwargs (Any): accepted for Trainer compatibility; unused.

        Returns:
            ``LNormPolicyOutput`` with ``logits (batch, action_size)`` and ``value (batch,)``.

        Raises:
            ValueError: observations whose last dimension is not ``observation_size``; actions that do not
                fit the action space.
            TypeError: observations that are not a real-valued tensor or array.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        observations = self._observations(observations)
        batch_shape = observations.shape[:-1]
        logits = self.action_head(self.actor(observations))  # (..., action_size)
        value = self.value_head(self.critic(observations)).squeeze(-1)  # (...)
        loss = log_prob = entropy = None
        if actions is not None or labels is not None:
            dist = self.distribution(logits)
            entropy = dist.entropy()
            if actions is not None:
                log_prob = dist.log_prob(self._actions(actions, batch_shape, logits.device))
            if labels is not None:
                loss = -dist.log_prob(self._actions(labels, batch_shape, logits.device)).mean()
        if not return_dict:
            return tuple(v for v in (loss, logits, value, log_prob, entropy) if v is not None)
        return LNormPolicyOutput(loss=loss, logits=logits, value=value, log_prob=log_prob, entropy=entropy)

    def evaluate_actions(self, observations, actions) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log_prob, entropy, value)`` of stored ``actions`` under the current policy, with gradients (PPO / A2C update).

        Args:
            observations (torch.Tensor): ``(batch, observation_size)``.
            actions (torch.Tensor): the actions taken, as ``act`` returned them.

        Returns:
            ``(log_prob, entropy, value)``, each ``(batch,)``.

        Raises:
            ValueError: observations or actions that do not fit the policy (see ``forward``).
        """
        out = self.forward(observations, actions=actions, return_dict=True)
        return out.log_prob, out.entropy, out.value

    @torch.no_grad()
    def act(self, observations, deterministic: bool = False, generator: Optional[torch.Generator] = None) -> PolicyStep:
        """Choose actions for a batch of observations (no gradients; for rollouts and evaluation).

        Args:
            observations (torch.Tensor | numpy.ndarray): ``(batch, observation_size)``; a single
                ``(observation_size,)`` observation gives unbatched results.
            deterministic: take the most likely action (argmax / the Gaussian mean) instead of sampling.
            generator: a ``torch.Generator`` for reproducible sampling.

        Returns:
            ``PolicyStep(actions, log_prob, value)``: actions ``(batch,)`` long (discrete) or
                ``(batch, action_size)`` float (continuous), their log-probability and the state value, each ``(batch,)``.
        """
        out = self.forward(observations, return_dict=True)
        logits = out.logits
        if self.config.action_space == "discrete":
            if deterministic:
                actions = logits.argmax(-1)
            else:
                probs = logits.float().softmax(-1).reshape(-1, logits.shape[-1])
                actions = torch.multinomial(probs, 1, generator=generator).reshape(logits.shape[:-1])
        else:
            actions = logits.float()
            if not deterministic:
                noise = torch.randn(logits.shape, generator=generator, device=logits.device, dtype=torch.float32)
                actions = actions + self.log_std.float().exp() * noise
        log_prob = self.distribution(logits).log_prob(actions)
        return PolicyStep(actions, log_prob, out.value)
