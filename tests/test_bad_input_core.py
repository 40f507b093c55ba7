"""Bad input to the numeric core: every value that would turn into NaN or a silent wrong result is
refused with a message naming the argument; and RePaint's re-noising on a shortened step list."""

import math

import pytest
import torch

import diffnotes as dn

SCHED = dn.linear_schedule(100)
X = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))


def zero_eps(x, t):
    return torch.zeros_like(x)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dn.ddim(zero_eps, SCHED, None, X, eta=1.5), "eta must lie in \\[0, 1\\]"),
        (lambda: dn.ddim(zero_eps, SCHED, None, X, eta=math.nan), "eta must be a finite"),
        (lambda: dn.ddim(zero_eps, SCHED, None, X[:0]), "x_T must be a floating tensor"),
        (lambda: dn.ddpm(zero_eps, SCHED, None, X, variance="big"), "variance must be one of"),
        (lambda: dn.cosine_schedule(100, max_beta=1.0), "max_beta must lie in \\(0, 1\\)"),
        (lambda: dn.cosine_schedule(100, max_beta=1.5), "max_beta"),
        (lambda: dn.cosine_schedule(100, s=-0.1), "s must be a finite number > 0"),
        (lambda: dn.from_betas([0.1, 1.0]), "betas must lie in \\(0, 1\\)"),
        (lambda: dn.from_alphas_cumprod([0.5, 0.0]), "alphas_cumprod"),
        (lambda: dn.annealed_langevin(zero_eps, [1.0, 0.5], X, n_steps_each=0), "n_steps_each"),
        (lambda: dn.langevin(lambda x: x, X, n_steps=3, step_size=-1.0), "step_size"),
        (lambda: dn.predictor_corrector(zero_eps, dn.VPSDE(), dn.time_steps(3), X, snr=0), "snr"),
        (lambda: dn.probability_flow(zero_eps, dn.VPSDE(), [1.0, 0.5], X, method="rk4"), "method"),
        # a negative or NaN tolerance: scipy would warn and clip, or fail on a misleading time
        (lambda: dn.probability_flow(zero_eps, dn.VPSDE(), [1.0, 0.5], X, rtol=-1.0), "rtol"),
        (lambda: dn.probability_flow(zero_eps, dn.VPSDE(), [1.0, 0.5], X, atol=math.nan), "atol"),
        (lambda: dn.log_likelihood(zero_eps, dn.VPSDE(), X, rtol=0.0), "rtol must be a finite"),
        # a schedule or SDE of the wrong kind is named, not an AttributeError deep inside
        (lambda: dn.ddpm(zero_eps, "linear", None, X), "schedule must be a DiscreteSchedule"),
        (lambda: dn.ddim(zero_eps, dn.VPSDE(), None, X), "schedule must be a DiscreteSchedule"),
        (lambda: dn.euler(zero_eps, None, None, X), "schedule must be a DiscreteSchedule"),
        (lambda: dn.repaint(zero_eps, "x", X, torch.ones(2), X), "schedule must be"),
        (lambda: dn.q_sample("linear", X, 3, X), "schedule must be a DiscreteSchedule"),
        (lambda: dn.reverse_sde(zero_eps, SCHED, [1.0, 0.5], X), "sde must be a VPSDE"),
        (lambda: dn.probability_flow(zero_eps, "vp", [1.0, 0.5], X), "sde must be a VPSDE"),
        (lambda: dn.log_likelihood(zero_eps, SCHED, X), "sde must be a VPSDE"),
        # schedule hyperparameters: sqrt of a negative beta, or a string, named before any work
        (
            lambda: dn.scaled_linear_schedule(100, beta_start=-1.0),
            "beta_start must be in \\(0, 1\\)",
        ),
        (lambda: dn.linear_schedule(100, beta_end="0.02"), "beta_end must be a finite number"),
        (lambda: dn.linear_schedule(100, beta_start=math.nan), "beta_start must be a finite"),
        # conversions: alpha_bar outside (0, 1] makes a NaN; at 1 there is no noise to predict
        (lambda: dn.eps_to_x0(X, X, 0.0), "alpha_bar must lie in \\(0, 1\\]"),
        (lambda: dn.eps_to_x0(X, X, torch.tensor([1.5])), "alpha_bar must lie in \\(0, 1\\]"),
        (lambda: dn.x0_to_eps(X, X, 1.0), "alpha_bar must lie in \\(0, 1\\)"),
        (lambda: dn.x0_to_v(X, X, torch.ones(8)), "alpha_bar must lie in \\(0, 1\\)"),
        (lambda: dn.eps_to_v(X, X, math.nan), "alpha_bar must lie in"),
    ],
)
def test_refused_with_the_argument_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_conversions_accept_clean_data_where_defined():
    # alpha_bar = 1 (t = -1, clean data): x0 = x_t, and the sampler's last step relies on it
    torch.testing.assert_close(dn.eps_to_x0(X, X, 1.0), X)
    torch.testing.assert_close(dn.v_to_x0(X, X, torch.ones(8)), X)


def test_q_sample_names_the_step_argument():
    with pytest.raises(ValueError, match="t_prev must lie in -1..99"):
        dn.q_posterior(SCHED, X, X, 5, 100)
    with pytest.raises(ValueError, match="^t must lie in -1..99"):
        dn.q_sample(SCHED, X, 100, X)


def test_learned_variance_outside_its_range_is_refused():
    def wild(x, t):  # eps, then v = 5: far outside the [-1, 1] that eq. 15 interpolates over
        return torch.cat([torch.zeros_like(x), torch.full_like(x, 5.0)], dim=1)

    x = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="learned-variance output v must lie in \\[-1, 1\\]"):
        dn.ddpm(wild, SCHED, dn.spaced_steps(100, 5), x, variance="learned")


def test_a_model_that_turns_nan_is_caught_at_the_end():
    calls = []

    def late_nan(x, t):  # finite on the first call (the one checked), NaN afterwards
        calls.append(1)
        return torch.zeros_like(x) if len(calls) == 1 else torch.full_like(x, math.nan)

    with pytest.raises(ValueError, match="ddim produced NaN or inf"):
        dn.ddim(late_nan, SCHED, dn.spaced_steps(100, 5), X)


def test_repaint_mask_must_be_binary():
    with pytest.raises(ValueError, match="mask values must be 0 or 1"):
        dn.repaint(zero_eps, SCHED, X, torch.full_like(X, 0.5), X, jump_length=2, jump_n_sample=2)


def test_repaint_renoises_to_the_marginal_after_every_jump():
    """With mask = 1 every model input at step t must be ~ N(sqrt(ab_t) x_known, (1 - ab_t) I).

    On a shortened step list a jump from level k to k + 1 spans many training steps, so its beta
    is 1 - ab(k+1) / ab(k); the schedule's own one-step beta_t would leave too little noise.
    """
    schedule = dn.linear_schedule(1000)
    n, value = 4000, 0.5
    x_known = torch.full((n, 1), value, dtype=torch.float64)
    seen = []

    def recorder(x, t):
        seen.append((x.clone(), int(t[0])))
        return torch.zeros_like(x)

    x_T = torch.randn(n, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    dn.repaint(
        recorder,
        schedule,
        x_known,
        torch.ones_like(x_known),
        x_T,
        ts=dn.spaced_steps(1000, 20),
        jump_length=3,
        jump_n_sample=3,
        generator=torch.Generator().manual_seed(3),
    )
    steps = [t for _, t in seen]
    assert len(steps) > len(set(steps)), "the schedule must revisit steps (jumps happened)"
    for x, t in seen[1:]:  # the first input is x_T itself
        ab = float(schedule.alpha_bar(t))
        mean_err = abs(float(x.mean()) - math.sqrt(ab) * value)
        var = float(x.var())
        assert mean_err < 5 * math.sqrt((1 - ab) / n), (t, float(x.mean()), math.sqrt(ab) * value)
        assert abs(var - (1 - ab)) < 6 * (1 - ab) * math.sqrt(2 / n), (t, var, 1 - ab)
