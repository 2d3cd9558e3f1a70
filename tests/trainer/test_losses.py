"""Each loss's gradient, through a real trainer, against an independent per-token formula.

The reference takes dL/dlp per token from the formulas (written here with numpy, as in the
seed's executed checks) and backpropagates Σ stopgrad(dL/dlp)·lp through a plain PEFT model with
the same seed; the trainer's accumulated adapter gradient must match it.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from .conftest import (
    create,
    datum,
    engine_grads,
    forward_backward,
    output,
    reference_grads,
    reference_logprobs,
    reference_model,
    rel_err,
    release,
)

rng = np.random.default_rng(1)
SEQS = [rng.integers(0, 49152, n).tolist() for n in (12, 7)]
SEED = 7
_ids = itertools.count()


def grad_importance_sampling(ratio, adv, lp, q, cfg):
    return -ratio * adv


def grad_ppo(ratio, adv, lp, q, cfg):
    lo, hi = cfg.get("clip_low_threshold", 0.8), cfg.get("clip_high_threshold", 1.2)
    unclipped, clipped = ratio * adv, np.clip(ratio, lo, hi) * adv
    return np.where(unclipped <= clipped, -ratio * adv, 0.0)


def grad_cispo(ratio, adv, lp, q, cfg):
    lo, hi = cfg.get("clip_low_threshold", 0.0), cfg.get("clip_high_threshold", 4.0)
    return -np.clip(ratio, lo, hi) * adv


def grad_dro(ratio, adv, lp, q, cfg):
    return -(adv - cfg["beta"] * (lp - q))


FORMULAS = {
    "importance_sampling": grad_importance_sampling,
    "ppo": grad_ppo,
    "cispo": grad_cispo,
    "dro": grad_dro,
}


def _learner_logprobs(trainer, model_id: str) -> list[np.ndarray]:
    """The trainer's own logprobs of SEQS (a forward op), to build on-/off-policy inputs."""
    results = trainer.client.run_ok(
        [forward_backward(model_id, [datum(s) for s in SEQS], forward_only=True)]
    )
    return output(results[f"{model_id}:fb"], "logprobs")


def _train_once(trainer, loss_fn, q, adv, **config):
    """A fresh adapter, one forward_backward with the loss; returns (result, grads)."""
    model_id = f"{loss_fn}-{next(_ids)}"
    trainer.client.run_ok([create(model_id, seed=SEED)])
    data = [
        datum(s, logprobs=q_i, advantages=a_i) for s, q_i, a_i in zip(SEQS, q, adv, strict=True)
    ]
    results = trainer.client.run_ok([forward_backward(model_id, data, loss_fn, **config)])
    grads = engine_grads(trainer.engine, model_id)
    trainer.client.run_ok([release(model_id)])
    return results[f"{model_id}:fb"], grads


def _reference(per_token_grad) -> dict[str, torch.Tensor]:
    """Gradient of Σ g·lp on an independent model, g from `per_token_grad(lp_numpy, i)`."""
    ref = reference_model(4, SEED)
    surrogate = 0
    for i, seq in enumerate(SEQS):
        lp = reference_logprobs(ref, seq)
        g = torch.as_tensor(per_token_grad(lp.detach().numpy().astype(np.float64), i))
        surrogate = surrogate + (g.double() * lp).sum()
    surrogate.backward()
    return reference_grads(ref)


@pytest.mark.parametrize(
    ("loss_fn", "config"),
    [
        ("importance_sampling", {}),
        ("ppo", {}),
        ("ppo", {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1}),
        ("cispo", {}),
        ("cispo", {"clip_low_threshold": 0.7, "clip_high_threshold": 1.3}),
        ("dro", {"beta": 0.5}),
    ],
)
def test_rl_loss_gradient_matches_its_formula(trainer, loss_fn, config):
    create_id = f"probe-{next(_ids)}"
    trainer.client.run_ok([create(create_id, seed=SEED)])
    lp = _learner_logprobs(trainer, create_id)
    ratios = [np.exp(rng.uniform(-0.7, 0.7, len(x))).astype(np.float32) for x in lp]
    q = [(x - np.log(r)).astype(np.float32) for x, r in zip(lp, ratios, strict=True)]
    adv = [rng.normal(size=len(x)).astype(np.float32) for x in lp]
    result, grads = _train_once(trainer, loss_fn, q, adv, **config)

    def per_token(lp_ref, i):
        ratio = np.exp(lp_ref - q[i])
        return FORMULAS[loss_fn](ratio, adv[i], lp_ref, q[i], config)

    assert rel_err(grads, _reference(per_token)) <= 1e-5
    metrics = result.forward_backward.metrics
    assert metrics["loss:sum"] == pytest.approx(
        sum(float(e.sum()) for e in output(result, "elementwise_loss")), rel=1e-5
    )
    if loss_fn != "dro":
        all_ratios = np.concatenate(ratios)
        assert metrics["ratio:mean"] == pytest.approx(all_ratios.mean(), rel=1e-4)
    if loss_fn == "cispo":
        lo, hi = config.get("clip_low_threshold", 0.0), config.get("clip_high_threshold", 4.0)
        outside = (all_ratios < lo) | (all_ratios > hi)
        assert metrics["clip_fraction:mean"] == pytest.approx(outside.mean(), abs=1e-6)


def _policy_case(trainer, log_ratio: float):
    """q = learner lp − log_ratio (ratio r = e^log_ratio on every token), A = +1."""
    model_id = f"probe-{next(_ids)}"
    trainer.client.run_ok([create(model_id, seed=SEED)])
    lp = _learner_logprobs(trainer, model_id)
    q = [(x - np.float32(log_ratio)).astype(np.float32) for x in lp]
    adv = [np.ones_like(x) for x in lp]
    return q, adv


def test_on_policy_is_ppo_and_cispo_all_give_the_reinforce_gradient(trainer):
    q, adv = _policy_case(trainer, 0.0)
    reinforce = _reference(lambda lp, i: -adv[i].astype(np.float64))
    for loss_fn in ("importance_sampling", "ppo", "cispo"):
        result, grads = _train_once(trainer, loss_fn, q, adv)
        assert rel_err(grads, reinforce) <= 1e-5, loss_fn
        assert result.forward_backward.metrics["ratio:mean"] == pytest.approx(1.0, abs=1e-6)
        assert result.forward_backward.metrics["clip_fraction:mean"] == 0.0


def test_ratio_two_with_positive_advantage_zeroes_ppo_and_doubles_is_and_cispo(trainer):
    q, adv = _policy_case(trainer, float(np.log(2.0)))
    ppo, ppo_grads = _train_once(trainer, "ppo", q, adv)
    assert ppo_grads and all(not g.any() for g in ppo_grads.values())
    assert ppo.forward_backward.metrics["clip_fraction:mean"] == 1.0
    assert ppo.forward_backward.metrics["ratio:mean"] == pytest.approx(2.0, rel=1e-5)
    doubled = _reference(lambda lp, i: -2.0 * adv[i].astype(np.float64))
    for loss_fn in ("importance_sampling", "cispo"):
        _, grads = _train_once(trainer, loss_fn, q, adv)
        assert rel_err(grads, doubled) <= 1e-5, loss_fn


def test_runaway_ratio_eight_is_capped_at_four_by_cispo_only(trainer):
    q, adv = _policy_case(trainer, float(np.log(8.0)))
    _, is_grads = _train_once(trainer, "importance_sampling", q, adv)
    _, cispo_grads = _train_once(trainer, "cispo", q, adv)
    assert rel_err(is_grads, _reference(lambda lp, i: -8.0 * adv[i])) <= 1e-5
    assert rel_err(cispo_grads, _reference(lambda lp, i: -4.0 * adv[i])) <= 1e-5


def test_cross_entropy_weights_mask_tokens(trainer):
    model_id = f"ce-{next(_ids)}"
    trainer.client.run_ok([create(model_id, seed=SEED)])
    weights = [np.where(np.arange(len(s) - 1) >= 3, 1.0, 0.0).astype(np.float32) for s in SEQS]
    data = [datum(s, weights=w) for s, w in zip(SEQS, weights, strict=True)]
    results = trainer.client.run_ok([forward_backward(model_id, data)])
    grads = engine_grads(trainer.engine, model_id)
    assert rel_err(grads, _reference(lambda lp, i: -weights[i].astype(np.float64))) <= 1e-5
    losses = output(results[f"{model_id}:fb"], "elementwise_loss")
    assert all(not e[:3].any() and e[3:].all() for e in losses)


# gspo and stable_reinforce, and per-token thresholds


def _gspo_sequence_ratio(lp, q, adv, ratio_mask=None):
    """s = exp(mean over M of (lp - q)); M = ratio_mask != 0, or A != 0 without a mask."""
    in_ratio = (adv != 0) if ratio_mask is None else (ratio_mask != 0)
    return float(np.exp((lp - q)[in_ratio].mean())) if in_ratio.any() else 1.0


def gspo_terms(lp, q, adv, lo, hi, ratio_mask=None):
    """(per-token loss, dL/dlp, clipped) of GSPO-token on one whole datum."""
    adv = adv.astype(np.float64)  # one precision on both sides of the min
    s = _gspo_sequence_ratio(lp, q, adv, ratio_mask)
    unclipped, clipped = s * adv, np.clip(s, lo, hi) * adv
    keeps = unclipped <= clipped
    return -np.minimum(unclipped, clipped), np.where(keeps, -s * adv, 0.0), ~keeps


def stable_reinforce_terms(lp, q, adv, lo, hi):
    """(per-token loss, dL/dlp, masked) of the masked importance-weighted REINFORCE."""
    ratio = np.exp(lp - q)
    trusted = (ratio >= lo) & (ratio <= hi)
    weight = np.where(trusted, ratio, 0.0)
    return -weight * lp * adv, -weight * adv, ~trusted


def ppo_grad(lp, q, adv, lo, hi):
    ratio = np.exp(lp - q)
    return np.where(ratio * adv <= np.clip(ratio, lo, hi) * adv, -ratio * adv, 0.0)


def cispo_grad(lp, q, adv, lo, hi):
    return -np.clip(np.exp(lp - q), lo, hi) * adv


GRADS = {
    "ppo": ppo_grad,
    "cispo": cispo_grad,
    "gspo": lambda *args: gspo_terms(*args)[1],
    "stable_reinforce": lambda *args: stable_reinforce_terms(*args)[1],
}


def _train_with(trainer, loss_fn, inputs, **config):
    """A fresh adapter, one forward_backward over SEQS whose datum i carries inputs[name][i]
    (None: not carried); returns (result, grads)."""
    model_id = f"{loss_fn}-{next(_ids)}"
    trainer.client.run_ok([create(model_id, seed=SEED)])
    data = [
        datum(s, **{name: v[i] for name, v in inputs.items() if v[i] is not None})
        for i, s in enumerate(SEQS)
    ]
    results = trainer.client.run_ok([forward_backward(model_id, data, loss_fn, **config)])
    grads = engine_grads(trainer.engine, model_id)
    trainer.client.run_ok([release(model_id)])
    return results[f"{model_id}:fb"], grads


def _off_policy(trainer, spread: float, shift: float = 0.0):
    """(q, A): q = the learner's lp − shift − u with u spread evenly over [−spread, spread] in a
    random order, A ~ N(0, 1) with the first two tokens of each datum at 0 (prompt tokens)."""
    model_id = f"probe-{next(_ids)}"
    trainer.client.run_ok([create(model_id, seed=SEED)])
    lp = _learner_logprobs(trainer, model_id)
    u = [shift + rng.permutation(np.linspace(-spread, spread, len(x))) for x in lp]
    q = [(x - u_i).astype(np.float32) for x, u_i in zip(lp, u, strict=True)]
    adv = [rng.normal(size=len(x)).astype(np.float32) for x in lp]
    for a in adv:
        a[:2] = 0.0
    return q, adv


@pytest.mark.parametrize(
    "config",
    [{}, {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1}],
    ids=["defaults", "wide"],
)
def test_gspo_gradient_and_loss_match_gspo_token(trainer, config):
    q, adv = _off_policy(trainer, 0.5)
    # datum 0 names M itself (its last five tokens), datum 1 takes the default M (A != 0)
    mask0 = np.zeros(len(q[0]), np.float32)
    mask0[-5:] = 1.0
    masks = [mask0, None]
    result, grads = _train_with(
        trainer, "gspo", {"logprobs": q, "advantages": adv, "sequence_ratio_mask": masks}, **config
    )
    lo = config.get("clip_low_threshold", 1 - 3e-4)
    hi = config.get("clip_high_threshold", 1 + 4e-4)
    want = _reference(lambda lp, i: gspo_terms(lp, q[i], adv[i], lo, hi, masks[i])[1])
    assert rel_err(grads, want) <= 1e-5
    lps = output(result, "logprobs")
    terms = [gspo_terms(lps[i], q[i], adv[i], lo, hi, masks[i]) for i in range(len(SEQS))]
    for got, (loss, _, _) in zip(output(result, "elementwise_loss"), terms, strict=True):
        np.testing.assert_allclose(got, loss, rtol=1e-5, atol=1e-6)
    metrics = result.forward_backward.metrics
    assert metrics["loss:sum"] == pytest.approx(sum(t[0].sum() for t in terms), rel=1e-5)
    active = [a != 0 for a in adv]
    s = [_gspo_sequence_ratio(lps[i], q[i], adv[i], masks[i]) for i in range(len(SEQS))]
    ratios = np.concatenate([np.full(int(m.sum()), s_i) for m, s_i in zip(active, s, strict=True)])
    clipped = np.concatenate([t[2][m] for t, m in zip(terms, active, strict=True)])
    assert metrics["ratio:mean"] == pytest.approx(ratios.mean(), rel=1e-5)
    assert metrics["clip_fraction:mean"] == pytest.approx(clipped.mean(), abs=1e-6)
    # the datum-wide ratio is not PPO's per-token one: the gradients differ
    assert rel_err(grads, _reference(lambda lp, i: ppo_grad(lp, q[i], adv[i], lo, hi))) > 0.05


def test_gspo_on_policy_gives_the_reinforce_gradient_and_ratio_one(trainer):
    q, adv = _policy_case(trainer, 0.0)
    result, grads = _train_once(trainer, "gspo", q, adv)
    assert rel_err(grads, _reference(lambda lp, i: -adv[i].astype(np.float64))) <= 1e-5
    assert result.forward_backward.metrics["ratio:mean"] == pytest.approx(1.0, abs=1e-5)


def test_gspo_with_an_empty_sequence_ratio_mask_takes_ratio_one(trainer):
    q, adv = _policy_case(trainer, float(np.log(1.5)))
    masks = [np.zeros_like(a) for a in adv]
    inputs = {"logprobs": q, "advantages": adv, "sequence_ratio_mask": masks}
    result, grads = _train_with(trainer, "gspo", inputs)
    assert rel_err(grads, _reference(lambda lp, i: -adv[i].astype(np.float64))) <= 1e-5
    assert result.forward_backward.metrics["ratio:mean"] == 1.0


def test_gspo_clips_whole_sequences(trainer):
    """s = 1.5 on every datum, A = +1: with hi 1.2 each datum is clipped whole (no gradient);
    with hi 2 each token gets -s·A = -1.5."""
    q, adv = _policy_case(trainer, float(np.log(1.5)))
    clipped, clipped_grads = _train_once(trainer, "gspo", q, adv, clip_high_threshold=1.2)
    assert clipped_grads and all(not g.any() for g in clipped_grads.values())
    assert clipped.forward_backward.metrics["clip_fraction:mean"] == 1.0
    _, grads = _train_once(trainer, "gspo", q, adv, clip_high_threshold=2.0)
    assert rel_err(grads, _reference(lambda lp, i: -1.5 * adv[i].astype(np.float64))) <= 1e-5


@pytest.mark.parametrize(
    "config",
    [{}, {"clip_low_threshold": 0.6, "clip_high_threshold": 1.6}],
    ids=["defaults", "narrow"],
)
def test_stable_reinforce_gradient_and_loss_match_masked_reinforce(trainer, config):
    q, adv = _off_policy(trainer, 1.2)  # ratios e^±1.2: some tokens fall outside [lo, hi]
    result, grads = _train_with(trainer, "stable_reinforce", {"logprobs": q, "advantages": adv},
                                **config)  # fmt: skip
    lo, hi = config.get("clip_low_threshold", 0.5), config.get("clip_high_threshold", 2.0)
    want = _reference(lambda lp, i: stable_reinforce_terms(lp, q[i], adv[i], lo, hi)[1])
    assert rel_err(grads, want) <= 1e-5
    lps = output(result, "logprobs")
    terms = [stable_reinforce_terms(lps[i], q[i], adv[i], lo, hi) for i in range(len(SEQS))]
    for got, (loss, _, _) in zip(output(result, "elementwise_loss"), terms, strict=True):
        np.testing.assert_allclose(got, loss, rtol=1e-5, atol=1e-6)
    active = np.concatenate([a != 0 for a in adv])
    masked = np.concatenate([t[2] for t in terms])[active]
    assert 0 < masked.mean() < 1  # the case masks some tokens and keeps others
    metrics = result.forward_backward.metrics
    assert metrics["clip_fraction:mean"] == pytest.approx(masked.mean(), abs=1e-6)
    ratios = np.concatenate([np.exp(lps[i] - q[i]) for i in range(len(SEQS))])[active]
    assert metrics["ratio:mean"] == pytest.approx(ratios.mean(), rel=1e-5)
    # inside the trust interval the gradient is importance_sampling's; outside it is zero
    unmasked = _reference(lambda lp, i: -np.exp(lp - q[i]) * adv[i])
    assert rel_err(grads, unmasked) > 0.05


def test_stable_reinforce_drops_tokens_outside_the_trust_interval(trainer):
    q, adv = _policy_case(trainer, float(np.log(3.0)))
    _, masked = _train_once(trainer, "stable_reinforce", q, adv)
    assert masked and all(not g.any() for g in masked.values())
    _, kept = _train_once(trainer, "stable_reinforce", q, adv, clip_high_threshold=4.0)
    assert rel_err(kept, _reference(lambda lp, i: -3.0 * adv[i].astype(np.float64))) <= 1e-5


@pytest.mark.parametrize("loss_fn", list(GRADS))
def test_per_token_thresholds_replace_the_configs_for_the_datum_that_carries_them(trainer, loss_fn):
    """Ratios e^(0.15 ± 0.4) (gspo's s ≈ e^0.15) and A > 0: the config's [0.9, 1.1] clips or
    masks many tokens; datum 0's own thresholds are wide on its even tokens and the config's
    on its odd ones, datum 1 carries none."""
    q, adv = _off_policy(trainer, 0.4, shift=0.15)
    adv = [np.where(a != 0, np.abs(a) + 0.1, 0.0).astype(np.float32) for a in adv]
    config = {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1}
    even = np.arange(len(q[0])) % 2 == 0
    low = [np.where(even, 0.2, 0.9).astype(np.float32), None]
    high = [np.where(even, 5.0, 1.1).astype(np.float32), None]
    inputs = {"logprobs": q, "advantages": adv, "clip_low_threshold": low,
              "clip_high_threshold": high}  # fmt: skip
    _, grads = _train_with(trainer, loss_fn, inputs, **config)

    def per_token(lp, i, own=True):
        lo = low[i] if own and low[i] is not None else config["clip_low_threshold"]
        hi = high[i] if own and high[i] is not None else config["clip_high_threshold"]
        return GRADS[loss_fn](lp, q[i], adv[i], lo, hi)

    assert rel_err(grads, _reference(per_token)) <= 1e-5
    config_only = _reference(lambda lp, i: per_token(lp, i, own=False))
    assert rel_err(config_only, grads) > 0.01  # (gspo clips everything by the config's)
