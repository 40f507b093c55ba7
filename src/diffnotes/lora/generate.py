"""CLI: ``python -m diffnotes.lora.generate --pretrained_model_name_or_path BASE --lora OUT
--prompt "..." --seeds 0 1 --output grid.png`` writes a base-vs-LoRA grid (see inference.py).

The functions live in ``diffnotes.lora.inference`` and are re-exported as
``diffnotes.lora.generate`` / ``compare`` / ``grid``; this module is only the command line.
"""

from __future__ import annotations

import sys
from pathlib import Path

from diffnotes.lora.inference import compare, generate, grid


def main(argv: list[str] | None = None) -> int:
    """CLI: base-vs-LoRA grid (or base images alone without --lora); bad input -> one line."""
    from diffnotes.lora.cli import OneLineParser

    p = OneLineParser(prog="diffnotes.lora.generate", description=__doc__.splitlines()[0])
    p.add_argument("--pretrained_model_name_or_path", required=True)
    p.add_argument("--pretrained_vae_model_name_or_path", default=None)
    p.add_argument("--lora", default=None, help="output folder of the trainer or a .safetensors")
    p.add_argument("--prompt", action="append", required=True, help="repeat for several")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--lora_scale", type=float, default=1.0)
    p.add_argument("--num_inference_steps", type=int, default=30)
    p.add_argument("--guidance_scale", type=float, default=5.0)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--output", default="lora_grid.png")
    args = p.parse_args(argv)
    import diffusers
    import transformers

    for lib in (diffusers, transformers):
        lib.utils.logging.disable_progress_bar()
    common = dict(
        seeds=args.seeds,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        height=args.height,
        width=args.width,
        vae=args.pretrained_vae_model_name_or_path,
    )
    try:
        if args.lora is None:
            images = generate(args.pretrained_model_name_or_path, args.prompt, **common)
            picture = grid([images], ["base"])
        else:
            _, _, picture = compare(
                args.pretrained_model_name_or_path,
                args.lora,
                args.prompt,
                lora_scale=args.lora_scale,
                **common,
            )
    except (ValueError, FileNotFoundError, ConnectionError) as err:
        print(f"diffnotes.lora.generate: error: {err}", file=sys.stderr)
        return 2
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
