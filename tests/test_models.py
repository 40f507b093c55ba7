"""Model output shapes for every configuration, conditioning, parameter counts, bad input."""

import dataclasses

import pytest
import torch
from torch.testing import assert_close

from diffnotes import models
from diffnotes.models import count_parameters


def _perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give zero-initialised layers random weights, so every input can reach the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def _t(b: int) -> torch.Tensor:
    return torch.randint(0, 1000, (b,), generator=torch.Generator().manual_seed(1))


UNET_CONFIGS = {
    "digits16": {},
    "class_conditional": dict(num_classes=10),
    "learned_variance": dict(learned_variance=True),
    "rgb32_three_levels": dict(image_size=32, in_channels=3, channel_mults=(1, 2, 2), num_heads=2),
    "digits8_no_attention": dict(image_size=8, attention_resolutions=(), num_res_blocks=1),
}


@pytest.mark.parametrize("name", UNET_CONFIGS)
def test_unet_shapes(name):
    torch.manual_seed(0)
    model = models.UNet(models.UNetConfig(**UNET_CONFIGS[name])).eval()
    cfg = model.cfg
    n = count_parameters(model)
    print(f"UNet[{name}]: {n:,} parameters")
    x = torch.randn(3, cfg.in_channels, cfg.image_size, cfg.image_size)
    y = torch.tensor([0, 1, 2]) if cfg.num_classes else None
    out = model(x, _t(3), y)
    channels = cfg.in_channels * (2 if cfg.learned_variance else 1)
    assert out.shape == (3, channels, cfg.image_size, cfg.image_size)
    # Ints or floats for t; a scalar t is broadcast.
    assert_close(model(x, _t(3).float(), y), out)
    assert model(x, torch.tensor(5), y).shape == out.shape
    if name == "digits16":
        assert 500_000 <= n <= 2_000_000


def test_unet_learned_variance_range_and_conditioning():
    torch.manual_seed(0)
    model = _perturb(models.UNet(learned_variance=True, num_classes=10))
    x = torch.randn(4, 1, 16, 16)
    out = model(x, _t(4), torch.tensor([1, 2, 3, 4]))
    assert out.shape == (4, 2, 16, 16)
    assert out[:, 1:].abs().max() <= 1.0
    # y=None is the null class; negative labels too.
    null = torch.full((4,), model.null_class)
    assert_close(model(x, _t(4), None), model(x, _t(4), null))
    assert_close(model(x, _t(4), torch.full((4,), -1)), model(x, _t(4), null))
    assert not torch.allclose(model(x, _t(4), None), model(x, _t(4), torch.zeros(4).long()))
    # t matters, and samples in a batch do not interact.
    assert not torch.allclose(model(x, torch.zeros(4), None), model(x, torch.full((4,), 900), None))
    assert_close(model(x[:2], _t(4)[:2], None), model(x, _t(4), None)[:2])


def test_unet_bad_input():
    with pytest.raises(ValueError, match="image_size"):
        models.UNet(image_size=18, channel_mults=(1, 2, 2))
    model = models.UNet()
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.randn(2, 1, 32, 32), _t(2))  # wrong image size
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.randn(2, 3, 16, 16), _t(2))  # wrong channels
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.randn(1, 16, 16), _t(1))  # batch dimension missing
    with pytest.raises(ValueError, match="t must have shape"):
        model(torch.randn(2, 1, 16, 16), _t(3))
    with pytest.raises(ValueError, match="y must be None"):
        model(torch.randn(2, 1, 16, 16), _t(2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="y must be in"):
        models.UNet(num_classes=3)(torch.randn(2, 1, 16, 16), _t(2), torch.tensor([0, 4]))


@pytest.mark.parametrize(
    "kw", [dict(), dict(num_classes=8), dict(learned_variance=True), dict(dim=3, depth=2)]
)
def test_mlp_shapes(kw):
    model = _perturb(models.TimeMLP(models.MLPConfig(**kw)))
    print(f"TimeMLP[{kw}]: {count_parameters(model):,} parameters")
    d = model.cfg.dim
    x = torch.randn(5, d)
    y = torch.arange(5) if model.cfg.num_classes else None
    out = model(x, torch.rand(5), y)
    assert out.shape == (5, 2 * d if model.cfg.learned_variance else d)
    if model.cfg.num_classes:
        assert_close(model(x, torch.ones(5), None), model(x, torch.ones(5), torch.full((5,), 8)))
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.randn(5, d + 1), torch.rand(5))


def test_classifier_shapes_and_gradient():
    model = _perturb(models.NoisyClassifier())
    print(f"NoisyClassifier: {count_parameters(model):,} parameters")
    x = torch.randn(4, 1, 16, 16)
    logits = model(x, _t(4))
    assert logits.shape == (4, 10)
    grad = model.grad_log_prob(x, _t(4), torch.tensor([0, 1, 2, 3]))
    assert grad.shape == x.shape and grad.abs().sum() > 0 and not x.requires_grad
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.randn(4, 1, 8, 8), _t(4))


@pytest.mark.parametrize("regularisation", ["kl", "vq"])
def test_autoencoder_round_trip_shapes(regularisation):
    model = models.Autoencoder(regularisation=regularisation).eval()
    print(f"Autoencoder[{regularisation}]: {count_parameters(model):,} parameters")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = model.encode(x)
    assert z.shape == (2, 4, 8, 8) == (2, *model.latent_shape)
    assert model.decode(z).shape == x.shape
    out = model(x, torch.Generator().manual_seed(0))
    assert out.recon.shape == x.shape and out.reg_loss.ndim == 0
    assert (out.indices is None) == (regularisation == "kl")
    loss = model.loss(x, torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and model.encoder[0].weight.grad is not None
    with pytest.raises(ValueError, match="z must have shape"):
        model.decode(torch.randn(2, 4, 16, 16))
    with pytest.raises(ValueError, match="regularisation"):
        models.Autoencoder(regularisation="none")


def test_autoencoder_kl_sampling_is_seeded():
    model = models.Autoencoder(image_size=16, channel_mults=(1, 2)).eval()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    a = model.encode(x, sample=True, generator=torch.Generator().manual_seed(3))
    b = model.encode(x, sample=True, generator=torch.Generator().manual_seed(3))
    assert_close(a, b)
    assert a.shape == (2, 4, 8, 8)


def test_latent_unet_cross_attention_and_null_context():
    captions = ["a red circle on a blue background", "a green square on a white background"]
    encoder = models.CaptionEncoder.from_captions(captions, dim=64)
    context, mask = encoder(captions + ["a red"])
    assert context.shape == (3, 7, 64) and mask.sum(1).tolist() == [7, 7, 2]
    model = _perturb(models.LatentUNet())
    print(f"LatentUNet: {count_parameters(model):,} parameters")
    print(f"CaptionEncoder: {count_parameters(encoder):,} parameters")
    z = torch.randn(3, 4, 8, 8)
    out = model(z, _t(3), context, mask)
    assert out.shape == z.shape
    # The context matters; a dropped context equals no context.
    other, _ = encoder(list(reversed(captions)) + ["a red"])
    assert not torch.allclose(out, model(z, _t(3), other, mask))
    dropped = model(z, _t(3), context, mask, drop=torch.ones(3, dtype=torch.bool))
    assert_close(dropped, model(z, _t(3)))
    with pytest.raises(ValueError, match="context"):
        model(z, _t(3), torch.randn(3, 7, 32))
    with pytest.raises(ValueError, match="z must have shape"):
        model(torch.randn(3, 4, 16, 16), _t(3))


def test_video_unet_shapes_and_mask():
    model = _perturb(models.VideoUNet())
    print(f"VideoUNet: {count_parameters(model):,} parameters")
    x = torch.randn(2, 1, 8, 16, 16)
    mask = torch.zeros(2, 8)
    mask[:, :2] = 1
    x_cond = torch.randn_like(x)
    out = model(x, _t(2), mask, x_cond)
    assert out.shape == x.shape
    assert model(x, _t(2)).shape == x.shape
    # Known frames matter, unknown frames of x_cond are ignored, videos do not interact.
    assert not torch.allclose(out, model(x, _t(2)))
    changed = x_cond.clone()
    changed[:, :, 2:] = 0
    assert_close(model(x, _t(2), mask, changed), out)
    assert_close(model(x[:1], _t(2)[:1], mask[:1], x_cond[:1]), out[:1])
    # Temporal attention mixes frames: changing frame 0 changes the output at frame 5.
    x2 = x.clone()
    x2[:, :, 0] += 1
    assert not torch.allclose(model(x2, _t(2))[:, :, 5], model(x, _t(2))[:, :, 5])
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.randn(2, 1, 16, 16), _t(2))
    with pytest.raises(ValueError, match="mask must have shape"):
        model(x, _t(2), torch.ones(2, 5), x_cond)
    with pytest.raises(ValueError, match="x_cond"):
        model(x, _t(2), mask)


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_gan_parts(kind):
    cfg = models.GANConfig(kind=kind)
    x = torch.randn(4, 2) if kind == "mlp" else torch.randn(4, 1, 16, 16)
    z = torch.randn(4, cfg.z_dim)
    t = torch.randint(0, 4, (4,))
    parts = {
        "Generator": (models.Generator(cfg), (z,), x.shape),
        "Discriminator": (models.Discriminator(cfg), (x, t), (4,)),
        "DDGANGenerator": (models.DDGANGenerator(cfg), (x, z, t), x.shape),
        "DDGANDiscriminator": (models.DDGANDiscriminator(cfg), (x, x, t), (4,)),
    }
    for name, (model, args, shape) in parts.items():
        print(f"{name}[{kind}]: {count_parameters(model):,} parameters")
        assert model(*args).shape == shape
    with pytest.raises(ValueError, match="x_prev"):
        parts["DDGANDiscriminator"][0](x[..., :1], x, t)
    with pytest.raises(ValueError, match="kind"):
        models.Generator(kind="rnn")


def test_configs_share_the_backbone_and_keep_their_fields():
    for cfg in (
        models.UNetConfig(),
        models.ClassifierConfig(),
        models.LatentUNetConfig(),
        models.VideoUNetConfig(),
        models.GANConfig(),
    ):
        assert isinstance(cfg, models.BackboneConfig) and cfg.emb_dim == 4 * cfg.base_channels
    assert isinstance(models.AutoencoderConfig(), models.ConvConfig)
    # asdict(UNetConfig) and MLPConfig.__dict__ are cache keys: the same fields as before.
    unet_fields = (
        "image_size in_channels out_channels base_channels channel_mults num_res_blocks "
        "attention_resolutions num_heads dropout num_groups num_classes learned_variance time_scale"
    )
    assert set(dataclasses.asdict(models.UNetConfig())) == set(unet_fields.split())
    mlp = models.MLPConfig(hidden=64, depth=2, dim=3, learned_variance=True, time_scale=1000.0)
    assert list(mlp.__dict__) == "dim hidden depth num_classes learned_variance time_scale".split()
    # Subclass defaults override the backbone's; positional arguments are refused, not misread.
    latent = models.LatentUNetConfig()
    assert (latent.base_channels, latent.attention_resolutions, latent.num_heads) == (48, (8, 4), 4)
    assert models.GANConfig().attention_resolutions == ()
    with pytest.raises(TypeError):
        models.UNetConfig(16)


def test_gan_conv_parts_take_the_backbone_fields():
    cfg = models.GANConfig(kind="conv", num_res_blocks=2, attention_resolutions=(8,), num_heads=2)
    x, z, t = torch.randn(2, 1, 16, 16), torch.randn(2, cfg.z_dim), torch.randint(0, 4, (2,))
    plain = models.GANConfig(kind="conv")
    for part, args in [("DDGANGenerator", (x, z, t)), ("DDGANDiscriminator", (x, x, t))]:
        model = getattr(models, part)(cfg)
        assert count_parameters(model) > count_parameters(getattr(models, part)(plain))
        assert model(*args).shape == (x.shape if part == "DDGANGenerator" else (2,))
