"""Does a training-free cache still pay off under torch.compile?

Times four configurations in one process, on the same pipeline, prompt and seed, through the
project's engine (so the timing is the sweep's own: perf_counter on CPU, CUDA events on GPU
with one synchronize per call):

    baseline eager | FBC eager | baseline + regional compile | FBC + regional compile

and prints medians (end to end, denoise loop, transformer), compile time, recompilations, the
compute fraction, and the ratios: cache speedup eager (baseline eager / FBC eager), cache speedup
under compile (baseline compiled / FBC compiled), compile alone (baseline eager / baseline
compiled) and both (baseline eager / FBC compiled).

The model is the tiny Wan twin (random weights) unless --layers/--dim/--heads ask for a bigger
random-weight Wan transformer (same text encoder and VAE; e.g. Wan 2.1 1.3B is --layers 30
--dim 1536 --heads 12 --ffn 8960, needs a GPU). Run:

    python benchmarks/bench_compile_cache.py [--threads 1] [--repeats 5] [--steps 10] [--height 32]
    python benchmarks/bench_compile_cache.py --layers 8 --dim 384 --heads 4 --height 64 --frames 9
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_spec(args):
    from experiments.spec import Spec

    return Spec.model_validate({
        "name": "bench-compile-cache",
        "model": {"tiny": "wan", "device": args.device, "dtype": args.dtype},
        "generation": {"height": args.height, "width": args.height, "num_frames": args.frames,
                       "num_inference_steps": args.steps, "guidance_scale": 5.0, "max_sequence_length": 16},
        "prompts": ["a red fox running through fresh snow at dawn"],
        "seeds": [0],
        "methods": [{"name": "first_block_cache", "params": {"threshold": args.threshold}}],
        "metrics": {"names": ["psnr"], "device": "cpu"},
        "timing": {"warmup": args.warmup},
        "wandb": {"mode": "disabled"},
        "output": {"dir": "/tmp/bench-compile-cache", "mp4": False},
    })


def make_pipe(spec, args):
    """The tiny Wan twin, or the same pipeline with a bigger random-weight transformer."""
    import torch

    from experiments.pipelines import load_pipeline

    pipe = load_pipeline(spec.model)
    if args.layers:
        from diffusers import WanTransformer3DModel

        torch.manual_seed(0)
        transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=args.heads, attention_head_dim=args.dim // args.heads,
            in_channels=16, out_channels=16, text_dim=pipe.text_encoder.config.d_model, freq_dim=256,
            ffn_dim=args.ffn or 4 * args.dim, num_layers=args.layers, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=1024,
        ).eval()
        transformer = transformer.to(pipe.device)
        pipe.transformer = transformer if args.dtype == "float32" else transformer.to(getattr(torch, args.dtype))
    return pipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--threads", type=int, help="torch intra-op threads (CPU); default: torch's")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--height", type=int, default=32, help="height = width, pixels")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=0.2, help="First Block Cache threshold")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs once per engine (compiled configurations are warmed by the compile step)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per configuration (median)")
    parser.add_argument("--layers", type=int, default=0, help="bigger random Wan transformer: number of blocks")
    parser.add_argument("--dim", type=int, default=384, help="... hidden size")
    parser.add_argument("--heads", type=int, default=4, help="... attention heads")
    parser.add_argument("--ffn", type=int, default=0, help="... feed-forward size (default 4 x dim)")
    args = parser.parse_args()

    import torch

    from experiments.runner import Engine, GenerationRequest

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = make_spec(args)
    t0 = time.perf_counter()
    pipe = make_pipe(spec, args)
    engine = Engine(spec, pipe=pipe)
    n_params = sum(p.numel() for p in pipe.transformer.parameters())
    print(f"device {engine.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, transformer "
          f"{n_params / 1e6:.2f}M params ({len(pipe.transformer.blocks)} blocks), {args.height}x{args.height}x"
          f"{args.frames}, {args.steps} steps, CFG 5.0, FBC threshold {args.threshold}; "
          f"warm-up {args.warmup}, {args.repeats} timed runs each; loaded in {time.perf_counter() - t0:.1f}s")

    prompt, seed = spec.prompts[0], spec.seeds[0]
    configs = {
        "baseline eager": GenerationRequest(prompt, seed),
        "FBC eager": GenerationRequest(prompt, seed, "first_block_cache", {"threshold": args.threshold}),
        "baseline regional compile": GenerationRequest(prompt, seed, optimization={"compile": "regional"}),
        "FBC + regional compile": GenerationRequest(prompt, seed, "first_block_cache", {"threshold": args.threshold},
                                                    optimization={"compile": "regional"}),
    }
    rows = {}
    for name, request in configs.items():
        result = engine.generate(request, timed_runs=args.repeats)
        s = result.summary()
        rows[name] = s
        print(f"  {name:26s} e2e {s['e2e_s'] * 1e3:9.1f} ms (min {s['e2e_min_s'] * 1e3:8.1f}, max "
              f"{s['e2e_max_s'] * 1e3:8.1f})  denoise {s['denoise_s'] * 1e3:9.1f} ms  transformer "
              f"{s['transformer_s'] * 1e3:9.1f} ms  blocks {s['compute_executed']}/{s['compute_possible']}"
              + (f"  compile_s {s['compile_s']:.1f}  recompiles {s['recompiles']}" if s["compile_s"] else ""),
              flush=True)
        if s["e2e_max_s"] > 1.5 * s["e2e_min_s"]:
            print(f"    noisy: slowest run {s['e2e_max_s'] / s['e2e_min_s']:.1f}x the fastest; is another process "
                  "competing for the cores? (on a shared CPU, --threads 1)", flush=True)

    def ratio(a: str, b: str, col: str) -> str:
        return f"{rows[a][col] / rows[b][col]:.2f}x"

    print("ratios (e2e | denoise loop | transformer):")
    for label, a, b in (("cache speedup, eager", "baseline eager", "FBC eager"),
                        ("cache speedup, under compile", "baseline regional compile", "FBC + regional compile"),
                        ("compile alone", "baseline eager", "baseline regional compile"),
                        ("cache + compile vs eager", "baseline eager", "FBC + regional compile")):
        print(f"  {label:30s} {ratio(a, b, 'e2e_s'):>7s} | {ratio(a, b, 'denoise_s'):>7s} | "
              f"{ratio(a, b, 'transformer_s'):>7s}")
    eager, compiled = rows["FBC eager"], rows["FBC + regional compile"]
    print(f"FBC made the same skip decisions eager and compiled: "
          f"{eager['compute_executed'] == compiled['compute_executed']} (fraction of blocks executed "
          f"{eager['compute_executed'] / eager['compute_possible']:.3f} vs "
          f"{compiled['compute_executed'] / compiled['compute_possible']:.3f})")


if __name__ == "__main__":
    main()
