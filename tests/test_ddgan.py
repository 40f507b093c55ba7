"""DDGAN's training loop (EMA, cosine decay, lazy R1, per-member z) and the ensemble MLPs of
`models.ddgan_mlp`: values pinned by hand, and members that never mix."""

import copy
import math

import pytest
import torch

import diffnotes as dn
from diffnotes import ddgan
from diffnotes.models.ddgan_mlp import (
    DDGANMLPConfig,
    DDGANMLPDiscriminator,
    DDGANMLPEps,
    DDGANMLPGenerator,
    StepMLP,
    member,
    stack,
)

CFG = DDGANMLPConfig(hidden=8, depth=2, z_dim=3, T=4)


def _members(kind, n, cfg=CFG):
    nets = []
    for seed in range(n):
        torch.manual_seed(seed)
        nets.append(kind(cfg))
    return nets


def _ring(n, g):
    return dn.ring_mixture().sample(n, g).float()


# -- the ensemble MLPs -------------------------------------------------------------------------
def test_step_mlp_is_the_mlp_it_describes() -> None:
    # one member, depth 0: out = W1 leaky(W0 x + b0 + emb[t]) + b1, checked by hand
    net = StepMLP(2, 1, 3, 0, T=2, members=1)
    with torch.no_grad():
        net.weights[0].copy_(torch.tensor([[[1.0, 0.0, -1.0], [0.0, 2.0, 0.0]]]))
        net.biases[0].zero_()
        net.weights[1].copy_(torch.tensor([[[1.0], [1.0], [1.0]]]))
        net.biases[1].fill_(0.5)
        net.step_embed.copy_(torch.tensor([[[0.0, 0.0, 0.0], [1.0, -5.0, 0.0]]]))
    x = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    # t = 0: h = (1, 2, -1) -> (1, 2, -0.2) -> 2.8 + 0.5; t = 1: h = (2, -3, -1) -> (2, -0.6, -0.2)
    out = net(x, torch.tensor([0, 1]))
    torch.testing.assert_close(out, torch.tensor([[3.3], [1.7]]))


@pytest.mark.parametrize("kind", [DDGANMLPGenerator, DDGANMLPDiscriminator, DDGANMLPEps])
def test_stacked_members_compute_what_each_net_computes(kind) -> None:
    nets = _members(kind, 3)
    ens = stack(nets)
    assert ens.cfg.members == 3
    n = 5
    x, t = torch.randn(3 * n, 2), torch.randint(0, 4, (3 * n,))
    extra = {
        DDGANMLPGenerator: [torch.randn(3 * n, 3)],
        DDGANMLPDiscriminator: [torch.randn(3 * n, 2)],
    }
    inputs = [x, *extra.get(kind, []), t]
    want = [net(*(a[e * n : e * n + n] for a in inputs)) for e, net in enumerate(nets)]
    torch.testing.assert_close(ens(*inputs), torch.cat(want))
    for e, net in enumerate(nets):
        for a, b in zip(member(ens, e).parameters(), net.parameters()):
            torch.testing.assert_close(a, b)


def test_members_never_mix_gradients() -> None:
    # a loss averaged over all rows gives member e exactly 1/E of its own loss's gradient
    nets = _members(DDGANMLPDiscriminator, 2)
    ens = stack(nets)
    x_prev, x_t, t = torch.randn(8, 2), torch.randn(8, 2), torch.randint(0, 4, (8,))
    ens(x_prev, x_t, t).pow(2).mean().backward()
    for e, net in enumerate(nets):
        rows = slice(4 * e, 4 * e + 4)
        net(x_prev[rows], x_t[rows], t[rows]).pow(2).mean().backward()
        for p_ens, p in zip(ens.parameters(), net.parameters()):
            torch.testing.assert_close(p_ens.grad[e : e + 1] * 2, p.grad)


def test_stack_building_leaves_the_global_rng_alone() -> None:
    nets = _members(DDGANMLPGenerator, 2)
    torch.manual_seed(7)
    stack(nets)
    after = torch.rand(1)
    torch.manual_seed(7)
    assert torch.equal(after, torch.rand(1))


def test_ddgan_mlp_bad_input() -> None:
    G = DDGANMLPGenerator(DDGANMLPConfig(hidden=8, depth=1, members=2))
    with pytest.raises(ValueError, match="multiple of members"):
        G(torch.randn(3, 2), torch.randn(3, 8), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="integer steps"):
        G(torch.randn(4, 2), torch.randn(4, 8), torch.zeros(4))
    with pytest.raises(ValueError, match="lie in 0..3"):
        G(torch.randn(4, 2), torch.randn(4, 8), torch.full((4,), 4))
    with pytest.raises(ValueError, match="z must have shape"):
        G(torch.randn(4, 2), torch.randn(4, 7), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="depth"):
        DDGANMLPConfig(depth=-1)
    with pytest.raises(ValueError, match="members"):
        DDGANMLPConfig(members=0)
    with pytest.raises(ValueError, match="one config"):
        stack([DDGANMLPGenerator(CFG), DDGANMLPGenerator(DDGANMLPConfig(hidden=4))])
    with pytest.raises(ValueError, match="one config"):
        stack([G])  # already an ensemble
    with pytest.raises(ValueError, match="non-empty"):
        stack([])
    with pytest.raises(ValueError, match="e must"):
        member(G, 2)


# -- the training loop -------------------------------------------------------------------------
def test_cosine_lr_values() -> None:
    assert ddgan.cosine_lr(1.0, 0.0, 0, 4) == 1.0
    assert math.isclose(ddgan.cosine_lr(1.0, 0.0, 1, 3), 0.75)  # (1 + cos(pi / 3)) / 2
    assert math.isclose(ddgan.cosine_lr(3e-3, 1e-3, 2, 4), 2e-3)
    assert math.isclose(ddgan.cosine_lr(3e-3, 1e-3, 4, 4), 1e-3)


def test_ema_after_one_step_is_the_warmed_up_average() -> None:
    # step 1: decay = min(0.9999, 2 / 11), so ema = 2/11 init + 9/11 live
    torch.manual_seed(0)
    G, D = DDGANMLPGenerator(CFG), DDGANMLPDiscriminator(CFG)
    init = copy.deepcopy(G)
    run = ddgan.train_ddgan(
        G, D, _ring, ddgan.ddgan_schedule(4), steps=1, batch_size=16, lr_g=0.1, lr_d=0.1,
        n_snapshot=8,
    )  # fmt: skip
    assert run.G_ema is not run.G
    for e, p0, p in zip(run.G_ema.parameters(), init.parameters(), run.G.parameters()):
        assert not torch.allclose(p0, p)
        torch.testing.assert_close(e, 2 / 11 * p0 + 9 / 11 * p)
    run = ddgan.train_ddgan(
        G, D, _ring, ddgan.ddgan_schedule(4), steps=1, batch_size=16, ema_decay=None, n_snapshot=8
    )
    assert run.G_ema is run.G


def _losses_d(r1_gamma: float, r1_every: int, steps: int) -> list[float]:
    """D's loss (non-saturating + the R1 term where applied) at every step of a fresh run."""
    torch.manual_seed(0)
    G, D = DDGANMLPGenerator(CFG), DDGANMLPDiscriminator(CFG)
    run = ddgan.train_ddgan(
        G, D, _ring, ddgan.ddgan_schedule(4), steps=steps, batch_size=16, r1_gamma=r1_gamma,
        r1_every=r1_every, lr_g=0.01, lr_d=0.01, snapshot_every=1, n_snapshot=8,
    )  # fmt: skip
    return [snap["loss_d"] for snap in run.snapshots]


def test_lazy_r1_falls_on_the_first_step_and_every_kth_after() -> None:
    # the official lazy_reg: R1 where global_step % k == 0, i.e. our steps 1, k + 1, 2k + 1, ...
    plain, every, lazy = _losses_d(0.0, 1, 2), _losses_d(5.0, 1, 2), _losses_d(5.0, 2, 2)
    assert every[0] > plain[0] + 1e-4  # R1 > 0 is added on step 1 ...
    assert lazy[0] == every[0]  # ... by the lazy schedule too,
    assert lazy[1] < every[1] - 1e-4  # which skips step 2 (same D before it: same step 1)
    with pytest.raises(ValueError, match="r1_every"):
        _losses_d(5.0, 0, 1)


def test_latent_per_member_zeroes_z_of_the_ablation_only() -> None:
    # one step (T = 1): x0 = G(x_T, z, 0) exactly, so the z = 0 member is deterministic
    G = stack(_members(DDGANMLPGenerator, 2, DDGANMLPConfig(hidden=8, depth=2, z_dim=3, T=1)))
    x_T, sched = torch.randn(6, 2).repeat(2, 1), ddgan.ddgan_schedule(1)
    gens = (torch.Generator().manual_seed(s) for s in (1, 2))
    a, b = (ddgan.ddgan_sample(G, sched, x_T, latent=[True, False], generator=g) for g in gens)
    assert not torch.allclose(a[:6], b[:6])
    torch.testing.assert_close(a[6:], b[6:])
    z = ddgan._latent(G, 10, torch.Generator().manual_seed(3), [True, False])
    assert torch.equal(z[5:], torch.zeros(5, 3)) and (z[:5] != 0).all()
    with pytest.raises(ValueError, match="one per member"):
        ddgan.ddgan_sample(G, sched, x_T, latent=[True])


def test_train_ddgan_ensemble_snapshots_and_bad_input() -> None:
    Gs, Ds = _members(DDGANMLPGenerator, 2), _members(DDGANMLPDiscriminator, 2)
    sched = ddgan.ddgan_schedule(4)
    sizes = []

    def data(n, g):
        sizes.append(n)
        return _ring(n, g)

    run = ddgan.train_ddgan(
        stack(Gs), stack(Ds), data, sched, steps=4, batch_size=8, snapshot_every=2,
        latent=[True, False], n_snapshot=10,
    )  # fmt: skip
    assert sizes == [16] * 4  # batch_size rows per member
    assert [s["step"] for s in run.snapshots] == [2, 4]
    samples = run.snapshots[-1]["samples"]
    assert samples.shape == (20, 2)
    with pytest.raises(ValueError, match="as many members"):
        ddgan.train_ddgan(stack(Gs), Ds[0], _ring, sched, steps=1)
    with pytest.raises(ValueError, match="lr_min"):
        ddgan.train_ddgan(Gs[0], Ds[0], _ring, sched, steps=1, lr_g=1e-3, lr_min=2e-3)
    with pytest.raises(ValueError, match="ema_decay"):
        ddgan.train_ddgan(Gs[0], Ds[0], _ring, sched, steps=1, ema_decay=1.0)


def test_train_gaussian_steps_trains_every_member() -> None:
    nets = _members(DDGANMLPEps, 2)
    before = [copy.deepcopy(n) for n in nets]
    sizes = []

    def data(n, g):
        sizes.append(n)
        return _ring(n, g)

    model = ddgan.train_gaussian_steps(
        stack(nets), data, ddgan.ddgan_schedule(4), steps=3, batch_size=8, lr=1e-2
    )
    assert not model.training and model.cfg.members == 2
    assert sizes == [16, 16, 16]  # batch_size rows per member
    for e in range(2):
        moved = [not torch.allclose(a, b) for a, b in zip(member(model, e).parameters(),
                                                           before[e].parameters())]  # fmt: skip
        assert all(moved)
