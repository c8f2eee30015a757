"""LayerNorm in the critic of an off-policy actor-critic at a high update-to-data ratio.

Ball et al. 2023 ("Efficient Online Reinforcement Learning with Offline Data", RLPD) and Lyle et al.
2024 ("Normalization and effective learning rates in reinforcement learning") report that a critic
trained with many gradient updates per environment step (a high update-to-data ratio, UTD) drifts
to value estimates far above what the policy earns, or diverges, and that a LayerNorm after each
hidden Linear of the critic keeps its values in range. Nauman et al. 2024 (BRO) build on the same
observation.

This experiment trains TD3 (Fujimoto et al. 2018: twin critics with clipped double-Q targets,
target-policy smoothing, delayed actor updates) on gymnasium's ``Pendulum-v1`` with ``UTD`` critic
updates per environment step. Only the critic changes between configurations: each of the twin
critics is hf_lnorm's ``LNormPolicyMLP`` (hidden layers ``relu(norm(linear(x)))``, the building
block of the ``LNormPolicy`` family) with ``norm_type`` "layernorm" (``LNormLayerNorm``) or "none",
followed by a Linear value head. The actor is the same MLP without norms in every configuration.

Per seed it records the evaluation return (deterministic episodes every ``eval_every`` steps), the
critic's value estimate ``Q1(s, mu(s))`` on the states of those episodes next to their measured
discounted Monte-Carlo return (the difference is the critic's bias), the scale of the predicted Q
and of the TD target on the replay batches, and whether the critic diverged.

**The true range of Q.** A Pendulum step costs ``theta^2 + 0.1 * theta_dot^2 + 0.001 * u^2`` with
``|theta| <= pi``, ``|theta_dot| <= 8`` and ``|u| <= 2``, so every reward lies in ``[R_MIN, 0]`` with
``R_MIN = -(pi^2 + 6.4 + 0.004) = -16.27``, and any discounted value lies in ``[R_MIN / (1 - gamma), 0]``
(``[-1627.4, 0]`` for ``gamma = 0.99``). A run counts as diverged when a recorded Q or TD target is
not finite or its magnitude exceeds ``DIVERGE_FACTOR`` times that bound.

**The verdict.** With ``TOL`` = 5 % of the value range, the claim "the critic without LayerNorm
overestimates or diverges at high UTD, and LayerNorm keeps Q in range with equal or better return"
holds when (1) a no-norm seed diverged, or the no-norm critic's final bias (mean over seeds) exceeds
``TOL`` and exceeds the LayerNorm critic's by more than ``TOL``; (2) no LayerNorm seed diverged and
its final bias is at most ``TOL``; and (3) the LayerNorm agent's final return is at least the no-norm
agent's minus ``TOL``. "Final" is the mean over the last ``FINAL_EVALS`` evaluations.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ._report import provenance_lines
from ..errors import UsageError

__all__ = ["NAME", "DESCRIPTION", "DEFAULT_SEEDS", "GAMMA", "R_MIN", "Q_MIN", "TOL", "DIVERGE_FACTOR",
           "CONTROL_JSON", "run", "summarize", "verdict", "cartpole_control", "plot", "render_docs", "summary_lines"]

NAME = "critic_norm_rl"
DESCRIPTION = ("TD3 on Pendulum-v1 at 8 critic updates per env step, critic with vs without LayerNorm "
               "(Ball et al. 2023; Lyle et al. 2024)")
DEFAULT_SEEDS = 3
ENV_ID = "Pendulum-v1"
GAMMA = 0.99
# The largest per-step cost of Pendulum-v1: angle^2 (|angle| <= pi) + 0.1 speed^2 (|speed| <= 8) + 0.001 torque^2 (|u| <= 2).
R_MIN = -(math.pi ** 2 + 0.1 * 8.0 ** 2 + 0.001 * 2.0 ** 2)
Q_MIN = R_MIN / (1.0 - GAMMA)  # every true discounted value lies in [Q_MIN, 0]
TOL = 0.05 * abs(Q_MIN)  # 5 % of the value range: the margin of every comparison in the verdict
DIVERGE_FACTOR = 2.0  # diverged: |Q| or |TD target| above DIVERGE_FACTOR * |Q_MIN|, or not finite
FINAL_EVALS = 3  # "final" numbers are the mean over the last FINAL_EVALS evaluations
EPISODE_STEPS = 200  # Pendulum-v1's time limit: the evaluation return is the return of these steps
MC_TAIL = 460  # evaluation episodes run this many steps longer, so the Monte-Carlo returns of their first
#                EPISODE_STEPS states miss at most GAMMA**MC_TAIL * |Q_MIN| (16.0) of the infinite-horizon value
EVAL_SEED = 1_000_000  # evaluation episode e of seed s starts from env.reset(seed=EVAL_SEED + 100 * s + e)
CRITIC_NORMS = ("layernorm", "none")
NORM_LABELS = {"layernorm": "LayerNorm critic", "none": "no-norm critic", "rmsnorm": "RMSNorm critic",
               "dyt": "DyT critic"}
CONTROL_JSON = "data/results/policy_cartpole_norms.json"  # the PPO CartPole comparison, read by render_docs

# TD3's published hyperparameters (Fujimoto et al. 2018), with UTD critic updates per environment step.
TD3 = {"gamma": GAMMA, "tau": 0.005, "actor_lr": 3e-4, "critic_lr": 3e-4, "policy_noise": 0.2,
       "noise_clip": 0.5, "exploration_noise": 0.1, "policy_delay": 2}
FULL = {"env_steps": 3000, "start_steps": 500, "utd": 8, "batch_size": 128, "hidden_sizes": [256, 256],
        "eval_every": 250, "eval_episodes": 3, "log_every": 250}
QUICK = {"env_steps": 400, "start_steps": 150, "utd": 8, "batch_size": 64, "hidden_sizes": [64, 64],
         "eval_every": 100, "eval_episodes": 2, "log_every": 100}


def _gymnasium():
    try:
        import gymnasium
    except ImportError as exc:
        raise ImportError(f"the {NAME} experiment needs gymnasium ({exc}); install it with "
                          "pip install 'hf-lnorm[train]'") from exc
    return gymnasium


# --------------------------------------------------------------------------- networks


class Critic(nn.Module):
    """``Q(s, a)``: hf_lnorm's ``LNormPolicyMLP`` over ``[s, a]`` (hidden layers ``relu(norm(linear(x)))``), then a Linear head.

    Args:
        observation_size: size of ``s``.
        action_size: size of ``a``.
        hidden_sizes: widths of the hidden layers.
        norm_type: ``layernorm`` | ``rmsnorm`` | ``dyt`` | ``none``, the norm after each hidden Linear.

    Examples:
        >>> import torch
        >>> critic = Critic(3, 1, [16, 16], "layernorm")
        >>> critic(torch.zeros(5, 3), torch.zeros(5, 1)).shape
        torch.Size([5])
    """

    def __init__(self, observation_size: int, action_size: int, hidden_sizes: Sequence[int], norm_type: str):
        super().__init__()
        from ..models.modeling_lnorm_policy import LNormPolicyMLP

        self.body = LNormPolicyMLP(observation_size + action_size, list(hidden_sizes), "relu", norm_type, 1e-5)
        self.head = nn.Linear(hidden_sizes[-1], 1)

    def forward(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(torch.cat([observations, actions], dim=-1))).squeeze(-1)  # (B,)


class Actor(nn.Module):
    """``mu(s) = max_action * tanh(head(LNormPolicyMLP(s)))``, without norms.

    Examples:
        >>> import torch
        >>> actor = Actor(3, 1, [16, 16], 2.0)
        >>> float(actor(torch.zeros(4, 3)).abs().max()) <= 2.0
        True
    """

    def __init__(self, observation_size: int, action_size: int, hidden_sizes: Sequence[int], max_action: float):
        super().__init__()
        from ..models.modeling_lnorm_policy import LNormPolicyMLP

        self.body = LNormPolicyMLP(observation_size, list(hidden_sizes), "relu", "none", 1e-5)
        self.head = nn.Linear(hidden_sizes[-1], action_size)
        self.max_action = max_action

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.max_action * torch.tanh(self.head(self.body(observations)))  # (B, action_size)


# --------------------------------------------------------------------------- evaluation


def discounted_returns(rewards: Sequence[float], gamma: float = GAMMA) -> List[float]:
    """The discounted return from every step of an episode to its end.

    Args:
        rewards: the episode's rewards in order.
        gamma: the discount.

    Returns:
        ``G_t = sum_k gamma^k r_{t+k}`` for every ``t``.

    Examples:
        >>> discounted_returns([1.0, 1.0, 1.0], 0.5)
        [1.75, 1.5, 1.0]
    """
    out, g = [0.0] * len(rewards), 0.0
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def _evaluate(gym, actor: Actor, critics: nn.ModuleList, seed: int, episodes: int) -> Dict[str, float]:
    """Deterministic episodes from fixed start states: the return of their first ``EPISODE_STEPS`` steps,
    and the critic's ``Q1(s, mu(s))`` against the Monte-Carlo discounted return on those steps' states."""
    env = gym.make(ENV_ID, max_episode_steps=EPISODE_STEPS + MC_TAIL)
    returns, states, mc = [], [], []
    with torch.no_grad():
        for episode in range(episodes):
            obs, _ = env.reset(seed=EVAL_SEED + 100 * seed + episode)
            rewards = []
            for t in range(EPISODE_STEPS + MC_TAIL):
                if t < EPISODE_STEPS:
                    states.append(obs)
                action = actor(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()
                obs, reward, terminated, truncated, _ = env.step(action)
                rewards.append(float(reward))
                if terminated or truncated:
                    break
            returns.append(sum(rewards[:EPISODE_STEPS]))
            mc.extend(discounted_returns(rewards)[:EPISODE_STEPS])
        s = torch.as_tensor(np.asarray(states), dtype=torch.float32)
        a = actor(s)
        q1, q2 = critics[0](s, a), critics[1](s, a)
    env.close()
    q_pred, q_min = float(q1.mean()), float(torch.min(q1, q2).mean())
    q_mc = sum(mc) / len(mc)
    return {"return": sum(returns) / len(returns), "q_pred": q_pred, "q_pred_min": q_min, "q_mc": q_mc,
            "bias": q_pred - q_mc}


def _finite_or_none(value: float) -> Optional[float]:
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- training


def train_td3(norm_type: str, seed: int, sizes: dict, log: Callable[[str], None]) -> Dict[str, object]:
    """Train TD3 with ``sizes['utd']`` critic updates per environment step; record its curves.

    Args:
        norm_type: the norm of both critics (``layernorm`` | ``rmsnorm`` | ``dyt`` | ``none``).
        seed: seeds torch, numpy (exploration and replay sampling) and the environment.
        sizes: ``FULL`` or ``QUICK``.
        log: called with one line per evaluation.

    Returns:
        The per-seed record: ``critic_norm``, ``seed``, ``eval`` (``step``, ``return``, ``q_pred``,
        ``q_pred_min``, ``q_mc``, ``bias``), ``train`` (``step``, ``q_mean``, ``q_absmax``, ``target_mean``,
        ``critic_loss``, averaged over the updates since the previous entry; ``q_absmax`` is their largest
        ``|Q1|``), ``diverged``, ``diverged_at``, ``final`` (mean over the last ``FINAL_EVALS``
        evaluations) and ``wall_s``.
    """
    gym = _gymnasium()
    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = gym.make(ENV_ID)
    obs_size, act_size = env.observation_space.shape[0], env.action_space.shape[0]
    max_action = float(env.action_space.high[0])
    hidden = sizes["hidden_sizes"]
    actor = Actor(obs_size, act_size, hidden, max_action)
    critics = nn.ModuleList([Critic(obs_size, act_size, hidden, norm_type) for _ in range(2)])
    actor_target, critics_target = copy.deepcopy(actor), copy.deepcopy(critics)
    for p in list(actor_target.parameters()) + list(critics_target.parameters()):
        p.requires_grad_(False)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=TD3["actor_lr"])
    critic_opt = torch.optim.Adam(critics.parameters(), lr=TD3["critic_lr"])
    pairs = list(zip(list(actor_target.parameters()) + list(critics_target.parameters()),
                     list(actor.parameters()) + list(critics.parameters())))

    n = sizes["env_steps"]
    buf_s = np.zeros((n, obs_size), np.float32)
    buf_a = np.zeros((n, act_size), np.float32)
    buf_r = np.zeros(n, np.float32)
    buf_s2 = np.zeros((n, obs_size), np.float32)
    buf_done = np.zeros(n, np.float32)  # 1 only on termination; Pendulum's time limit is a truncation and bootstraps
    noise_scale = TD3["exploration_noise"] * max_action
    policy_noise, noise_clip = TD3["policy_noise"] * max_action, TD3["noise_clip"] * max_action

    ev = {k: [] for k in ("step", "return", "q_pred", "q_pred_min", "q_mc", "bias")}
    tr = {k: [] for k in ("step", "q_mean", "q_absmax", "target_mean", "critic_loss")}
    acc = {"q": 0.0, "qmax": 0.0, "y": 0.0, "loss": 0.0, "count": 0}
    diverged_at: Optional[int] = None
    updates = 0
    bound = DIVERGE_FACTOR * abs(Q_MIN)

    obs, _ = env.reset(seed=seed)
    for step in range(1, n + 1):
        if step <= sizes["start_steps"]:
            action = rng.uniform(-max_action, max_action, size=act_size).astype(np.float32)
        else:
            with torch.no_grad():
                action = actor(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()
            action = np.clip(action + rng.normal(0.0, noise_scale, size=act_size), -max_action, max_action)
            action = action.astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        i = step - 1
        buf_s[i], buf_a[i], buf_r[i], buf_s2[i], buf_done[i] = obs, action, reward, next_obs, float(terminated)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()

        if step >= sizes["start_steps"]:
            for _ in range(sizes["utd"]):
                idx = rng.integers(0, step, size=sizes["batch_size"])
                s, a = torch.from_numpy(buf_s[idx]), torch.from_numpy(buf_a[idx])
                r, s2, done = torch.from_numpy(buf_r[idx]), torch.from_numpy(buf_s2[idx]), torch.from_numpy(buf_done[idx])
                with torch.no_grad():
                    noise = (torch.randn_like(a) * policy_noise).clamp(-noise_clip, noise_clip)
                    a2 = (actor_target(s2) + noise).clamp(-max_action, max_action)
                    q_next = torch.min(critics_target[0](s2, a2), critics_target[1](s2, a2))
                    y = r + TD3["gamma"] * (1.0 - done) * q_next  # (B,)
                q1, q2 = critics[0](s, a), critics[1](s, a)
                loss = (q1 - y).pow(2).mean() + (q2 - y).pow(2).mean()
                critic_opt.zero_grad(set_to_none=True)
                loss.backward()
                critic_opt.step()
                updates += 1
                if updates % TD3["policy_delay"] == 0:
                    actor_loss = -critics[0](s, actor(s)).mean()
                    actor_opt.zero_grad(set_to_none=True)
                    actor_loss.backward()
                    actor_opt.step()
                    with torch.no_grad():
                        for target, online in pairs:
                            target.lerp_(online, TD3["tau"])
                q1d = q1.detach()
                acc["q"] += float(q1d.mean())
                acc["qmax"] = max(acc["qmax"], float(q1d.abs().max()))
                acc["y"] += float(y.mean())
                acc["loss"] += float(loss.detach())
                acc["count"] += 1

        if step % sizes["log_every"] == 0 and acc["count"]:
            values = [acc["q"] / acc["count"], acc["qmax"], acc["y"] / acc["count"], acc["loss"] / acc["count"]]
            tr["step"].append(step)
            for key, value in zip(("q_mean", "q_absmax", "target_mean", "critic_loss"), values):
                tr[key].append(_finite_or_none(value))
            acc = {"q": 0.0, "qmax": 0.0, "y": 0.0, "loss": 0.0, "count": 0}
            if diverged_at is None and (not all(math.isfinite(v) for v in values[:3])
                                        or max(abs(values[0]), abs(values[2])) > bound):
                diverged_at = step
            if not all(math.isfinite(v) for v in values):
                log(f"{norm_type} critic seed {seed}: non-finite Q at step {step}; training stopped")
                break
        if step % sizes["eval_every"] == 0:
            measured = _evaluate(gym, actor, critics, seed, sizes["eval_episodes"])
            ev["step"].append(step)
            for key, value in measured.items():
                ev[key].append(_finite_or_none(value))
            if diverged_at is None and not (math.isfinite(measured["q_pred"]) and abs(measured["q_pred"]) <= bound):
                diverged_at = step
            log(f"{norm_type} critic seed {seed} step {step}: return {measured['return']:.1f}, "
                f"Q {measured['q_pred']:.1f} vs Monte-Carlo {measured['q_mc']:.1f}")
    env.close()
    final = {}
    for key in ("return", "q_pred", "q_mc", "bias"):
        tail = ev[key][-FINAL_EVALS:]
        final[key] = sum(tail) / len(tail) if tail and all(v is not None for v in tail) else None
    return {"critic_norm": norm_type, "seed": seed, "eval": ev, "train": tr, "updates": updates,
            "diverged": diverged_at is not None, "diverged_at": diverged_at, "final": final,
            "wall_s": round(time.perf_counter() - started, 1)}


# --------------------------------------------------------------------------- summary and verdict


def _mean_std(values: Sequence[float]) -> Dict[str, Optional[float]]:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "n": len(values)}


def verdict(configs: Dict[str, dict]) -> Dict[str, object]:
    """Decide the claim from the per-configuration summaries of the LayerNorm and the no-norm critic.

    Args:
        configs: ``{"layernorm": c, "none": c}`` (other keys are ignored), each ``c`` holding ``diverged``
            (how many seeds diverged) and ``final_bias``, ``final_return`` as ``{"mean": ..., "std": ...}``.

    Returns:
        ``none_overestimates`` (a no-norm seed diverged, or its final bias exceeds ``TOL`` and the
        LayerNorm critic's by more than ``TOL``), ``layernorm_in_range`` (no LayerNorm seed diverged and
        its final bias is at most ``TOL``), ``layernorm_return_ok`` (its final return is at least the
        no-norm one minus ``TOL``) and ``held`` (all three).

    Examples:
        >>> ok = {"diverged": 0, "final_bias": {"mean": 10.0}, "final_return": {"mean": -200.0}}
        >>> bad = {"diverged": 1, "final_bias": {"mean": 500.0}, "final_return": {"mean": -900.0}}
        >>> verdict({"layernorm": ok, "none": bad})["held"], verdict({"layernorm": bad, "none": ok})["held"]
        (True, False)
    """
    ln, none = configs["layernorm"], configs["none"]
    ln_bias, none_bias = ln["final_bias"]["mean"], none["final_bias"]["mean"]
    ln_ret, none_ret = ln["final_return"]["mean"], none["final_return"]["mean"]
    none_over = bool(none["diverged"] > 0 or (
        none_bias is not None and ln_bias is not None and none_bias > TOL and none_bias - ln_bias > TOL))
    ln_in_range = bool(ln["diverged"] == 0 and ln_bias is not None and ln_bias <= TOL)
    if ln_ret is None:
        ln_return_ok = False
    else:
        ln_return_ok = bool(none_ret is None or ln_ret >= none_ret - TOL)
    return {"tol": TOL, "none_overestimates": none_over, "layernorm_in_range": ln_in_range,
            "layernorm_return_ok": ln_return_ok, "held": none_over and ln_in_range and ln_return_ok}


def summarize(per_seed: Sequence[dict]) -> Dict[str, object]:
    """Per critic norm: final numbers over seeds, mean curves, divergences; and the verdict.

    Args:
        per_seed: the records ``train_td3`` returns.

    Returns:
        ``{"configs": {norm: {...}}, "verdict": verdict(configs)}``. A config holds ``seeds``,
        ``diverged`` (count), ``final_return``, ``final_q_pred``, ``final_q_mc``, ``final_bias`` (each
        ``{"mean", "std", "n"}`` over seeds, sample std), ``peak_abs_q`` (largest ``|Q1|`` on any replay
        batch, over seeds) and ``curves`` (eval and train curves averaged over the seeds that reached each point).
    """
    groups: Dict[str, List[dict]] = {}
    for record in per_seed:
        groups.setdefault(record["critic_norm"], []).append(record)
    configs = {}
    for norm, records in groups.items():
        curves = {}
        for part, keys in (("eval", ("return", "q_pred", "q_mc", "bias")),
                           ("train", ("q_mean", "target_mean", "q_absmax"))):
            longest = max((r[part]["step"] for r in records), key=len)
            curves[part] = {"step": list(longest)}
            for key in keys:
                stats = [_mean_std([r[part][key][i] for r in records if i < len(r[part][key])])
                         for i in range(len(longest))]
                curves[part][key] = {"mean": [s["mean"] for s in stats], "std": [s["std"] for s in stats]}
        peaks = [v for r in records for v in r["train"]["q_absmax"] if v is not None]
        configs[norm] = {
            "seeds": len(records),
            "diverged": sum(r["diverged"] for r in records),
            **{f"final_{k}": _mean_std([r["final"][k] for r in records]) for k in ("return", "q_pred", "q_mc", "bias")},
            "peak_abs_q": max(peaks) if peaks else None,
            "curves": curves,
        }
    out: Dict[str, object] = {"configs": configs}
    if "layernorm" in configs and "none" in configs:
        out["verdict"] = verdict(configs)
    return out


def run(seeds: int, quick: bool = False, log: Optional[Callable[[str], None]] = None) -> Dict[str, object]:
    """Train TD3 with a LayerNorm critic and a no-norm critic for every seed.

    Args:
        seeds: number of seeds (``0 .. seeds-1``); a seed sets the weights, the exploration, the replay
            sampling and the environment.
        quick: ``QUICK`` sizes (400 steps, width 64) instead of ``FULL``.
        log: called with one line per evaluation.

    Returns:
        ``{"settings": {...}, "per_seed": [...], "summary": summarize(per_seed)}``.

    Raises:
        ImportError: gymnasium is not installed (``pip install 'hf-lnorm[train]'``).
    """
    _gymnasium()
    sizes = dict(QUICK if quick else FULL)
    log = log or (lambda line: None)
    per_seed = [train_td3(norm, seed, sizes, log) for seed in range(seeds) for norm in CRITIC_NORMS]
    settings = {
        **sizes, "env": ENV_ID, "algorithm": "TD3", "td3": dict(TD3), "critic_norms": list(CRITIC_NORMS),
        "seeds": list(range(seeds)), "critic": "2 x LNormPolicyMLP(relu(norm(linear(x)))) + Linear head, twin",
        "actor": "LNormPolicyMLP without norms + Linear head, tanh scaled to the action bound",
        "torch_threads": torch.get_num_threads(), "r_min": R_MIN, "q_min": Q_MIN, "tol": TOL,
        "diverge_bound": DIVERGE_FACTOR * abs(Q_MIN), "final_evals": FINAL_EVALS, "episode_steps": EPISODE_STEPS,
        "mc_tail": MC_TAIL, "mc_tail_bound": GAMMA ** MC_TAIL * abs(Q_MIN),
    }
    return {"settings": settings, "per_seed": per_seed, "summary": summarize(per_seed)}


# --------------------------------------------------------------------------- the easy-task control


def cartpole_control(path: "Path | str" = CONTROL_JSON) -> Dict[str, object]:
    """The PPO CartPole comparison of LayerNorm and no norm in the policy, read from its result JSON.

    Args:
        path: the JSON that ``scripts/train_policy.py --compare-norms`` wrote (``CONTROL_JSON``, relative
            to the hf_lnorm checkout).

    Returns:
        ``{"command": ..., "norms": {norm: {"seeds", "mean_return": {"mean", "std", "n"}, "timesteps": {...}}}}``.

    Raises:
        UsageError: the file is missing or unreadable (render the page from the checkout root).
    """
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise UsageError(f"the {NAME} page states the PPO CartPole control from {str(path)!r}, which could not be "
                         f"read ({exc}); render it from the hf_lnorm checkout root") from None
    norms: Dict[str, dict] = {}
    for record in data["runs"]:
        entry = norms.setdefault(record["norm_type"], {"returns": [], "timesteps": []})
        entry["returns"].append(record["mean_return"])
        entry["timesteps"].append(record["timesteps"])
    return {"command": data.get("command"), "episodes": data["runs"][0].get("eval_episodes"),
            "norms": {k: {"seeds": len(v["returns"]), "mean_return": _mean_std(v["returns"]),
                          "timesteps": _mean_std(v["timesteps"])} for k, v in norms.items()}}


# --------------------------------------------------------------------------- reporting


def plot(result: dict, path: "Path | str") -> None:
    """Draw return, critic bias and replay-batch Q scale against environment steps, one line per critic norm.

    Args:
        result: the experiment's JSON (``summary.configs`` is read).
        path: the PNG to write.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = result["summary"]["configs"]
    colours = {"layernorm": "tab:blue", "none": "tab:red", "rmsnorm": "tab:green", "dyt": "tab:purple"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = (("eval", "return", "evaluation return (200 steps)", axes[0]),
              ("eval", "q_pred", "Q1(s, mu(s)) on evaluation states", axes[1]),
              ("train", "q_mean", "mean Q1 on replay batches", axes[2]))

    def band(ax, steps, stats, colour, label, style="-"):
        pts = [(x, m, s or 0.0) for x, m, s in zip(steps, stats["mean"], stats["std"]) if m is not None]
        if not pts:
            return
        xs, ms, ss = zip(*pts)
        ax.plot(xs, ms, style, color=colour, label=label)
        ax.fill_between(xs, [m - s for m, s in zip(ms, ss)], [m + s for m, s in zip(ms, ss)], color=colour, alpha=0.15)

    for norm, config in configs.items():
        colour = colours.get(norm, "black")
        for part, key, _, ax in panels:
            band(ax, config["curves"][part]["step"], config["curves"][part][key], colour, NORM_LABELS.get(norm, norm))
        band(axes[1], config["curves"]["eval"]["step"], config["curves"]["eval"]["q_mc"], colour,
             f"{NORM_LABELS.get(norm, norm)}: Monte-Carlo return", "--")
        band(axes[2], config["curves"]["train"]["step"], config["curves"]["train"]["target_mean"], colour,
             f"{NORM_LABELS.get(norm, norm)}: TD target", ":")
    for _, _, title, ax in panels:
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("environment steps")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[1:]:
        ax.axhline(Q_MIN, color="grey", linewidth=0.8)
        ax.axhline(0.0, color="grey", linewidth=0.8)
    seeds = result.get("seeds")
    utd = result.get("settings", {}).get("utd")
    fig.suptitle(f"TD3 on {ENV_ID}, {utd} critic updates per env step (mean ± std over {seeds} seed"
                 f"{'s' if seeds != 1 else ''}; grey lines: the true value range [{Q_MIN:.0f}, 0])", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pm(stats: dict, digits: int = 1) -> str:
    if stats["mean"] is None:
        return "n/a"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}" if stats["n"] > 1 else f"{stats['mean']:.{digits}f}"


def summary_lines(result: dict) -> List[str]:
    """The verdict as one sentence with its numbers (the docs page's result line).

    Args:
        result: the experiment's JSON.

    Returns:
        One line, or none when the result lacks either the LayerNorm or the no-norm critic.
    """
    summary = result["summary"]
    if "verdict" not in summary:
        return []
    v, ln, none = summary["verdict"], summary["configs"]["layernorm"], summary["configs"]["none"]
    yes = {True: "yes", False: "no"}
    head = "**Claim reproduced.**" if v["held"] else "**Claim not reproduced.**"
    return [f"{head} Final critic bias Q1 − Monte-Carlo return: no-norm {_pm(none['final_bias'])}, LayerNorm "
            f"{_pm(ln['final_bias'])}; diverged seeds: no-norm {none['diverged']} of {none['seeds']}, LayerNorm "
            f"{ln['diverged']} of {ln['seeds']}; final return: no-norm {_pm(none['final_return'])}, LayerNorm "
            f"{_pm(ln['final_return'])}. No-norm critic overestimates or diverges (bias > {v['tol']:.1f} and "
            f"> LayerNorm's + {v['tol']:.1f}, or a divergence): {yes[v['none_overestimates']]}; LayerNorm critic "
            f"in range (no divergence, bias ≤ {v['tol']:.1f}): {yes[v['layernorm_in_range']]}; LayerNorm return "
            f"≥ no-norm − {v['tol']:.1f}: {yes[v['layernorm_return_ok']]}." + _seed_counts(result, v["tol"])]


def _seed_counts(result: dict, tol: float) -> str:
    """How many seeds of each critic end with a bias above ``tol`` (the spread behind the means)."""
    records = result.get("per_seed")
    if not records:
        return ""
    counts = []
    for norm in ("none", "layernorm"):
        mine = [r for r in records if r["critic_norm"] == norm]
        over = sum(1 for r in mine if r["final"]["bias"] is None or r["final"]["bias"] > tol)
        counts.append(f"{'no-norm' if norm == 'none' else 'LayerNorm'} {over} of {len(mine)}")
    return f" Seeds whose final bias exceeds {tol:.1f} (or is not finite): {', '.join(counts)}."


def render_docs(result: dict) -> str:
    """The user's-guide page (``docs/experiments/critic_norm_rl.md``) for a result JSON.

    The PPO CartPole control's numbers are read from ``CONTROL_JSON``, so the page is rendered from the
    hf_lnorm checkout root.

    Args:
        result: the experiment's JSON.

    Returns:
        The Markdown text; every number in it comes from ``result`` or ``CONTROL_JSON``.

    Raises:
        UsageError: ``CONTROL_JSON`` cannot be read from the current folder.
    """
    s, seeds = result["settings"], result["seeds"]
    configs = result["summary"]["configs"]
    control = cartpole_control(CONTROL_JSON)
    td3 = s["td3"]
    hidden = " × ".join(str(h) for h in s["hidden_sizes"])
    lines = [
        f"<!-- Generated by hf-lnorm experiment {NAME} --render-docs data/results/experiments/{NAME}.json. "
        "Edit the JSON or the renderer, not this page. -->",
        "# LayerNorm in the critic at a high update-to-data ratio",
        "",
        "**The question.** Ball et al. (2023), *Efficient Online Reinforcement Learning with Offline Data* (RLPD), "
        "and Lyle et al. (2024), *Normalization and effective learning rates in reinforcement learning*, report "
        "that an off-policy critic trained with many gradient updates per environment step overestimates its "
        "values or diverges, and that a LayerNorm after each hidden Linear of the critic keeps its values in range "
        "(Nauman et al. 2024, BRO, build on the same observation). Does the critic without LayerNorm overestimate "
        "or diverge here, and does the LayerNorm critic stay in range with an equal or better return?",
        "",
        "## Setup",
        "",
        f"- **Agent**: TD3 (twin critics, clipped double-Q targets, target-policy smoothing {td3['policy_noise']} "
        f"clipped at {td3['noise_clip']} × the action bound, actor and target updates every {td3['policy_delay']} "
        f"critic updates, τ = {td3['tau']}, γ = {td3['gamma']}, Adam at {td3['actor_lr']:g} for both), "
        f"exploration noise {td3['exploration_noise']} × the action bound.",
        f"- **Environment**: gymnasium `{s['env']}`, {s['env_steps']} environment steps, the first "
        f"{s['start_steps']} with uniform random actions; then **{s['utd']} critic updates per environment step** "
        f"(update-to-data ratio {s['utd']}) on replay batches of {s['batch_size']}.",
        f"- **Critic**: each twin is `LNormPolicyMLP` (the `LNormPolicy` family's hidden layers, "
        f"`relu(norm(linear(x)))`) over `[s, a]`, {hidden}, then a Linear value head; the norm is "
        "`LNormLayerNorm` (`norm_type=\"layernorm\"`) or none. **Actor**: the same MLP without norms, tanh scaled "
        "to the action bound, identical in every configuration.",
        f"- **Measured**: every {s['eval_every']} steps, {s['eval_episodes']} deterministic episodes from fixed "
        f"start states: the return of their {s['episode_steps']} steps, and the critic's estimate Q1(s, μ(s)) on "
        "their states next to the discounted Monte-Carlo return actually obtained from those states (the episodes "
        f"run {s['mc_tail']} steps longer, so the Monte-Carlo returns miss at most {s['mc_tail_bound']:.1f} of the "
        "infinite-horizon value); the difference is the critic's **bias**. Every "
        f"{s['log_every']} steps, the mean Q1 and the mean TD target on the replay batches of those updates.",
        f"- **True value range**: a Pendulum reward lies in [{s['r_min']:.2f}, 0] (angle² ≤ π², 0.1 × speed² ≤ 6.4, "
        f"0.001 × torque² ≤ 0.004), so every true discounted value lies in [{s['q_min']:.1f}, 0]. A run "
        f"**diverged** when a recorded Q or TD target is not finite or exceeds {s['diverge_bound']:.1f} in magnitude.",
        f"- **Verdict rule** (in code): with TOL = 5 % of the value range = {s['tol']:.1f}, the claim holds when "
        "(1) a no-norm seed diverged, or the no-norm critic's final bias exceeds TOL and exceeds the LayerNorm "
        "critic's by more than TOL; (2) no LayerNorm seed diverged and its final bias is at most TOL; (3) the "
        f"LayerNorm agent's final return is at least the no-norm one's minus TOL. \"Final\" is the mean over the "
        f"last {s['final_evals']} evaluations of a seed; the table shows mean ± standard deviation over "
        f"{seeds} seed{'s' if seeds != 1 else ''} (a seed sets the weights, the exploration, the replay sampling "
        "and the environment).",
        "",
        f"Run it (the run recorded here took {result.get('wall_s', 0) / 60:.1f} minutes at "
        f"{s['torch_threads']} torch thread{'s' if s['torch_threads'] != 1 else ''} on the machine named under "
        "Provenance; `--quick` is a short check with a small network):",
        "",
        "```bash",
        f"OMP_NUM_THREADS=1 hf-lnorm experiment {NAME} --seeds {seeds}",
        "```",
        "",
        "## Result",
        "",
    ]
    lines += summary_lines(result)
    lines += ["", f"![Return, critic value estimate and replay-batch Q over training](img/{NAME}.png)", "",
              "| critic | seeds | diverged | final return | final Q1(s, μ(s)) | final Monte-Carlo return | final bias | "
              "largest \\|Q1\\| on a replay batch |",
              "|---|---|---|---|---|---|---|---|"]
    for norm, c in configs.items():
        peak = f"{c['peak_abs_q']:.1f}" if c["peak_abs_q"] is not None else "n/a"
        lines.append(f"| {NORM_LABELS.get(norm, norm)} | {c['seeds']} | {c['diverged']} | {_pm(c['final_return'])} | "
                     f"{_pm(c['final_q_pred'])} | {_pm(c['final_q_mc'])} | {_pm(c['final_bias'])} | {peak} |")
    lines += ["", "### Per seed", "",
              "| critic | seed | final return | final bias | diverged at step | critic updates | wall (s) |",
              "|---|---|---|---|---|---|---|"]
    for r in result["per_seed"]:
        ret = f"{r['final']['return']:.1f}" if r["final"]["return"] is not None else "n/a"
        bias = f"{r['final']['bias']:.1f}" if r["final"]["bias"] is not None else "n/a"
        lines.append(f"| {NORM_LABELS.get(r['critic_norm'], r['critic_norm'])} | {r['seed']} | {ret} | {bias} | "
                     f"{r['diverged_at'] if r['diverged'] else '-'} | {r['updates']} | {r['wall_s']} |")
    lines += ["", "## The easy-task control: PPO on CartPole", ""]
    parts = []
    for norm, c in sorted(control["norms"].items()):
        parts.append(f"{norm}: mean return {_pm(c['mean_return'], 2)} over {c['seeds']} seeds "
                     f"(stopped after {_pm(c['timesteps'], 0)} timesteps)")
    means = {k: c["mean_return"]["mean"] for k, c in control["norms"].items()}
    gap = ""
    if "layernorm" in means and "none" in means:
        diff = means["layernorm"] - means["none"]
        gap = (f" The LayerNorm policy's mean return is {abs(diff):.2f} {'above' if diff >= 0 else 'below'} the "
               f"no-norm one's ({abs(diff) / 5:.2f} % of the maximum return 500).")
    lines += [f"The policy-network comparison on an easy task: PPO on CartPole-v1 with the "
              f"`LNormPolicy` family, LayerNorm against no norm in the policy and value networks, "
              f"evaluated over {control['episodes']} deterministic episodes per seed (maximum return 500): "
              + "; ".join(parts) + "." + gap + f" Source: `{CONTROL_JSON}`, also tabulated on the "
              "[model families results page](../results/families.md); command: "
              f"`{control['command']}`.", ""]
    lines += ["## Provenance", ""] + provenance_lines(result, NAME)
    return "\n".join(lines) + "\n"
