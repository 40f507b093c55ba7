"""The video chapters' shared pieces: masks, the masked loss, replacement and reconstruction
guidance against closed forms, the exact conditional of the video mixture, rollout, metrics."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from diffnotes import video as V
from diffnotes.metrics import video as MV
from diffnotes.samplers import ddim, ddpm
from diffnotes.schedules import linear_schedule, spaced_steps

S = linear_schedule(1000)


def test_frame_masks() -> None:
    assert V.frame_mask(2, 8, "prediction", 2)[0].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    assert V.frame_mask(1, 8, "interpolation", 2)[0].tolist() == [1, 0, 0, 0, 0, 0, 0, 1]
    assert V.frame_mask(1, 8, "infill", 2)[0].tolist() == [1, 1, 1, 0, 0, 1, 1, 1]
    assert V.frame_mask(3, 8, "none").sum() == 0
    g = torch.Generator().manual_seed(0)
    m = V.random_frame_mask(4000, 8, g, max_known=4, p_uncond=0.25)
    known = m.sum(1)
    assert known.max() <= 4 and (known < 8).all()
    assert abs(float((known == 0).double().mean()) - 0.25) < 0.03  # the unconditional rate
    m = V.past_future_mask(4000, 8, g, past=2, future=2)
    assert (m[:, 2:6] == 0).all() and (m[:, 0] == m[:, 1]).all() and (m[:, 6] == m[:, 7]).all()
    assert abs(float(m[:, 0].mean()) - 0.5) < 0.03 and abs(float(m[:, 7].mean()) - 0.5) < 0.03
    m = V.past_future_mask(10, 8, g, past=2, future=0, p_past=0.0)
    assert (m[:, :2] == 1).all() and (m[:, 2:] == 0).all()


def test_bad_input_names_the_argument() -> None:
    g = torch.Generator()
    with pytest.raises(ValueError, match="kind must be one of"):
        V.frame_mask(1, 8, "future")
    with pytest.raises(ValueError, match="known must be"):
        V.frame_mask(1, 8, "prediction", 8)
    with pytest.raises(ValueError, match="max_known"):
        V.random_frame_mask(1, 8, g, max_known=9)
    with pytest.raises(ValueError, match="p_uncond"):
        V.random_frame_mask(1, 8, g, p_uncond=1.5)
    with pytest.raises(ValueError, match="future"):
        V.past_future_mask(1, 8, g, past=4, future=4)
    with pytest.raises(ValueError, match=r"mask must have shape \(B, F\)"):
        V.expand_mask(torch.ones(1, 5), torch.zeros(1, 1, 8, 4, 4))
    with pytest.raises(ValueError, match="0 or 1"):
        V.expand_mask(torch.full((1, 8), 0.5), torch.zeros(1, 1, 8, 4, 4))
    with pytest.raises(ValueError, match="w_r"):
        V.reconstruction_guidance(lambda x, t: x, S, torch.zeros(1, 8, 2), torch.ones(1, 8), -1)
    with pytest.raises(ValueError, match="centres and velocities"):
        V.video_mixture([[0.0, 0.0]], [[0.0]])
    with pytest.raises(ValueError, match="frames"):
        V.rollout(lambda x, m: x, torch.zeros(1, 1, 2, 4, 4), 10, frames=2)
    with pytest.raises(ValueError, match="floor"):
        MV.incoherent_fraction(torch.zeros(2).long(), torch.tensor([1.0]), floor=0)


def test_expand_mask_axes() -> None:
    m = torch.tensor([[1.0, 0.0, 1.0]])
    assert V.expand_mask(m, torch.zeros(2, 1, 3, 4, 4)).shape == (1, 1, 3, 1, 1)
    assert V.expand_mask(m, torch.zeros(2, 3, 5)).shape == (1, 3, 1)


def test_masked_loss_ignores_known_frames() -> None:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 1, 6, 4, 4)
    mask_fn = lambda b, f, g: V.frame_mask(b, f, "prediction", 2)  # noqa: E731
    loss = V.masked_eps_loss(S, mask_fn)
    seen = {}

    def model(x, t, mask, x_cond):
        seen["mask"] = mask
        out = torch.zeros_like(x)
        out[:, :, :2] = 1e6  # wrong on the known frames only: must cost nothing
        return out

    value = loss(model, x0, g)
    assert torch.isfinite(value) and value < 10
    assert seen["mask"][0].tolist() == [1, 1, 0, 0, 0, 0]


def _gaussian_eps(cov: torch.Tensor):
    """Exact eps of N(0, cov) (full covariance): E[x0 | z] = sqrt(ab) cov (ab cov + s^2 I)^-1 z."""

    def gain(t):
        ab = float(S.alpha_bar(t[:1]))
        d = cov.shape[0]
        return ab**0.5 * cov @ torch.linalg.inv(ab * cov + (1 - ab) * torch.eye(d, dtype=cov.dtype))

    def eps(x, t):
        ab = float(S.alpha_bar(t[:1]))
        x0 = x.reshape(x.shape[0], -1) @ gain(t).T
        return ((x.reshape(x.shape[0], -1) - ab**0.5 * x0) / (1 - ab) ** 0.5).reshape(x.shape)

    return eps, gain


def test_reconstruction_guidance_matches_the_closed_form() -> None:
    # a correlated Gaussian over 4 frames of one coordinate: x^_a is linear in z, so
    # grad_{z_b} ||x_a - A_a z||^2 = -2 A_a[:, b]^T (x_a - A_a z)
    torch.manual_seed(0)
    a = torch.randn(4, 4, dtype=torch.float64)
    cov = a @ a.T + 0.1 * torch.eye(4, dtype=torch.float64)
    eps, gain = _gaussian_eps(cov)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    x_known = torch.randn(3, 4, 1, dtype=torch.float64)
    z = torch.randn(3, 4, 1, dtype=torch.float64)
    t = torch.full((3,), 400)
    w_r = 1.7
    guided = V.reconstruction_guidance(eps, S, x_known, mask, w_r)(z, t)
    ab = float(S.alpha_bar(400))
    A = gain(t)  # (4, 4): x^ = A z
    known, unknown = mask[0].bool(), ~mask[0].bool()
    resid = x_known[:, known, 0] - z[:, :, 0] @ A[known].T  # (3, 2)
    grad_b = -2 * resid @ A[known][:, unknown]  # (3, 2)
    want_b = eps(z, t)[:, unknown, 0] + w_r * ab / (2 * (1 - ab) ** 0.5) * grad_b
    assert_close(guided[:, unknown, 0], want_b)
    want_a = (z[:, known, 0] - ab**0.5 * x_known[:, known, 0]) / (1 - ab) ** 0.5
    assert_close(guided[:, known, 0], want_a)
    # w_r = 0 is the replacement method
    assert_close(
        V.reconstruction_guidance(eps, S, x_known, mask, 0.0)(z, t),
        V.replacement(eps, S, x_known, mask)(z, t),
    )


def test_known_frames_stay_on_the_forward_path_and_end_exact() -> None:
    mix = V.video_mixture([[0.0], [1.0]], [[0.2], [-0.2]], frames=5, std=0.1)
    x_known = mix.sample(1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x_known = x_known.reshape(1, 5, 1).expand(6, 5, 1)
    mask = V.frame_mask(1, 5, "prediction", 2)
    model = V.replacement(mix.eps_model(S), S, x_known, mask)
    e = torch.randn(6, 5, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ts = spaced_steps(1000, 20)
    ab_T = float(S.alpha_bar(int(ts[0])))
    x_T = ab_T**0.5 * x_known + (1 - ab_T) ** 0.5 * e
    _, traj = ddim(model, S, ts, x_T, trajectory=True)
    for t, x in zip([*ts.tolist(), -1], traj["x_t"]):
        ab = float(S.alpha_bar(t)) if t >= 0 else 1.0
        assert_close(x[:, :2], ab**0.5 * x_known[:, :2] + (1 - ab) ** 0.5 * e[:, :2])
    out = ddpm(model, S, ts, torch.randn(6, 5, 1, dtype=torch.float64), generator=torch.Generator())
    assert_close(out[:, :2], x_known[:, :2], rtol=0, atol=1e-12)


def test_video_mixture_and_its_exact_conditional() -> None:
    c, v = [[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]], [[0.3, 0.0], [-0.3, 0.0], [0.0, 0.3]]
    mix = V.video_mixture(c, v, [0.5, 0.3, 0.2], frames=4, std=0.1)
    assert mix.dim == 8
    assert_close(mix.means[0].reshape(4, 2)[:, 0], torch.tensor([0.0, 0.3, 0.6, 0.9]).double())
    x_known = torch.tensor([[[0.05, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]]).double()
    mask = V.frame_mask(1, 4, "prediction", 1)
    known = V.expand_mask(mask, x_known).expand_as(x_known).reshape(-1).bool()
    cond = mix.conditional(known, x_known.reshape(-1))
    # Bayes by hand: the first frame sees only c, so the two modes at c = 0 keep 5 : 3
    like = torch.exp(-0.5 * ((x_known[0, 0] - torch.tensor(c).double()) ** 2).sum(1) / 0.01)
    post = torch.tensor([0.5, 0.3, 0.2]).double() * like
    assert_close(cond.weights, post / post.sum())
    # the exact conditional sampler reaches those weights; replacement does not need to
    n = 2000
    x_T = torch.randn(n, 4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = V.exact_conditional(mix, S, x_known.expand(n, 4, 2), mask)
    out = ddpm(model, S, spaced_steps(1000, 50), x_T, generator=torch.Generator().manual_seed(1))
    assert_close(out[:, 0], x_known[:, 0].expand(n, 2))
    modes = MV.continuation_modes(out, cond, known)
    assert MV.mode_tv(modes, cond.weights) < 0.05
    assert MV.incoherent_fraction(modes, cond.weights) < 0.01
    # exact samples sit within about one standard deviation (0.1) of an allowed mode
    assert 0.02 < MV.off_mode_distance(out, cond, known) < 0.1
    wrong = out.clone()
    wrong[:, 1:] = torch.tensor([1.0, 0.0]).double() + 0.3 * torch.arange(3)[:, None]
    assert MV.off_mode_distance(wrong, cond, known) > 0.3  # a ruled-out mode is far


def test_conditioned_passes_mask_and_frames() -> None:
    seen = {}

    def model(x, t, mask, x_cond):
        seen.update(mask=mask, x_cond=x_cond)
        return torch.zeros_like(x)

    x_known = torch.randn(3, 1, 4, 2, 2)
    mask = V.frame_mask(1, 4, "prediction", 1)
    out = V.conditioned(model, S, x_known, mask)(torch.randn(3, 1, 4, 2, 2), torch.full((3,), 5))
    assert seen["mask"].shape == (3, 4) and seen["x_cond"] is x_known
    assert (out[:, :, 1:] == 0).all()


def test_rollout_stitches_clips() -> None:
    calls = []

    def clip(x_known, mask):  # continue each video by adding 1 per frame
        calls.append(mask.clone())
        k = int(mask[0].sum())
        out = x_known.clone()
        for f in range(k, x_known.shape[2]):
            out[:, :, f] = out[:, :, f - 1] + 1
        return out

    first = torch.zeros(2, 1, 2, 3, 3)
    first[:, :, 1] = 1
    video = V.rollout(clip, first, 11, frames=5)
    assert video.shape == (2, 1, 11, 3, 3)
    assert_close(video[0, 0, :, 0, 0], torch.arange(11).float())
    assert len(calls) == 3 and calls[0][0].tolist() == [1, 1, 0, 0, 0]


def test_position_metrics() -> None:
    from diffnotes.data.video import sprites

    s = sprites(4, 6, 16, seed=0)
    err = MV.position_errors(s.videos, s.positions)
    assert err.shape == (4, 6) and float(err.max()) < 1e-4
    mask = V.frame_mask(1, 6, "prediction", 2)
    assert MV.continuation_error(s.videos, s.positions, mask) < 1e-4
    shifted = s.positions.clone()
    shifted[:, 2:, 0] += 1.0
    assert abs(MV.continuation_error(s.videos, shifted, mask) - 1.0) < 1e-4
    with pytest.raises(ValueError, match="every frame known"):
        MV.continuation_error(s.videos, s.positions, torch.ones(1, 6))


def test_video_animation_is_self_contained() -> None:
    import matplotlib

    matplotlib.use("Agg")
    from diffnotes.plot import animate

    s = torch.rand(2, 1, 3, 8, 8) * 2 - 1
    html = animate(V.video_frames(s), nrow=2).data
    assert html.count("data:image/png;base64,") == 3  # every frame embedded
    assert "<script" in html and "http" not in html.split("<script")[1].split(">")[0]
    assert "require(" not in html and "jupyter" not in html.lower()
