"""Bad input to data, metrics, models, training, video, GANs, latent diffusion, plots and claims:
refused with a ValueError naming the argument, before any heavy work, never a silent wrong result
(a NaN, a flipped sign, a truncated label, an untrained model, an endless loop)."""

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import diffnotes as dn
from diffnotes import claims, data, ddgan, gan, latent, plot, train, video
from diffnotes.metrics import digits as mdigits
from diffnotes.metrics import images as mimages
from diffnotes.metrics import samples as msamples
from diffnotes.metrics import shapes as mshapes
from diffnotes.metrics import video as mvideo
from diffnotes.models import (
    Autoencoder,
    CaptionEncoder,
    Discriminator,
    GANConfig,
    Generator,
    LatentUNet,
    LatentUNetConfig,
    MLPConfig,
    NoisyClassifier,
    TimeMLP,
    UNet,
    UNetConfig,
    VideoUNet,
    count_parameters,
    timestep_embedding,
)

nan, inf = math.nan, math.inf
G0 = torch.Generator().manual_seed(0)
X = torch.randn(16, 2, generator=G0)
IMG = torch.rand(4, 3, 32, 32, generator=G0) * 2 - 1
DIG = torch.rand(6, 1, 8, 8, generator=G0) * 2 - 1
VID = torch.rand(2, 1, 4, 16, 16, generator=G0) * 2 - 1
POS = torch.zeros(2, 4, 2)
T2 = torch.zeros(2)
CI = dn.profile("ci")
SCHED = dn.linear_schedule(100)
DSCHED = ddgan.ddgan_schedule(4)
GRID = gan.grid_mixture()
RING = dn.ring_mixture()
VMIX = video.video_mixture([[0.0, 0.0], [1.0, 1.0]], [[0.1, 0.0], [0.0, 0.1]], frames=4)
KNOWN = torch.zeros(8, dtype=torch.bool)
KNOWN[:2] = True
COND = VMIX.conditional(KNOWN, torch.zeros(8, dtype=torch.float64))
VK, VM = torch.zeros(2, 4, 2), torch.tensor([[1.0, 0.0, 0.0, 0.0]])


def ident(x, t):
    return x


def loss(m, b, g):
    return ((m(b) - b) ** 2).mean()


def fit(**kw):
    return train.train(nn.Linear(2, 2), loss, X, **{"steps": 1, "batch_size": 2, **kw})


def gan_run(G=None, **kw):
    G = G if G is not None else Generator(hidden=8, depth=1, z_dim=4)
    D = Discriminator(hidden=8, depth=1)
    return gan.train_gan(G, D, kw.pop("data", lambda n, g: torch.randn(n, 2, generator=g)), **kw)


def ddgan_run(G=None, **kw):
    G = G if G is not None else dn.models.DDGANGenerator(hidden=8, depth=1, z_dim=4)
    D = dn.models.DDGANDiscriminator(hidden=8, depth=1)
    return ddgan.train_ddgan(G, D, lambda n, g: torch.randn(n, 2, generator=g), DSCHED, **kw)


def gan_step(real, z, **kw):
    G, D = Generator(hidden=8, depth=1, z_dim=4), Discriminator(hidden=8, depth=1)
    opt = torch.optim.SGD([*G.parameters(), *D.parameters()], lr=0.1)
    return gan.gan_step(G, D, opt, opt, real, z, **kw)


def ddgan_step(x0, schedule):
    G = dn.models.DDGANGenerator(hidden=8, depth=1, z_dim=4)
    D = dn.models.DDGANDiscriminator(hidden=8, depth=1)
    opt = torch.optim.SGD([*G.parameters(), *D.parameters()], lr=0.1)
    return ddgan.ddgan_step(G, D, opt, opt, x0, schedule)


SMALL_LATENT = dict(base_channels=8, num_heads=1, attention_resolutions=(4,))

CASES = {
    # data: floats and bools are not counts, seeds are ints >= 0, a sprite never leaves the frame
    "two_d n float": (lambda: data.two_d("moons", 1.5), "n must be an integer >= 1, got 1.5"),
    "two_d n bool": (lambda: data.two_d("moons", True), "n must be an integer >= 1"),
    "two_d seed": (lambda: data.two_d("moons", 5, seed=-1), "seed must be an integer >= 0"),
    "digits seed": (lambda: data.digits(8, seed=1.5), "seed must be an integer >= 0"),
    "digits size float": (lambda: data.digits(8.0), "size must be one of"),
    "resize size 0": (lambda: data.resize(IMG, 0), "size must be an integer >= 1"),
    "resize str": (lambda: data.resize("x", 8), "images must be a floating tensor"),
    "resize int": (lambda: data.resize(torch.zeros(1, 1, 4, 4, dtype=torch.long), 8), "images"),
    "caption index": (lambda: data.caption(5, 0, 1), "shape must be an integer >= 0 and <= 2"),
    "caption negative": (lambda: data.caption(0, -1, 1), "colour must be an integer >= 0"),
    "shapes n float": (lambda: data.shapes(2.7), "n must be an integer >= 1"),
    "shapes size str": (lambda: data.shapes(2, "32"), "size must be an integer >= 16 and <= 128"),
    "shapes supersample 0": (lambda: data.shapes(2, supersample=0), "supersample must be"),
    "shapes seed": (lambda: data.shapes(2, seed=-1), "seed must be an integer >= 0"),
    "sprites frames float": (lambda: data.sprites(2, 2.5), "frames must be an integer >= 1"),
    "sprites size float": (lambda: data.sprites(2, 4, 8.5), "size must be an integer >= 8"),
    "sprites digit size": (lambda: data.sprites(2, size=8, sprite="digit"), "size must be an"),
    "sprites speed negative": (lambda: data.sprites(2, speed=(-1, 1)), r"speed\[0\] must be"),
    "sprites speed reversed": (lambda: data.sprites(2, speed=(2, 1)), r"speed\[1\] must be"),
    "sprites speed nan": (lambda: data.sprites(2, speed=(nan, 1)), r"speed\[0\] must be a finite"),
    "sprites too fast": (lambda: data.sprites(2, speed=(100, 200)), "speed must be <= 11 px"),
    "sprites speed str": (lambda: data.sprites(2, speed="fast"), "speed must be a pair"),
    "centre_of_mass black": (lambda: data.centre_of_mass(-torch.ones(1, 4, 4)), "all black"),
    "centre_of_mass str": (lambda: data.centre_of_mass("x"), "videos must be frames"),
    "image_folder size float": (
        lambda: data.image_folder(".", size=1.5),
        "size must be an integer",
    ),
    "image_folder path None": (lambda: data.image_folder(None), "path must be a folder path"),
    "remote size": (lambda: data.remote("mnist", size=0, download=False), "size must be an int"),
    # metrics: sample sets, mode statistics
    "sw str": (lambda: dn.sliced_wasserstein("a", X), "a must be a sample set"),
    "mode_stats std nan": (lambda: dn.mode_stats(X, X[:3], nan), "std must be finite and > 0"),
    "mode_stats std inf": (lambda: dn.mode_stats(X, X[:3], inf), "std must be finite and > 0"),
    "mode_stats k nan": (lambda: dn.mode_stats(X, X[:3], 0.1, nan), "k must be a finite number"),
    "mode_stats k str": (lambda: dn.mode_stats(X, X[:3], 0.1, "3"), "k must be a finite number"),
    "mode_stats means empty": (lambda: dn.mode_stats(X, X[:0], 0.1), "means must have shape"),
    "mode_stats means nan": (lambda: dn.mode_stats(X, X[:3] * nan, 0.1), "means must have shape"),
    "mode_stats min_count": (lambda: dn.mode_stats(X, X[:3], 0.1, min_count=0), "min_count"),
    "mode_stats weights": (lambda: dn.mode_stats(X, X[:3], 0.1, weights=[-1, 1, 1]), "weights"),
    "noise_floor seed": (lambda: dn.noise_floor(RING, 10, seed=-1), "seed must be an integer"),
    "noise_floor mixture": (lambda: dn.noise_floor("m", 10), "mixture must have a sample"),
    "noise_floor metric": (lambda: msamples.noise_floor(RING, 10, "sw"), "metric must be callable"),
    # metrics: shapes, likelihood
    "shapes_factors nan": (lambda: mimages.shapes_factors(IMG * nan), "images contains NaN"),
    "shapes_factors empty": (lambda: mimages.shapes_factors(IMG[:0]), "images must be a floating"),
    "shapes_factors 1px": (lambda: mimages.shapes_factors(IMG[..., :1, :1]), "shapes images"),
    "adherence caption int": (lambda: dn.metrics.shapes_adherence(IMG[:1], [3]), "must be strings"),
    "adherence empty": (lambda: dn.metrics.shapes_adherence(IMG[:0], []), "images must be a"),
    "nll data_bins nan": (
        lambda: dn.metrics.nll_bits_per_dim(ident, dn.VPSDE(), X, data_bins=nan),
        "data_bins must be an integer >= 2",
    ),
    "nll dequantize 0 bins": (
        lambda: dn.metrics.nll_bits_per_dim(ident, dn.VPSDE(), X, data_bins=0, dequantize=True),
        "data_bins must be an integer >= 2",
    ),
    # metrics: the digits classifier, never trained here
    "digits width": (lambda: mdigits.DigitsClassifier(0), "width must be an integer >= 1"),
    "digits features str": (lambda: mdigits.DigitsClassifier().features("x"), "images must be"),
    "digits steps 0": (lambda: dn.metrics.digits_classifier(steps=0), "steps must be an integer"),
    "digits classifier seed": (
        lambda: dn.metrics.digits_classifier(seed=-1),
        "seed must be an integer",
    ),
    "digits classifier str": (
        lambda: mdigits.digits_features(DIG, classifier="clf"),
        "classifier must be an nn.Module",
    ),
    "class_accuracy nan labels": (
        lambda: dn.class_accuracy(
            DIG, torch.full((6,), nan), classifier=mdigits.DigitsClassifier()
        ),
        "labels must be whole class indices",
    ),
    "class_accuracy str labels": (
        lambda: dn.class_accuracy(DIG, "x", classifier=mdigits.DigitsClassifier()),
        "labels must be a tensor",
    ),
    "class_accuracy str samples": (
        lambda: dn.class_accuracy("x", torch.zeros(6), classifier=mdigits.DigitsClassifier()),
        "samples must be digits images",
    ),
    "frechet nan": (
        lambda: dn.metrics.frechet_distance(torch.randn(5, 3) * nan, torch.randn(5, 3)),
        "a contains NaN",
    ),
    "frechet str": (lambda: dn.metrics.frechet_distance("a", "b"), "a must be a floating tensor"),
    "fd floor repeats": (
        lambda: dn.fd_digits_floor(10, repeats=0, classifier=mdigits.DigitsClassifier()),
        "repeats must be an integer >= 1",
    ),
    "feature spread nan labels": (
        lambda: mdigits.class_feature_spread(
            DIG, torch.full((6,), nan), classifier=mdigits.DigitsClassifier()
        ),
        "labels must be whole class indices",
    ),
    # metrics: FD-shapes
    "shapes width": (lambda: mshapes.ShapesClassifier(0), "width must be an integer >= 1"),
    "shapes profile": (lambda: mshapes.shapes_classifier("ci"), "profile must be a Profile"),
    "shapes steps 0": (lambda: mshapes.shapes_classifier(CI, steps=0), "steps must be an integer"),
    "shapes batch_size": (
        lambda: mshapes.shapes_features(IMG, mshapes.ShapesClassifier(), 0),
        "batch_size must be an integer >= 1",
    ),
    "shapes classifier str": (lambda: mshapes.shapes_features(IMG, "c"), "classifier must be"),
    # metrics: video
    "sprite_positions nan": (lambda: mvideo.sprite_positions(VID * nan), "videos contains NaN"),
    "frame_consistency empty": (lambda: dn.metrics.frame_consistency(VID[:0]), "videos must be"),
    "positions str": (lambda: mvideo.position_errors(VID, "p"), "positions must be a tensor"),
    "continuation mask 0.5": (
        lambda: mvideo.continuation_error(VID, POS, torch.full((1, 4), 0.5)),
        "mask values must be 0 or 1",
    ),
    "continuation mask nan": (
        lambda: mvideo.continuation_error(VID, POS, torch.full((1, 4), nan)),
        "mask values must be 0 or 1",
    ),
    "mode_tv weights nan": (
        lambda: mvideo.mode_tv(torch.tensor([0, 1]), torch.tensor([nan, 0.5])),
        "weights must be a finite",
    ),
    "mode_tv float modes": (
        lambda: mvideo.mode_tv(torch.tensor([0.5, 1.7]), torch.tensor([0.5, 0.5])),
        "modes must be a non-empty",
    ),
    "incoherent out of range": (
        lambda: mvideo.incoherent_fraction(torch.tensor([0, 5]), torch.tensor([0.5, 0.5])),
        "modes must be a non-empty",
    ),
    "incoherent negative": (
        lambda: mvideo.incoherent_fraction(torch.tensor([0, -1]), torch.tensor([0.5, 0.5])),
        "modes must be a non-empty",
    ),
    "continuation_modes cond": (
        lambda: mvideo.continuation_modes(torch.randn(5, 4, 2), "c", KNOWN),
        "cond must be a GaussianMixture",
    ),
    "off_mode dim": (
        lambda: mvideo.off_mode_distance(torch.randn(5, 8, 2), COND, torch.zeros(16).bool()),
        "cond has 6 unknown coordinates",
    ),
    "off_mode nan": (
        lambda: mvideo.off_mode_distance(torch.full((5, 4, 2), nan), COND, KNOWN),
        "samples contains NaN",
    ),
    # models: configs
    "mlp hidden 0": (lambda: TimeMLP(hidden=0), "hidden must be an integer >= 1, got 0"),
    "mlp depth": (lambda: TimeMLP(depth=-1), "depth must be an integer >= 0"),
    "mlp time_scale": (lambda: TimeMLP(time_scale=nan), "time_scale must be a finite number"),
    "mlp num_classes": (lambda: TimeMLP(num_classes=0), "num_classes must be an integer >= 1"),
    "mlp wrong config": (lambda: TimeMLP(UNetConfig()), "cfg must be a MLPConfig or None"),
    "mlp cfg and overrides": (lambda: TimeMLP(MLPConfig(), hidden=8), "not both"),
    "mlp unknown override": (lambda: TimeMLP(foo=1), "overrides must be fields of MLPConfig"),
    "mlp x str": (lambda: TimeMLP(hidden=8)("x", T2), "x must have shape"),
    "mlp t str": (lambda: TimeMLP(hidden=8)(torch.zeros(2, 2), "t"), "t must be a tensor"),
    "unet base 0": (lambda: UNet(base_channels=0), "base_channels must be an integer >= 1"),
    "unet in_channels": (lambda: UNet(in_channels=0), "in_channels must be an integer >= 1"),
    "unet out_channels": (lambda: UNet(out_channels=0), "out_channels must be an integer >= 1"),
    "unet no levels": (lambda: UNet(channel_mults=()), "channel_mults must be a non-empty"),
    "unet mult 0": (lambda: UNet(channel_mults=(1, 0)), "channel_mults must be"),
    "unet groups": (lambda: UNet(num_groups=0), "num_groups must be an integer >= 1"),
    "unet heads": (lambda: UNet(num_heads=0), "num_heads must be an integer >= 1"),
    "unet res blocks": (lambda: UNet(num_res_blocks=-1), "num_res_blocks must be"),
    "unet dropout": (lambda: UNet(dropout=nan), "dropout must be a finite number"),
    "unet attention str": (lambda: UNet(attention_resolutions="8"), "attention_resolutions"),
    "unet float label": (
        lambda: UNet(base_channels=8, num_classes=3)(
            torch.zeros(2, 1, 16, 16), T2, torch.tensor([0.5, 1.5])
        ),
        "y must be integer class labels",
    ),
    "classifier one class": (lambda: NoisyClassifier(num_classes=1), "num_classes must be an int"),
    "classifier config": (lambda: NoisyClassifier(UNetConfig()), "cfg must be a ClassifierConfig"),
    "classifier y length": (
        lambda: NoisyClassifier(base_channels=8).grad_log_prob(
            torch.zeros(2, 1, 16, 16), T2, torch.tensor([0])
        ),
        r"y must be \(B,\) = \(2,\)",
    ),
    "autoencoder kl_weight": (lambda: Autoencoder(kl_weight=-1), "kl_weight must be a finite"),
    "autoencoder codebook": (lambda: Autoencoder(codebook_size=0), "codebook_size must be"),
    "autoencoder quantise kl": (
        lambda: Autoencoder(base_channels=8).quantise(torch.zeros(1, 4, 8, 8)),
        "quantise needs regularisation='vq'",
    ),
    "latent context_dim": (lambda: LatentUNet(context_dim=0), "context_dim must be an integer"),
    "latent drop shape": (
        lambda: LatentUNet(**SMALL_LATENT)(torch.zeros(2, 4, 8, 8), T2, drop=torch.zeros(3)),
        r"drop must be a \(B,\)",
    ),
    "caption dim": (lambda: CaptionEncoder(["a"], dim=6), "dim must be a multiple of 4"),
    "caption max_len": (lambda: CaptionEncoder(["a"], max_len=0), "max_len must be an integer"),
    "caption vocab str": (lambda: CaptionEncoder("abc"), "vocab must be a non-empty list"),
    "caption one string": (lambda: CaptionEncoder(["a"])("a b c"), "captions must be a non-empty"),
    "caption empty": (lambda: CaptionEncoder(["a"])([]), "captions must be a non-empty list"),
    "video frames": (lambda: VideoUNet(frames=0), "frames must be an integer >= 1"),
    "video config": (lambda: VideoUNet(UNetConfig()), "cfg must be a VideoUNetConfig"),
    "video mask str": (
        lambda: VideoUNet(base_channels=8)(torch.zeros(2, 1, 4, 16, 16), T2, "m"),
        r"mask must have shape \(B, F\)",
    ),
    "gan z_dim": (lambda: Generator(z_dim=0), "z_dim must be an integer >= 1"),
    "gan config": (lambda: Discriminator(MLPConfig()), "cfg must be a GANConfig"),
    "embedding dim": (lambda: timestep_embedding(T2, 0), "dim must be an integer >= 1"),
    "embedding period": (lambda: timestep_embedding(T2, 8, 0.0), "max_period must be"),
    "count_parameters str": (lambda: count_parameters("m"), "model must be an nn.Module"),
    # train: a zero or negative step size or clip would train nothing or flip the gradient
    "train lr 0": (lambda: fit(lr=0.0), "lr must be a finite number > 0, got 0.0"),
    "train lr str": (lambda: fit(lr="1e-3"), "lr must be a finite number > 0"),
    "train grad_clip negative": (lambda: fit(grad_clip=-1.0), "grad_clip must be a finite"),
    "train grad_clip 0": (lambda: fit(grad_clip=0.0), "grad_clip must be a finite number > 0"),
    "train weight_decay": (lambda: fit(weight_decay=nan), "weight_decay must be a finite"),
    "train seed": (lambda: fit(seed=1.5), "seed must be an integer >= 0"),
    "train model": (lambda: train.train("m", loss, X, steps=1, batch_size=2), "model must be"),
    "train loss_fn": (
        lambda: train.train(nn.Linear(2, 2), "eps", X, steps=1, batch_size=2),
        "loss_fn must be callable",
    ),
    "train checkpoint_every": (
        lambda: fit(checkpoint_every=1.5, checkpoint_dir="unused"),
        "checkpoint_every must be an integer >= 1",
    ),
    "train checkpoint_dir file": (lambda: fit(checkpoint_dir=__file__), "is a file, not a folder"),
    "train log_every": (lambda: fit(log_every="5"), "log_every must be an integer >= 1"),
    "train 0-d data": (
        lambda: train.train(nn.Linear(2, 2), loss, torch.tensor(1.0), steps=1, batch_size=2),
        "data must be a Tensor",
    ),
    "loss_curve nan": (lambda: dn.loss_curve([1.0, nan]), "losses must be a non-empty sequence"),
    "loss_curve str": (lambda: dn.loss_curve("abc"), "losses must be a sequence of numbers"),
    "loss_curve smooth": (lambda: dn.loss_curve([1.0, 2.0], smooth=1.5), "smooth must be"),
    # video
    "random mask generator": (lambda: video.random_frame_mask(2, 8, None), "generator must be"),
    "past_future frames": (
        lambda: video.past_future_mask(2, 1, torch.Generator(), past=0, future=0),
        "frames must be an integer >= 2",
    ),
    "past_future generator": (lambda: video.past_future_mask(2, 8, None), "generator must be"),
    "masked loss schedule": (
        lambda: video.masked_eps_loss("s", lambda b, f, g: torch.zeros(b, f)),
        "schedule must be a DiscreteSchedule",
    ),
    "masked loss mask_fn": (lambda: video.masked_eps_loss(SCHED, "m"), "mask_fn must be"),
    "replacement model": (lambda: video.replacement("m", SCHED, VK, VM), "model must be callable"),
    "conditioned schedule": (
        lambda: video.conditioned(ident, "s", VK, VM),
        "schedule must be a DiscreteSchedule",
    ),
    "guidance schedule": (
        lambda: video.reconstruction_guidance(ident, "s", VK, VM),
        "schedule must be a DiscreteSchedule",
    ),
    "exact mixture": (lambda: video.exact_conditional("m", SCHED, VK, VM), "mixture must be"),
    "rollout clip str": (lambda: video.rollout("f", VID[:, :, :2], 8, 4), "sample_clip must be"),
    "rollout no progress": (  # a clip that adds no frame looped forever
        lambda: video.rollout(lambda xk, mk: xk[:, :, :1], VID[:, :, :2], 8, 4),
        "sample_clip must return a tensor of shape",
    ),
    "video_mixture empty": (
        lambda: video.video_mixture(torch.zeros(0, 2), torch.zeros(0, 2)),
        "centres and velocities must both be",
    ),
    # Diffusion-GAN
    "d_target": (lambda: gan.AdaptiveDiffusion(d_target=5.0), r"d_target must be in \[-1, 1\]"),
    "p_clean str": (lambda: gan.AdaptiveDiffusion(p_clean="0.5"), "p_clean must be a finite"),
    "gan_step batch": (lambda: gan_step(X, torch.randn(8, 4)), "real and z must be tensors"),
    "gan_step diffusion": (lambda: gan_step(X, torch.randn(16, 4), diffusion="d"), "diffusion"),
    "train_gan n_snapshot": (lambda: gan_run(steps=1, n_snapshot=0), "n_snapshot must be"),
    "train_gan seed": (lambda: gan_run(steps=1, seed=-1), "seed must be an integer >= 0"),
    "train_gan snapshot 0": (lambda: gan_run(steps=1, snapshot_every=0), "snapshot_every must"),
    "train_gan betas": (lambda: gan_run(steps=1, betas=(1.5, 0.9)), r"betas\[0\] must be in"),
    "train_gan G": (lambda: gan_run(G="G", steps=1), "G must be a generator with cfg.z_dim"),
    "train_gan data": (lambda: gan_run(steps=1, data="data"), "data must be callable"),
    "mode_coverage mixture": (lambda: gan.mode_coverage(X, "m"), "mixture must be an isotropic"),
    "mode_coverage k": (lambda: gan.mode_coverage(X, GRID, k=nan), "k must be a finite number"),
    "point_mass_js nan": (lambda: gan.point_mass_js(torch.tensor([nan]), 1.0), "theta contains"),
    # DDGAN
    "ddgan eps_small": (lambda: ddgan.ddgan_schedule(eps_small=-1.0), "eps_small must be in"),
    "pairs t str": (lambda: ddgan.q_sample_pairs(DSCHED, X, "t"), r"t must have shape \(B,\)"),
    "pairs x0 str": (
        lambda: ddgan.q_sample_pairs(DSCHED, "x", torch.zeros(16, dtype=torch.long)),
        "x0 must be a batch",
    ),
    "pairs schedule": (
        lambda: ddgan.q_sample_pairs("s", X, torch.zeros(16, dtype=torch.long)),
        "schedule must be a DiscreteSchedule",
    ),
    "posterior noise": (
        lambda: ddgan.posterior_sample(
            DSCHED, X, X, torch.zeros(16, dtype=torch.long), torch.zeros(3, 2)
        ),
        "noise must be a tensor shaped as x_t",
    ),
    "ddgan_sample schedule": (
        lambda: ddgan.ddgan_sample(dn.models.DDGANGenerator(), "s", X),
        "schedule must be",
    ),
    "ddgan_sample G": (lambda: ddgan.ddgan_sample("G", DSCHED, X), "G must be a generator"),
    "ddgan_step schedule": (lambda: ddgan_step(X, "s"), "schedule must be a DiscreteSchedule"),
    "ddgan_step x0": (lambda: ddgan_step("x", DSCHED), "x0 must be a batch"),
    "train_ddgan conv": (
        lambda: ddgan_run(dn.models.DDGANGenerator(kind="conv"), steps=1),
        "G must be an MLP generator",
    ),
    "train_ddgan n_snapshot": (lambda: ddgan_run(steps=1, n_snapshot=0), "n_snapshot must be"),
    "train_ddgan snapshot 0": (lambda: ddgan_run(steps=1, snapshot_every=0), "snapshot_every"),
    "posterior mixture": (
        lambda: ddgan.denoising_posterior("m", DSCHED, X, 1),
        "mixture must be an isotropic GaussianMixture",
    ),
    "posterior dim": (
        lambda: ddgan.denoising_posterior(GRID, DSCHED, torch.zeros(4, 3), 1),
        "x_t must have 2 coordinates per row, got 3",
    ),
    "gaussian_gap mixture": (lambda: ddgan.gaussian_gap("m", DSCHED, 1), "mixture must be"),
    "exact_step schedule": (lambda: ddgan.exact_step_sample(GRID, "s", X), "schedule must be"),
    # latent diffusion
    "pca encode shape": (
        lambda: latent.PCAStage(GRID, 1).encode(torch.zeros(3, 3)),
        r"x must have shape \(B, 2\)",
    ),
    "latent_scale constant": (lambda: latent.latent_scale(torch.ones(10)), "z must vary"),
    "ae config profile": (lambda: latent.autoencoder_config("ci"), "profile must be a Profile"),
    "ae config channels": (lambda: latent.autoencoder_config(CI, 4, True), "latent_channels"),
    "shapes_autoencoder profile": (lambda: latent.shapes_autoencoder("ci"), "profile must be"),
    "trunk profile": (lambda: latent.trunk("ci"), "profile must be a Profile"),
    "budget profile": (lambda: latent.diffusion_budget("ci"), "profile must be a Profile"),
    "latent_ddpm autoencoder": (
        lambda: latent.shapes_latent_ddpm(CI, "ae"),
        "autoencoder must be an nn.Module with encode",
    ),
    "latent_ddpm budget": (
        lambda: latent.shapes_latent_ddpm(CI, Autoencoder(base_channels=8), budget={"steps": 1}),
        "budget must be a dict with steps, batch_size and lr",
    ),
    "captioned config": (
        lambda: latent.CaptionedLatentUNet(UNetConfig()),
        "cfg must be a LatentUNetConfig",
    ),
    "captioned no captions": (
        lambda: latent.CaptionedLatentUNet(LatentUNetConfig(**SMALL_LATENT), ()),
        "captions must be a non-empty list",
    ),
    "captioned float y": (
        lambda: latent.CaptionedLatentUNet(LatentUNetConfig(**SMALL_LATENT), ("a b",))(
            torch.zeros(2, 4, 8, 8), T2, torch.tensor([0.5, 0.0])
        ),
        "y must be integer caption indices",
    ),
    "train_step_cost repeats": (
        lambda: latent.train_step_cost(nn.Linear(2, 2), loss, X, repeats=0),
        "repeats must be an integer >= 1",
    ),
    # plots
    "tile nrow": (lambda: plot.tile(IMG, 0), "nrow must be an integer >= 1"),
    "tile pad": (lambda: plot.tile(IMG, 2, -1), "pad must be an integer >= 0"),
    "tile empty": (lambda: plot.tile(IMG[:0]), "images must be non-empty and finite"),
    "tile nan": (lambda: plot.tile(IMG * nan), "images must be non-empty and finite"),
    "grid size": (lambda: plot.grid(IMG, size=0), "size must be a finite number > 0"),
    "strip labels str": (lambda: plot.strip(IMG[:3], "abc"), "labels must be a list of strings"),
    "scatter empty": (lambda: plot.scatter({}), "panels must be a non-empty dict"),
    "scatter lim": (lambda: plot.scatter({"a": X}, lim=-1), "lim must be a finite number > 0"),
    "scatter str points": (lambda: plot.scatter({"a": "x"}), r"panels\['a'\] must be"),
    "curves ys list": (lambda: plot.curves([1, 2], [[1, 2]]), "ys and hline must be dicts"),
    "curves hline": (lambda: plot.curves([1, 2], {"a": [1, 2]}, hline={"h": nan}), "hline"),
    "animate interval": (lambda: plot.animate([IMG], interval=0), "interval must be an integer"),
    "slider str": (lambda: plot.widget(lambda ax, t: None, t="abc"), "slider 't' must be a list"),
    "slider number": (lambda: plot.widget(lambda ax, t: None, t=5), "slider 't' must be a list"),
    "widget panel_size": (
        lambda: plot.widget(lambda ax, t: None, panel_size=0, t=[1, 2]),
        "panel_size must be",
    ),
    "widget draw": (lambda: plot.widget("d", t=[1, 2]), "draw must be callable"),
    "table fmt": (lambda: plot.table(["a"], [[1.5]], fmt="q"), "fmt must be a float format"),
    "table header str": (lambda: plot.table("ab", [["x", "y"]]), "header and each row"),
    # claims and profiles
    "claim value inf": (lambda: claims.ClaimLog("x").check("a", inf, ">", 1.0), "must be finite"),
    "claim threshold inf": (lambda: claims.ClaimLog("x").check("a", 1.0, "<", inf), "threshold"),
    "claim value str": (
        lambda: claims.ClaimLog("x").check("a", "1.5", ">", 1.0),
        "value of claim 'a' must be a number",
    ),
    "report inf": (lambda: claims.ClaimLog("x").report("b", -inf), "value of claim 'b' must be"),
    "margin nan": (lambda: claims.margin(nan, "<", 1.0), "value and threshold must be numbers"),
    "Profile name": (
        lambda: dn.Profile("cpu", torch.device("cpu"), False, False),
        "name must be one of",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_with_the_argument_named(case):
    call, match = CASES[case]
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(images=IMG * nan), "images contains NaN"),
        (dict(images=IMG[:0], captions=[]), "images must be a floating tensor"),
        (dict(images="x"), "images must be"),
        (dict(captions="abcd"), "captions must be a list of strings"),
        (dict(captions=[1, 2, 3, 4]), "captions must be a list of strings"),
        (dict(path=None), "path must be a folder path"),
    ],
)
def test_save_image_folder_writes_nothing_on_bad_input(tmp_path, kwargs, match):
    args = {"images": IMG, "captions": None, "path": tmp_path / "out", **kwargs}
    with pytest.raises(ValueError, match=match):
        data.save_image_folder(**args)
    assert list(tmp_path.iterdir()) == []


def test_save_image_folder_refuses_a_file_as_the_folder(tmp_path):
    file = tmp_path / "a-file"
    file.write_text("kept\n")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        data.save_image_folder(IMG, None, file)
    assert file.read_text() == "kept\n"


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", "is not a bench.claims summary"),
        ('{"claims": [{"chapter": "x"}]}', "every 'claims' row must be an object"),
        ('{"claims": ["x"]}', "every 'claims' row must be an object"),
    ],
)
def test_claims_summary_refuses_a_damaged_file(tmp_path, text, match):
    path = tmp_path / "summary.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        claims.load_robustness(path)


def test_valid_input_is_unchanged():
    # numpy integers are integers; the draws are those of int n
    torch.testing.assert_close(data.two_d("moons", np.int64(5)), data.two_d("moons", 5))
    assert data.sprites(2, 4, 16, speed=(0.5, 1.5)).videos.shape == (2, 1, 4, 16, 16)
    assert TimeMLP(MLPConfig(hidden=8)).cfg.hidden == 8
    assert GANConfig(kind="conv").kind == "conv" and Generator(kind="conv") is not None
    log = claims.ClaimLog("x")
    log.sanity("numpy's bool is a bool", np.bool_(True))
    assert plot.curves([1, 2], {"a": [1, 2]}, logx=True, logy=True) is not None
    summary = dn.claims.load_summary()
    assert summary == {} or isinstance(summary["claims"], list)
    assert json.dumps(mvideo.mode_tv(torch.tensor([0, 1]), torch.tensor([0.5, 0.5]))) == "0.0"
