"""SDXL LoRA trainer on the tiny SDXL: outputs, diffusers load round trip, resume, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

from diffnotes import data  # noqa: E402
from diffnotes.lora import cli  # noqa: E402
from diffnotes.lora import train as train_lora  # noqa: E402
from diffnotes.lora.dataset import GlobalBatches  # noqa: E402
from diffnotes.lora.weights import WEIGHT_NAME, load_pipeline  # noqa: E402

SRC = str(Path(__file__).resolve().parents[1] / "src")
PROMPT = "a red circle on a blue background"


def run_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: our src first, one thread, no Hub."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", **extra)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def flags(tiny: Path, shapes_dir: Path, out: Path, **kw) -> dict:
    base = dict(
        pretrained_model_name_or_path=str(tiny),
        train_data_dir=str(shapes_dir),
        output_dir=str(out),
        resolution=64,
        train_batch_size=2,
        seed=0,
        lr_warmup_steps=0,
        report_to="none",
        learning_rate=1e-3,
    )
    base.update(kw)
    return base


@pytest.fixture(scope="module")
def trained(tiny, shapes_dir, tmp_path_factory) -> Path:
    """4 steps with text-encoder LoRA, validation, checkpoints every 2 (limit 1)."""
    out = tmp_path_factory.mktemp("run") / "out"
    train_lora(
        **flags(
            tiny,
            shapes_dir,
            out,
            train_text_encoder=True,
            max_train_steps=4,
            checkpointing_steps=2,
            checkpoints_total_limit=1,
            validation_prompt=PROMPT,
            num_validation_images=1,
            validation_inference_steps=2,
            report_to="wandb",
        )
    )
    return out


def images(pipe, **kw) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return pipe(PROMPT, num_inference_steps=2, generator=g, output_type="pt", **kw).images


def test_tiny_sdxl_is_sdxl_shaped(tiny):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny)
    assert pipe.tokenizer.model_max_length == pipe.tokenizer_2.model_max_length == 77
    assert type(pipe.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert pipe.unet.config.addition_embed_type == "text_time"
    assert pipe.vae_scale_factor == 8
    assert images(pipe).shape == (1, 3, 64, 64)


def test_training_outputs(trained, capsys):
    assert (trained / WEIGHT_NAME).is_file()
    assert [p.name for p in trained.glob("checkpoint-*")] == ["checkpoint-4"]  # limit 1
    assert not list(trained.glob(".checkpoint-*"))  # no temp or removed folder left behind
    assert (trained / "checkpoint-4" / "checksums.json").is_file()
    assert (trained / "validation" / "epoch-000" / "0.png").is_file()
    assert (trained / "validation" / "final" / "0.png").is_file()
    card = (trained / "README.md").read_text()
    assert "| train_text_encoder | True |" in card and "base_model:" in card
    log = (trained / "logs" / "train_log.csv").read_text().splitlines()
    assert log[0] == "step,epoch,train_loss,lr,seconds" and len(log) == 5


def test_diffusers_load_round_trip(tiny, trained):
    """StableDiffusionXLPipeline.load_lora_weights takes the file: UNet and both encoders."""
    from diffusers import StableDiffusionXLPipeline

    base = StableDiffusionXLPipeline.from_pretrained(tiny)
    expect = images(base)
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny)
    pipe.load_lora_weights(trained)
    for model in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2):
        assert any("lora_A" in n for n, _ in model.named_parameters())
    tuned = images(pipe)
    assert (tuned - expect).abs().max() > 1e-4  # the LoRA changes the output
    torch.testing.assert_close(
        images(pipe, cross_attention_kwargs={"scale": 0.0}), expect, rtol=0, atol=0
    )


def test_generate_grid(tiny, trained, tmp_path):
    from diffnotes.lora.generate import main
    from diffnotes.lora.inference import compare

    base, tuned, grid = compare(str(tiny), trained, [PROMPT], seeds=[0, 1], num_inference_steps=2)
    assert len(base) == len(tuned) == 2 and grid.size[1] > 2 * 64
    assert (
        main(
            [
                "--pretrained_model_name_or_path",
                str(tiny),
                "--lora",
                str(trained),
                "--prompt",
                PROMPT,
                "--num_inference_steps",
                "2",
                "--output",
                str(tmp_path / "g.png"),
            ]
        )
        == 0
    )
    assert (tmp_path / "g.png").is_file()


def test_lora_that_does_not_match_is_refused(tiny, tmp_path):
    from safetensors.torch import save_file

    key = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora.down.weight"
    save_file({key: torch.zeros(4, 999)}, tmp_path / WEIGHT_NAME)
    with pytest.raises(ValueError, match="does not match"):
        load_pipeline(str(tiny), lora=tmp_path)
    save_file({"unet.no.such.layer.lora.down.weight": torch.zeros(4, 8)}, tmp_path / WEIGHT_NAME)
    with pytest.raises(ValueError, match="does not match"):
        load_pipeline(str(tiny), lora=tmp_path)


# The trainer, with checkpoint.save_checkpoint monkeypatched to SIGKILL the process in the save
# of checkpoint-{step}: after the LoRA file is in the temp folder, before state.json marks it
# complete. A child process, since a kill is the fault under test.
KILL_IN_SAVE = """
import os, signal, sys
from diffnotes.lora import checkpoint, train_sdxl

save = checkpoint.save_checkpoint

def save_then_die(output_dir, step, *, write_lora=None, **kw):
    def write_and_die(folder):
        write_lora(folder)
        if step == {step}:
            os.kill(os.getpid(), signal.SIGKILL)

    return save(output_dir, step, write_lora=write_and_die, **kw)

checkpoint.save_checkpoint = save_then_die
sys.exit(train_sdxl.main(sys.argv[1:]))
"""


def test_resume_after_sigkill_is_bit_identical(tiny, shapes_dir, tmp_path):
    """Killed during the save of checkpoint-6 (after checkpoint-3), resumed: same LoRA bits."""
    from safetensors.torch import load_file

    # 6 images, batch 2, accumulation 2: epochs of 2 steps (2 + 1 batches); checkpoint-3 is
    # mid-epoch, so the resume also skips batches inside an epoch.
    s = data.shapes(6, 64, seed=1)
    folder = data.save_image_folder(s.images, s.captions, tmp_path / "d6")
    kw = dict(
        train_data_dir=str(folder),
        max_train_steps=6,
        checkpointing_steps=3,
        gradient_accumulation_steps=2,
        random_flip=True,
        lr_scheduler="cosine",
        lr_warmup_steps=2,
        rank=2,
    )
    train_lora(**flags(tiny, shapes_dir, tmp_path / "a", **kw))
    killed = tmp_path / "b"
    from diffnotes.lora.recipes import to_argv

    cmd = [
        sys.executable,
        "-c",
        KILL_IN_SAVE.format(step=6),
        *to_argv(**flags(tiny, shapes_dir, killed, **kw)),
    ]
    proc = subprocess.run(
        cmd,
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not (killed / WEIGHT_NAME).exists()  # nothing that looks finished
    assert (killed / ".checkpoint-6.tmp").exists() and (killed / "checkpoint-3").exists()
    train_lora(**flags(tiny, shapes_dir, killed, resume_from_checkpoint="latest", **kw))
    assert not (killed / ".checkpoint-6.tmp").exists()
    a, b = load_file(tmp_path / "a" / WEIGHT_NAME), load_file(killed / WEIGHT_NAME)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = (killed / "logs" / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in log[1:]] == ["1", "2", "3", "4", "5", "6"]


BAD = [
    ("train_data_dir", "/no/such/folder", FileNotFoundError, "no such folder"),
    ("image_column", "picture", ValueError, "image_column"),
    ("caption_column", "caption", ValueError, "caption_column"),
    ("resolution", 60, ValueError, "multiple of 8"),
    ("rank", 0, ValueError, "--rank"),
    ("mixed_precision", "fp8", ValueError, "--mixed_precision"),
    ("mixed_precision", "fp16", ValueError, "GPU"),
    ("pretrained_model_name_or_path", "someone/sdxl-base", ConnectionError, "unreachable"),
]


@pytest.mark.parametrize("flag,value,error,match", BAD, ids=[f"{b[0]}={b[1]}" for b in BAD])
def test_bad_input_fails_before_loading(
    tiny, shapes_dir, tmp_path, monkeypatch, flag, value, error, match
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if flag == "mixed_precision" and value == "fp16" and torch.cuda.is_available():
        pytest.skip("fp16 is allowed on a GPU")
    out = tmp_path / "out"
    with pytest.raises(error, match=match):
        train_lora(**flags(tiny, shapes_dir, out, max_train_steps=1, **{flag: value}))
    assert not out.exists()


def test_reading_list_command_parses_and_fails_in_one_line(tmp_path):
    """The reading list's flags, unchanged, through the CLI: one line, nothing written."""
    args = cli.parse_args(cli.READING_LIST_ARGV)
    assert (args.rank, args.resolution, args.gradient_accumulation_steps) == (4, 1024, 4)
    assert args.train_text_encoder and args.center_crop and args.report_to == "wandb"
    argv = [
        a if a != "--output_dir=output" else f"--output_dir={tmp_path / 'o'}"
        for a in cli.READING_LIST_ARGV
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "diffnotes.lora.train_sdxl", *argv],
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], proc.stderr
    assert not (tmp_path / "o").exists()


def test_nan_loss_stops_with_the_step(tiny, shapes_dir, tmp_path):
    from diffusers import UNet2DConditionModel

    poisoned = tmp_path / "poisoned"
    import shutil

    shutil.copytree(tiny, poisoned)
    unet = UNet2DConditionModel.from_pretrained(tiny, subfolder="unet")
    with torch.no_grad():
        unet.conv_out.bias.fill_(float("nan"))
    unet.save_pretrained(poisoned / "unet")
    out = tmp_path / "out"
    with pytest.raises(FloatingPointError, match="at step 1"):
        train_lora(**flags(poisoned, shapes_dir, out, max_train_steps=2))
    assert not (out / WEIGHT_NAME).exists()


def test_fp16_vae_nan_is_upcast():
    """A VAE whose half-precision latents overflow is re-run in float32, never trained on."""
    from types import SimpleNamespace

    from diffnotes.lora.objective import encode_latents

    class OverflowingVAE(torch.nn.Module):
        config = SimpleNamespace(scaling_factor=0.5)

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()).half())

        @property
        def dtype(self):
            return self.w.dtype

        def encode(self, x):
            mean = x[:, :1] * self.w.float()
            if self.w.dtype == torch.float16:
                mean = mean * float("nan")
            return SimpleNamespace(
                latent_dist=SimpleNamespace(mean=mean, std=torch.ones_like(mean))
            )

    vae = OverflowingVAE()
    z = encode_latents(vae, torch.zeros(2, 3, 8, 8), torch.tensor([1, 2]), torch.float16)
    assert torch.isfinite(z).all() and vae.dtype == torch.float32


def test_global_batches_split_across_processes():
    """2 processes with batch 2 see exactly the samples (and seeds) of 1 process with batch 4."""
    one = list(GlobalBatches(10, 4, seed=3, epoch=1))
    two = [
        list(GlobalBatches(10, 2, seed=3, epoch=1, process_index=r, num_processes=2))
        for r in range(2)
    ]
    assert one == [a + b for a, b in zip(*two)]
    assert len(one) == 3 and len({i for b in one for i, _ in b}) == 10  # last batch wraps


def test_peft_lora_is_w_plus_scaled_ba():
    """peft's LoRA layer computes W x + (alpha / r) B A x (Hu et al. 2021, Eq. 3)."""
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 8))
    w, b = net[0].weight.detach().clone(), net[0].bias.detach().clone()
    net = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=["0"]), net)
    layer = net[0]
    torch.nn.init.normal_(layer.lora_B["default"].weight)  # B starts at 0; make it visible
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    x = torch.randn(5, 16)
    torch.testing.assert_close(net(x), x @ (w + (8 / 4) * B @ A).T + b)


def test_model_card_and_recipes_keep_the_reading_list():
    from diffnotes.lora.recipes import colab_settings, reading_list_argv

    argv = reading_list_argv(pretrained_model_name_or_path="/m", **colab_settings("Tesla T4", 15))
    args = cli.parse_args(argv)
    assert args.resolution == 768 and args.gradient_checkpointing and args.train_text_encoder
    assert args.mixed_precision == "fp16" and args.gradient_accumulation_steps == 4
    assert colab_settings("NVIDIA A100-SXM4-40GB", 40)["resolution"] == 1024
    json.dumps(colab_settings(None))


def test_sdxl_import_prints_no_torchvision_notice():
    # transformers falls back to PIL image processors without torchvision and says so on import;
    # SDXL uses none of them, and the notice would show on the chapter's page
    code = (
        "from diffnotes.lora.weights import sdxl_pipeline_class; "
        "print(sdxl_pipeline_class().__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "StableDiffusionXLPipeline"
    assert "torchvision" not in out.stderr, out.stderr
