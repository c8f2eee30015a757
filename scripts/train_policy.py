#!/usr/bin/env python
"""Train LNormPolicy with PPO on a gymnasium environment (default: CartPole-v1) and evaluate it.

A JSON recipe (``configs/policy_cartpole.json``) gives the environment, the seed, the model
config, the PPO hyper-parameters, an early-stopping check and the final evaluation; flags
override it.

    python scripts/train_policy.py configs/policy_cartpole.json
    python scripts/train_policy.py configs/policy_cartpole.json --norm-type none --output-dir runs/policy_none --results runs/none.json
    python scripts/train_policy.py configs/policy_cartpole.json --no-early-stop --output-dir runs/policy_cartpole_full \
        --results data/results/policy_cartpole_full_budget.json
    python scripts/train_policy.py configs/policy_cartpole.json --compare-norms layernorm,none --seeds 0,1,2 \
        --results data/results/policy_cartpole_norms.json

PPO (clipped surrogate objective, generalized advantage estimation, one Adam optimizer for
actor and critic) is written out below. The environments are stepped in a plain loop and reset
by hand, so an episode cut off by the time limit (truncated, not terminated) is bootstrapped
with the critic's value of its final observation.

Every ``early_stop.every_updates`` updates the deterministic policy plays
``early_stop.episodes`` episodes on seeds of its own; training stops once their mean return
reaches ``early_stop.min_mean_return`` (or at ``total_timesteps``). The final evaluation then
plays ``evaluation.episodes`` fresh episodes on other seeds (deterministic actions by default) and
writes mean, std, the episode returns and the wall time to ``results_path``; the model is saved
with ``save_pretrained`` to ``output_dir`` (written under a temporary name, then renamed). An
existing ``output_dir`` is replaced only with ``--overwrite`` and only if this project wrote it
(``hf_lnorm.outputs``): a folder of other files is refused before training.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from typing import Dict, List, NamedTuple, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hf_lnorm._json import write_json  # noqa: E402
from hf_lnorm._machine import provenance  # noqa: E402
from hf_lnorm.models import LNormPolicyConfig, LNormPolicyModel  # noqa: E402
from hf_lnorm.outputs import OutputExistsError, check_output_dir, staged_output_dir  # noqa: E402

PPO_DEFAULTS = dict(
    num_envs=8,
    num_steps=128,
    total_timesteps=500_000,
    learning_rate=1e-3,
    anneal_lr=True,
    gamma=0.99,
    gae_lambda=0.95,
    update_epochs=4,
    num_minibatches=4,
    clip_coef=0.2,
    ent_coef=0.0,
    vf_coef=0.5,
    max_grad_norm=0.5,
)


# --------------------------------------------------------------------------- environments


def make_envs(env_id: str, count: int):
    """``count`` independent gymnasium environments (not yet reset)."""
    import gymnasium as gym

    return [gym.make(env_id) for _ in range(count)]


def model_config_for(env, model_settings: dict) -> LNormPolicyConfig:
    """An ``LNormPolicyConfig`` whose observation and action sizes come from ``env``'s spaces."""
    import gymnasium as gym

    obs_space, act_space = env.observation_space, env.action_space
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        raise ValueError(f"observation space {obs_space} is not supported: LNormPolicy takes flat Box observations")
    if isinstance(act_space, gym.spaces.Discrete):
        action_space, action_size = "discrete", int(act_space.n)
    elif isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1:
        action_space, action_size = "continuous", int(act_space.shape[0])
    else:
        raise ValueError(f"action space {act_space} is not supported: use Discrete or a flat Box")
    return LNormPolicyConfig(observation_size=int(obs_space.shape[0]), action_size=action_size, action_space=action_space, **model_settings)


def _env_action(action: torch.Tensor, env):
    import gymnasium as gym

    if isinstance(env.action_space, gym.spaces.Discrete):
        return int(action)
    return np.clip(action.numpy(), env.action_space.low, env.action_space.high)


# --------------------------------------------------------------------------- rollouts and advantages


class Rollout(NamedTuple):
    """One batch of on-policy experience, each tensor ``(num_steps, num_envs, ...)``."""

    observations: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor  # 1 where the episode ended (terminated or truncated) after this step
    last_value: torch.Tensor  # (num_envs,) value of the observation after the last step
    episode_returns: List[float]


class RolloutCollector:
    """Steps ``envs`` with the current policy and keeps their state between rollouts."""

    def __init__(self, envs, seed: int, gamma: float):
        self.envs = envs
        self.gamma = gamma
        self.observations = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
        self.running_returns = np.zeros(len(envs))

    def collect(self, model: LNormPolicyModel, num_steps: int, generator: torch.Generator) -> Rollout:
        """Play ``num_steps`` steps in every environment.

        An episode cut off by the time limit gets ``gamma * V(final observation)`` added to its last
        reward, so the advantage estimate does not treat the cut-off as a failure.
        """
        n = len(self.envs)
        obs_buf = torch.zeros(num_steps, n, self.observations.shape[1])
        act_buf, logp_buf, val_buf, rew_buf, done_buf = [], [], [], torch.zeros(num_steps, n), torch.zeros(num_steps, n)
        finished: List[float] = []
        for t in range(num_steps):
            obs = torch.from_numpy(self.observations)
            obs_buf[t] = obs
            step = model.act(obs, generator=generator)
            act_buf.append(step.actions)
            logp_buf.append(step.log_prob)
            val_buf.append(step.value)
            next_obs = np.empty_like(self.observations)
            for i, env in enumerate(self.envs):
                ob, reward, terminated, truncated, _ = env.step(_env_action(step.actions[i], env))
                self.running_returns[i] += reward
                if truncated and not terminated:
                    with torch.no_grad():
                        reward += self.gamma * float(model(torch.as_tensor(ob, dtype=torch.float32)[None]).value[0])
                rew_buf[t, i] = reward
                if terminated or truncated:
                    done_buf[t, i] = 1.0
                    finished.append(float(self.running_returns[i]))
                    self.running_returns[i] = 0.0
                    ob, _ = env.reset()
                next_obs[i] = ob
            self.observations = next_obs.astype(np.float32)
        with torch.no_grad():
            last_value = model(torch.from_numpy(self.observations)).value
        return Rollout(
            observations=obs_buf,
            actions=torch.stack(act_buf),
            log_probs=torch.stack(logp_buf),
            values=torch.stack(val_buf),
            rewards=rew_buf,
            dones=done_buf,
            last_value=last_value,
            episode_returns=finished,
        )


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_value: torch.Tensor, gamma: float, lam: float):
    """Generalized advantage estimation.

    Args:
        rewards, values, dones: ``(T, N)``; ``dones[t]`` = 1 when the episode ended after step ``t``.
        last_value: ``(N,)`` value of the observation after step ``T - 1``.
        gamma: discount.
        lam: GAE lambda (1 = Monte-Carlo returns, 0 = one-step TD).

    Returns:
        ``(advantages, returns)``, each ``(T, N)``; ``returns = advantages + values``.
    """
    steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    for t in reversed(range(steps)):
        next_value = last_value if t == steps - 1 else values[t + 1]
        alive = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * alive - values[t]
        running = delta + gamma * lam * alive * running
        advantages[t] = running
    return advantages, advantages + values


def ppo_update(model: LNormPolicyModel, optimizer, rollout: Rollout, settings: dict, generator: torch.Generator) -> Dict[str, float]:
    """Several epochs of clipped-surrogate PPO over one rollout.

    Returns:
        Means over minibatches of ``loss``, ``policy_loss``, ``value_loss``, ``entropy``, ``approx_kl``
        and ``clip_fraction``.
    """
    advantages, returns = compute_gae(
        rollout.rewards, rollout.values, rollout.dones, rollout.last_value, settings["gamma"], settings["gae_lambda"]
    )
    obs = rollout.observations.reshape(-1, rollout.observations.shape[-1])
    actions = rollout.actions.reshape(-1, *rollout.actions.shape[2:])
    old_log_probs = rollout.log_probs.reshape(-1)
    advantages, returns = advantages.reshape(-1), returns.reshape(-1)
    size = obs.shape[0]
    minibatch = max(1, size // settings["num_minibatches"])
    clip = settings["clip_coef"]
    stats: Dict[str, List[float]] = {k: [] for k in ("loss", "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")}
    model.train()
    for _ in range(settings["update_epochs"]):
        order = torch.randperm(size, generator=generator)
        for start in range(0, size, minibatch):
            idx = order[start : start + minibatch]
            log_prob, entropy, value = model.evaluate_actions(obs[idx], actions[idx])
            adv = advantages[idx]
            adv = (adv - adv.mean()) / (adv.std() + 1e-8) if adv.numel() > 1 else adv
            log_ratio = log_prob - old_log_probs[idx]
            ratio = log_ratio.exp()
            policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)).mean()
            value_loss = 0.5 * (value - returns[idx]).pow(2).mean()
            entropy_mean = entropy.mean()
            loss = policy_loss - settings["ent_coef"] * entropy_mean + settings["vf_coef"] * value_loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings["max_grad_norm"])
            optimizer.step()
            with torch.no_grad():
                stats["loss"].append(float(loss))
                stats["policy_loss"].append(float(policy_loss))
                stats["value_loss"].append(float(value_loss))
                stats["entropy"].append(float(entropy_mean))
                stats["approx_kl"].append(float(((ratio - 1) - log_ratio).mean()))
                stats["clip_fraction"].append(float(((ratio - 1).abs() > clip).float().mean()))
    model.eval()
    return {k: float(np.mean(v)) for k, v in stats.items()}


# --------------------------------------------------------------------------- evaluation


def evaluate(model: LNormPolicyModel, env_id: str, episodes: int, seed: int, deterministic: bool = True) -> List[float]:
    """Play ``episodes`` episodes side by side (episode ``i`` reset with seed ``seed + i``) and return their returns."""
    envs = make_envs(env_id, episodes)
    try:
        obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
        returns = np.zeros(episodes)
        alive = np.ones(episodes, dtype=bool)
        generator = torch.Generator().manual_seed(seed)
        model.eval()
        while alive.any():
            live = np.flatnonzero(alive)
            step = model.act(torch.from_numpy(obs[live]), deterministic=deterministic, generator=generator)
            for j, i in enumerate(live):
                ob, reward, terminated, truncated, _ = envs[i].step(_env_action(step.actions[j], envs[i]))
                returns[i] += reward
                obs[i] = ob
                if terminated or truncated:
                    alive[i] = False
    finally:
        for env in envs:
            env.close()
    return returns.tolist()


# --------------------------------------------------------------------------- training


def train(recipe: dict, log=print) -> dict:
    """Train a policy as ``recipe`` says; return the model, the per-update history and the evaluation.

    Returns:
        ``{"model", "history", "eval_returns", "timesteps", "updates", "stopped_early", "train_seconds"}``.
    """
    settings = {**PPO_DEFAULTS, **recipe.get("ppo", {})}
    for key in ("num_envs", "num_steps", "total_timesteps", "update_epochs", "num_minibatches"):
        if not isinstance(settings[key], int) or settings[key] < 1:
            raise ValueError(f"ppo.{key}={settings[key]!r} must be a positive integer")
    seed = int(recipe.get("seed", 0))
    env_id = recipe.get("env_id", "CartPole-v1")
    early = recipe.get("early_stop") or {}
    evaluation = recipe.get("evaluation") or {}

    start = time.perf_counter()
    torch.manual_seed(seed)
    envs = make_envs(env_id, settings["num_envs"])
    for i, env in enumerate(envs):
        env.action_space.seed(seed + i)
    config = model_config_for(envs[0], recipe.get("model", {}))
    model = LNormPolicyModel(config).eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["learning_rate"], eps=1e-5)
    generator = torch.Generator().manual_seed(seed)
    collector = RolloutCollector(envs, seed, settings["gamma"])
    batch = settings["num_envs"] * settings["num_steps"]
    num_updates = max(1, settings["total_timesteps"] // batch)
    history, recent = [], []
    stopped_early = False
    update = 0
    for update in range(1, num_updates + 1):
        if settings["anneal_lr"]:
            optimizer.param_groups[0]["lr"] = settings["learning_rate"] * (1.0 - (update - 1) / num_updates)
        rollout = collector.collect(model, settings["num_steps"], generator)
        stats = ppo_update(model, optimizer, rollout, settings, generator)
        recent = (recent + rollout.episode_returns)[-20:]
        stats.update(update=update, timesteps=update * batch, train_return=float(np.mean(recent)) if recent else None)
        if early.get("every_updates") and update % int(early["every_updates"]) == 0:
            check = evaluate(model, env_id, int(early.get("episodes", 10)), int(early.get("seed", 100_000)))
            stats["check_return"] = float(np.mean(check))
            if stats["check_return"] >= float(early.get("min_mean_return", math.inf)):
                stopped_early = True
        history.append(stats)
        if update % 10 == 0 or stopped_early or update == num_updates:
            log(
                f"update {update}/{num_updates} steps {update * batch} loss {stats['loss']:.4f} "
                f"train_return {stats['train_return'] if stats['train_return'] is not None else float('nan'):.1f}"
                + (f" check_return {stats['check_return']:.1f}" if "check_return" in stats else "")
            )
        if stopped_early:
            break
    for env in envs:
        env.close()
    train_seconds = time.perf_counter() - start
    eval_returns = evaluate(
        model, env_id, int(evaluation.get("episodes", 100)), int(evaluation.get("seed", 1_000_000)), bool(evaluation.get("deterministic", True))
    )
    return dict(
        model=model,
        history=history,
        eval_returns=eval_returns,
        timesteps=update * batch,
        updates=update,
        stopped_early=stopped_early,
        train_seconds=train_seconds,
    )


def summary(recipe: dict, run: dict, wall_seconds: float, command: str) -> dict:
    """The result record written to ``results_path``."""
    import transformers

    returns = np.asarray(run["eval_returns"])
    evaluation = recipe.get("evaluation") or {}
    return {
        "env_id": recipe.get("env_id", "CartPole-v1"),
        "seed": int(recipe.get("seed", 0)),
        "norm_type": run["model"].config.norm_type,
        "model": {k: getattr(run["model"].config, k) for k in ("observation_size", "action_size", "action_space", "hidden_sizes", "activation", "norm_type")},
        "eval_episodes": int(returns.size),
        "eval_deterministic": bool(evaluation.get("deterministic", True)),
        "eval_seed": int(evaluation.get("seed", 1_000_000)),
        "mean_return": float(returns.mean()),
        "std_return": float(returns.std()),
        "min_return": float(returns.min()),
        "episode_returns": [float(r) for r in returns],
        "timesteps": run["timesteps"],
        "updates": run["updates"],
        "stopped_early": run["stopped_early"],
        "train_seconds": round(run["train_seconds"], 1),
        "wall_seconds": round(wall_seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "gymnasium": _gym_version()},
        "command": command,
    }


def _gym_version() -> str:
    import gymnasium

    return gymnasium.__version__


def save_model(model: LNormPolicyModel, output_dir: str, training_data: Optional[str], overwrite: bool = False,
               protect: Sequence[Optional[str]] = ()) -> None:
    """``save_pretrained`` into a staging folder renamed onto ``output_dir`` (``hf_lnorm.outputs.staged_output_dir``).

    Args:
        model: the trained policy.
        output_dir: the model folder to write.
        training_data: recorded in the model card.
        overwrite: replace an earlier output of this script (never a folder of other files).
        protect: input files the output must neither be nor contain (the recipe).
    Raises:
        OutputExistsError: ``output_dir`` exists and may not be replaced (``UnsafeOutputError`` for other files).
    """
    with staged_output_dir(output_dir, overwrite, protect, writer="scripts/train_policy.py") as tmp:
        model.save_pretrained(tmp, training_data=training_data)


def _parse_list(text: Optional[str], cast) -> Optional[list]:
    return None if text is None else [cast(v) for v in text.split(",") if v.strip()]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", help="JSON recipe, e.g. configs/policy_cartpole.json")
    parser.add_argument("--seed", type=int, help="override the recipe's seed")
    parser.add_argument("--norm-type", choices=("layernorm", "rmsnorm", "dyt", "none"), help="override model.norm_type")
    parser.add_argument("--total-timesteps", type=int, help="override ppo.total_timesteps")
    parser.add_argument("--output-dir", help="override output_dir (the saved model)")
    parser.add_argument("--results", help="override results_path")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--no-early-stop", action="store_true", help="train for the full total_timesteps (drop the recipe's early_stop)")
    parser.add_argument("--compare-norms", help="comma list of norm types to train and evaluate with the same seeds (no model saved)")
    parser.add_argument("--seeds", help="comma list of seeds for --compare-norms (default: the recipe's seed)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output_dir written by an earlier run (never a folder of other files)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    with open(args.recipe, encoding="utf-8") as handle:
        recipe = json.load(handle)
    if args.seed is not None:
        recipe["seed"] = args.seed
    if args.norm_type:
        recipe.setdefault("model", {})["norm_type"] = args.norm_type
    if args.total_timesteps:
        recipe.setdefault("ppo", {})["total_timesteps"] = args.total_timesteps
    if args.no_early_stop:
        recipe["early_stop"] = {}
    command = "python scripts/train_policy.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results_path = args.results or recipe.get("results_path", "data/results/policy_cartpole.json")

    if args.compare_norms:
        norms = _parse_list(args.compare_norms, str)
        seeds = _parse_list(args.seeds, int) or [int(recipe.get("seed", 0))]
        rows = []
        for norm in norms:
            for seed in seeds:
                variant = copy.deepcopy(recipe)
                variant["seed"] = seed
                variant.setdefault("model", {})["norm_type"] = norm
                start = time.perf_counter()
                run = train(variant, log=lambda line, n=norm, s=seed: print(f"[{n} seed {s}] {line}", flush=True))
                row = summary(variant, run, time.perf_counter() - start, command)
                row.pop("episode_returns")
                rows.append(row)
                print(f"[{norm} seed {seed}] mean return {row['mean_return']:.1f} ± {row['std_return']:.1f} after "
                      f"{row['timesteps']} steps ({row['wall_seconds']:.0f} s)", flush=True)
        write_json(results_path, {"command": command, "runs": rows, "provenance": provenance()})
        print(f"wrote {results_path}")
        return 0

    output_dir = args.output_dir or recipe.get("output_dir", "runs/policy_cartpole")
    try:
        check_output_dir(output_dir, args.overwrite, [args.recipe])
    except OutputExistsError as exc:
        print(f"train_policy: error: {exc}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    run = train(recipe, log=lambda line: print(line, flush=True))
    save_model(run["model"], output_dir, recipe.get("training_data"), args.overwrite, [args.recipe])
    result = summary(recipe, run, time.perf_counter() - start, command)
    result["output_dir"] = output_dir
    result["provenance"] = provenance()
    write_json(results_path, result)
    print(
        f"{result['env_id']}: mean return {result['mean_return']:.1f} ± {result['std_return']:.1f} over "
        f"{result['eval_episodes']} episodes ({'deterministic' if result['eval_deterministic'] else 'sampled'} actions); "
        f"{result['timesteps']} steps, {result['wall_seconds']:.0f} s; model in {output_dir}, results in {results_path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
