"""LNormPolicy: shapes, distributions, save/load, remote code, Hub push, patching, export, Trainer, bad input, tiny PPO."""

import json
import math
import os

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel, Trainer, TrainingArguments

import hf_lnorm
from hf_lnorm.models import LNormPolicyConfig, LNormPolicyModel, layers

from ..hub_server import HubServer, use_endpoint
from ..backend_check import check_default_backend
from .conftest import BLOCK_HF_LNORM, assert_norm_paths_agree, load_script, run_python

B, OBS, ACT = 5, 6, 3


def tiny_policy_config(**overrides) -> LNormPolicyConfig:
    values = dict(observation_size=OBS, action_size=ACT, hidden_sizes=[16, 8], critic_hidden_sizes=[12])
    values.update(overrides)
    return LNormPolicyConfig(**values)


def _obs(batch=B, seed=0):
    return torch.randn(batch, OBS, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("norm_type", ["layernorm", "rmsnorm", "none"])
@pytest.mark.parametrize("action_space", ["discrete", "continuous"])
def test_forward_shapes_distribution_and_norm_layout(norm_type, action_space):
    torch.manual_seed(0)
    model = LNormPolicyModel(tiny_policy_config(norm_type=norm_type, action_space=action_space)).eval()
    norm_class = {"layernorm": layers.LNormLayerNorm, "rmsnorm": layers.LNormRMSNorm, "none": layers.Passthrough}[norm_type]
    norms = [m for m in model.modules() if isinstance(m, norm_class)]
    assert len(norms) == 2 + 1  # one after each hidden layer: actor [16, 8], critic [12]
    obs = _obs()
    out = model(obs)
    assert out.logits.shape == (B, ACT) and out.value.shape == (B,)
    assert out.loss is None and out.log_prob is None

    step = model.act(obs, generator=torch.Generator().manual_seed(1))
    expected_action_shape = (B,) if action_space == "discrete" else (B, ACT)
    assert step.actions.shape == expected_action_shape and step.log_prob.shape == (B,) and step.value.shape == (B,)
    log_prob, entropy, value = model.evaluate_actions(obs, step.actions)
    torch.testing.assert_close(log_prob, step.log_prob)
    torch.testing.assert_close(value, out.value)
    if action_space == "discrete":
        assert step.actions.dtype == torch.long
        manual = torch.log_softmax(out.logits, -1).gather(-1, step.actions[:, None]).squeeze(-1)
        torch.testing.assert_close(log_prob, manual)
        assert torch.all(entropy <= math.log(ACT) + 1e-6)
        assert torch.equal(model.act(obs, deterministic=True).actions, out.logits.argmax(-1))
    else:
        std = model.log_std.exp()
        manual = torch.distributions.Normal(out.logits, std).log_prob(step.actions).sum(-1)
        torch.testing.assert_close(log_prob, manual)
        torch.testing.assert_close(model.act(obs, deterministic=True).actions, out.logits)
    # gradients reach both networks through evaluate_actions
    (-log_prob.mean() + value.pow(2).mean()).backward()
    assert model.actor.linears[0].weight.grad.abs().sum() > 0 and model.critic.linears[0].weight.grad.abs().sum() > 0


def test_init_is_orthogonal_with_a_small_action_head_and_configured_log_std():
    model = LNormPolicyModel(tiny_policy_config(action_space="continuous", initial_log_std=-0.7))
    w = model.actor.linears[0].weight  # (16, 6): orthogonal columns with gain sqrt(2)
    torch.testing.assert_close(w.T @ w, 2.0 * torch.eye(OBS), atol=1e-5, rtol=1e-5)
    head = model.action_head.weight  # (3, 8): orthonormal rows scaled by 0.01
    torch.testing.assert_close(head @ head.T, 1e-4 * torch.eye(ACT), atol=1e-8, rtol=1e-4)
    torch.testing.assert_close(model.log_std.detach(), torch.full((ACT,), -0.7))
    assert torch.all(model.actor.linears[0].bias == 0)


def test_sampling_is_reproducible_and_follows_the_policy():
    model = LNormPolicyModel(tiny_policy_config(actor_output_gain=3.0)).eval()
    obs = _obs(batch=1).expand(4000, OBS)
    a = model.act(obs, generator=torch.Generator().manual_seed(3)).actions
    b = model.act(obs, generator=torch.Generator().manual_seed(3)).actions
    assert torch.equal(a, b)
    freq = torch.bincount(a, minlength=ACT).float() / a.numel()
    probs = model(obs[:1]).logits.softmax(-1)[0]
    torch.testing.assert_close(freq, probs, atol=0.03, rtol=0)


def test_single_observation_and_numpy_input():
    model = LNormPolicyModel(tiny_policy_config()).eval()
    obs = _obs(batch=1)
    step = model.act(obs[0].numpy(), deterministic=True)
    assert step.actions.shape == () and step.value.shape == ()
    assert int(step.actions) == int(model(obs).logits.argmax(-1)[0])
    assert model(obs.double()).logits.dtype == torch.float32  # cast to the model dtype


@pytest.mark.parametrize(
    "observations,needles",
    [
        (torch.zeros(2, OBS + 1), ["(2, 7)", f"observation_size={OBS}", f"(batch, {OBS})"]),
        (torch.zeros(OBS + 2), ["(8,)", f"observation_size={OBS}"]),
        (torch.tensor(1.0), ["()", f"observation_size={OBS}"]),
    ],
)
def test_wrong_observation_size_is_a_clear_error(observations, needles):
    model = LNormPolicyModel(tiny_policy_config()).eval()
    for call in (lambda: model(observations), lambda: model.act(observations)):
        with pytest.raises(ValueError) as info:
            call()
        for needle in needles:
            assert needle in str(info.value), (needle, str(info.value))


def test_bad_actions_are_clear_errors():
    model = LNormPolicyModel(tiny_policy_config()).eval()
    with pytest.raises(ValueError, match=r"in \[0, 3\), got values from 0 to 3"):
        model(_obs(), actions=torch.tensor([0, 1, 2, 3, 0]))
    with pytest.raises(ValueError, match=r"actions of shape \(4,\).*expected \(5,\)"):
        model(_obs(), actions=torch.zeros(4, dtype=torch.long))
    continuous = LNormPolicyModel(tiny_policy_config(action_space="continuous")).eval()
    with pytest.raises(ValueError, match=r"\(5, 2\).*expected \(5, 3\)"):
        continuous(_obs(), actions=torch.zeros(5, 2))


@pytest.mark.parametrize(
    "kwargs,needles",
    [
        (dict(norm_type="batchnorm"), ["'batchnorm'", "'layernorm'", "'rmsnorm'", "'none'"]),
        (dict(action_space="multi"), ["'multi'", "'discrete'", "'continuous'"]),
        (dict(activation="swishy"), ["'swishy'", "tanh", "relu"]),
        (dict(observation_size=0), ["observation_size=0"]),
        (dict(action_size=2.5), ["action_size=2.5"]),
        (dict(hidden_sizes=[]), ["hidden_sizes=[]"]),
        (dict(hidden_sizes=[16, -1]), ["hidden_sizes=[16, -1]"]),
    ],
)
def test_bad_config_raises_value_error_naming_value_and_choices(kwargs, needles):
    with pytest.raises(ValueError) as info:
        tiny_policy_config(**kwargs)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_auto_registration_and_save_load_round_trip(tmp_path):
    config = AutoConfig.for_model("lnorm-policy", observation_size=OBS, action_size=ACT, action_space="continuous", hidden_sizes=[8])
    assert isinstance(config, LNormPolicyConfig) and config.critic_hidden_sizes == [8]
    model = AutoModel.from_config(config).eval()
    assert type(model) is LNormPolicyModel
    with torch.no_grad():
        model.log_std.fill_(-0.3)
    model.save_pretrained(tmp_path, training_data="Nothing: a random policy (test).")
    files = set(os.listdir(tmp_path))
    assert {"model.safetensors", "config.json", "configuration_lnorm_policy.py", "modeling_lnorm_policy.py", "layers.py",
            "remote_code.py", "README.md"} <= files
    assert not any(f.endswith(".bin") for f in files)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"] == {"AutoConfig": "configuration_lnorm_policy.LNormPolicyConfig", "AutoModel": "modeling_lnorm_policy.LNormPolicyModel"}
    card = (tmp_path / "README.md").read_text()
    for text in ("pipeline_tag: reinforcement-learning", "norm_type='layernorm'", "activation(norm(linear(x)))", "| action_space | continuous |",
                 "Nothing: a random policy (test).", "AutoModel.from_pretrained"):
        assert text in card, text
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is LNormPolicyModel
    torch.testing.assert_close(loaded.log_std, model.log_std)
    obs = _obs()
    torch.testing.assert_close(loaded(obs).logits, model(obs).logits)
    torch.testing.assert_close(loaded(obs).value, model(obs).value)


def test_remote_code_loads_without_hf_lnorm_from_a_folder_and_from_the_hub(tmp_path):
    torch.manual_seed(0)
    model = LNormPolicyModel(tiny_policy_config(norm_type="rmsnorm")).eval()
    model.save_pretrained(tmp_path / "policy")
    obs = _obs()
    with torch.no_grad():
        expected = model(obs)
    torch.save({"obs": obs, "logits": expected.logits, "value": expected.value}, tmp_path / "expected.pt")
    # one fresh process checks both sources (starting an interpreter with torch + transformers is the slow part)
    code = BLOCK_HF_LNORM + f"""
import sys
import torch
from transformers import AutoModel
data = torch.load({str(tmp_path / "expected.pt")!r})
for source in ({str(tmp_path / "policy")!r}, "tester/tiny-lnorm-policy"):
    model = AutoModel.from_pretrained(source, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    with torch.no_grad():
        out = model(data["obs"])
    torch.testing.assert_close(out.logits, data["logits"], atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out.value, data["value"], atol=1e-6, rtol=1e-6)
    assert torch.equal(model.act(data["obs"], deterministic=True).actions, data["logits"].argmax(-1))
    try:
        model(torch.zeros(2, 99))
    except ValueError as exc:
        assert "observation_size=6" in str(exc), exc
    else:
        raise SystemExit("no error for a wrong observation size")
    print("POLICY-REMOTE-OK", source)
assert "hf_lnorm" not in sys.modules
"""
    with HubServer() as server, use_endpoint(server.url):
        commit = model.push_to_hub("tester/tiny-lnorm-policy", training_data="A random policy (test).")
        repo = server.repos["tester/tiny-lnorm-policy"]
        assert commit.oid == repo.sha
        assert {"config.json", "model.safetensors", "modeling_lnorm_policy.py", "configuration_lnorm_policy.py", "layers.py",
                "remote_code.py", "README.md"} <= set(repo.files)
        assert "# tester/tiny-lnorm-policy" in repo.files["README.md"].decode()
        proc = run_python(
            code,
            env_extra={"HF_ENDPOINT": server.url, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf_home")},
            cwd=str(tmp_path),
        )
        assert proc.stdout.count("POLICY-REMOTE-OK") == 2, proc.stdout
        assert "model.safetensors" in server.downloads and "modeling_lnorm_policy.py" in server.downloads


@pytest.mark.parametrize("norm_type", ["layernorm", "rmsnorm"])
def test_hf_lnorm_patch_is_exact_and_unpatch_restores(norm_type):
    model = LNormPolicyModel(tiny_policy_config(norm_type=norm_type)).eval()
    obs = _obs()
    before = model(obs)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    hf_lnorm.patch(model)
    report = hf_lnorm.patch_report(model)
    norms = [n for n, m in model.named_modules() if isinstance(m, (layers.LNormLayerNorm, layers.LNormRMSNorm))]
    assert len(norms) == 3 and sorted(r.name for r in report.patched) == sorted(norms) and not report.skipped
    expected = torch.cat([before.logits.flatten(), before.value.flatten()])
    for mode, out in check_default_backend(lambda: _flat(model(obs)), len(norms), where=f"patched {norm_type}").items():
        torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6, msg=lambda m: f"{mode}: {m}")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    hf_lnorm.unpatch(model)
    assert not any("forward" in m.__dict__ for _, m in model.named_modules())
    torch.testing.assert_close(model(obs).logits, before.logits, atol=0, rtol=0)


def _flat(out):
    """The policy's logits and value in one tensor."""
    return torch.cat([out.logits.flatten(), out.value.flatten()])


@pytest.mark.parametrize("norm_type", ["layernorm", "rmsnorm"])
def test_fused_and_plain_norm_paths_agree(monkeypatch, norm_type):
    model = LNormPolicyModel(tiny_policy_config(norm_type=norm_type)).eval()
    obs = _obs()
    assert_norm_paths_agree(monkeypatch, model, lambda: _flat(model(obs)), where=f"LNormPolicy {norm_type}")


def test_onnx_export_of_a_patched_continuous_policy_matches_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    from hf_lnorm.export import default_method, export, infer_task, onnx_op_types

    import onnxruntime as ort

    torch.manual_seed(0)
    model = LNormPolicyModel(tiny_policy_config(action_space="continuous")).eval()
    assert infer_task(model) == "reinforcement-learning"
    hf_lnorm.patch(model)
    result = export(model, tmp_path / "onnx")
    assert result.method == default_method() and result.task == "reinforcement-learning"
    assert result.max_abs_err is not None and result.max_abs_err < 1e-4
    path = tmp_path / "onnx" / "model.onnx"
    assert onnx_op_types(path)["LayerNormalization"] == 3
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["observations"]
    assert [o.name for o in session.get_outputs()] == ["logits", "value"]
    obs = _obs(batch=7, seed=5)  # a batch size the exporter never saw
    logits, value = session.run(["logits", "value"], {"observations": obs.numpy()})
    with torch.no_grad():
        ref = model(obs)
    np.testing.assert_allclose(logits, ref.logits.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(value, ref.value.numpy(), atol=1e-4, rtol=0)


def test_export_cli_on_a_saved_discrete_policy(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from hf_lnorm.cli import main

    LNormPolicyModel(tiny_policy_config()).save_pretrained(tmp_path / "policy")
    assert main(["export", str(tmp_path / "policy"), str(tmp_path / "onnx")]) == 0
    out = capsys.readouterr().out
    assert "LayerNormalization 3" in out and "max |err|" in out
    err = float(out.split("max |err|")[1].split()[0])
    assert err < 1e-4
    assert (tmp_path / "onnx" / "model.onnx").exists()


def test_trainer_behaviour_cloning_learns_a_cartpole_controller(tmp_path):
    """Trainer fits the policy to a hand-written controller's actions (labels) on CartPole-like states."""
    gen = torch.Generator().manual_seed(0)
    states = torch.randn(1024, 4, generator=gen) * torch.tensor([1.0, 1.0, 0.1, 1.0])
    expert = (states[:, 2] + 0.5 * states[:, 3] > 0).long()  # push toward the side the pole is falling to
    rows = [{"observations": s, "labels": a} for s, a in zip(states, expert)]
    train, held_out = rows[:896], rows[896:]
    torch.manual_seed(0)
    model = LNormPolicyModel(LNormPolicyConfig(observation_size=4, action_size=2, hidden_sizes=[32, 32]))
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"), max_steps=60, learning_rate=1e-2, per_device_train_batch_size=64,
        per_device_eval_batch_size=128, logging_steps=10, save_strategy="no", report_to=[], disable_tqdm=True,
        use_cpu=True, seed=0, dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=held_out)
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert before > 0.6 and after < 0.3, (before, after)
    model.eval()
    obs = torch.stack([r["observations"] for r in held_out])
    accuracy = (model.act(obs, deterministic=True).actions == torch.stack([r["labels"] for r in held_out])).float().mean()
    assert accuracy > 0.9, accuracy


def test_gae_matches_a_hand_computation():
    ppo = load_script("train_policy")
    rewards = torch.tensor([[1.0], [1.0], [1.0]])
    values = torch.tensor([[0.5], [0.4], [0.3]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])  # the episode ends after step 1; a new one starts at step 2
    last = torch.tensor([0.2])
    gamma, lam = 0.9, 0.8
    adv, ret = ppo.compute_gae(rewards, values, dones, last, gamma, lam)
    d2 = 1.0 + gamma * 0.2 - 0.3
    d1 = 1.0 - 0.4  # no bootstrap across the episode end
    d0 = 1.0 + gamma * 0.4 - 0.5
    expected = torch.tensor([[d0 + gamma * lam * d1], [d1], [d2]])
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(ret, expected + values)


def test_tiny_ppo_run_completes_with_finite_losses(tmp_path):
    pytest.importorskip("gymnasium")
    ppo = load_script("train_policy")
    recipe = {
        "env_id": "CartPole-v1",
        "seed": 0,
        "model": {"hidden_sizes": [16, 16], "norm_type": "layernorm"},
        "ppo": {"num_envs": 2, "num_steps": 32, "total_timesteps": 192, "update_epochs": 2, "num_minibatches": 2},
        "early_stop": {},
        "evaluation": {"episodes": 3, "seed": 50},
    }
    run = ppo.train(recipe, log=lambda line: None)
    assert run["updates"] == 3 and run["timesteps"] == 192 and len(run["history"]) == 3
    for stats in run["history"]:
        for key in ("loss", "policy_loss", "value_loss", "entropy", "approx_kl"):
            assert math.isfinite(stats[key]), (key, stats)
    assert len(run["eval_returns"]) == 3 and all(r >= 1 for r in run["eval_returns"])
    # same seed, same run
    again = ppo.train(recipe, log=lambda line: None)
    assert [h["loss"] for h in again["history"]] == [h["loss"] for h in run["history"]]
    # the CLI writes the result JSON and the saved model
    recipe_path = tmp_path / "recipe.json"
    recipe_path.write_text(json.dumps(recipe))
    assert ppo.main([str(recipe_path), "--output-dir", str(tmp_path / "model"), "--results", str(tmp_path / "result.json")]) == 0
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["eval_episodes"] == 3 and result["mean_return"] == pytest.approx(np.mean(result["episode_returns"]))
    assert result["timesteps"] == 192 and result["wall_seconds"] > 0
    loaded = AutoModel.from_pretrained(tmp_path / "model")
    assert type(loaded) is LNormPolicyModel and loaded.config.norm_type == "layernorm"
    # the reported returns are what the saved model plays on the same seeds
    replay = ppo.evaluate(loaded.eval(), "CartPole-v1", 3, 50)
    assert list(replay) == pytest.approx(result["episode_returns"])
