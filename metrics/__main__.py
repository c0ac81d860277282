"""Command line: ``python -m metrics score DIR_A DIR_B`` and ``python -m metrics fetch``.

Examples::

    python -m metrics score runs/cached runs/baseline --metrics psnr ssim lpips
    python -m metrics score a b --allow-random-weights --json scores.json
    python -m metrics fetch --lpips-net alex --clip-model ViT-B-32 --clip-pretrained laion2b_s34b_b79k
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys

from .errors import InputError, WeightsMissing
from .registry import RANDOM_WEIGHTS_TAG, SCORED as METRICS



def _metric_list(values: list[str]) -> tuple[str, ...]:
    out = tuple(m.strip().lower() for v in values for m in v.split(",") if m.strip())
    bad = [m for m in out if m not in METRICS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown metrics {bad}; choose from {METRICS}")
    return out


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.4f}"
    return str(v)


def _cmd_score(args: argparse.Namespace) -> int:
    from .folders import score_folders

    prompts = None
    if args.prompts:
        with open(args.prompts, encoding="utf-8") as fh:
            prompts = json.load(fh)
    res = score_folders(
        args.dir_a,
        args.dir_b,
        names=_metric_list(args.metrics),
        prompts=prompts,
        device=args.device,
        batch_size=args.batch_size,
        lpips_net=args.lpips_net,
        clip_model=args.clip_model,
        clip_pretrained=args.clip_pretrained,
        allow_random_weights=args.allow_random_weights,
        allow_unmatched=args.common_only,
    )
    keys = list(res["aggregate"])
    print("labels: " + ", ".join(f"{k}={v}" for k, v in res["labels"].items()))
    print("\t".join(["file", "frames"] + keys))
    for row in res["items"]:
        print("\t".join([row["file"], str(row["frames"])] + [_fmt(row.get(k, "")) for k in keys]))
    print()
    for k, a in res["aggregate"].items():
        print(f"{k}: mean {a['mean']:.4f}  CI [{a['ci_low']:.4f}, {a['ci_high']:.4f}]  n={a['n']}  ({a['note']})")
    for note in res["notes"]:
        print(f"note: {note}")
    un = res["unmatched"]
    if un["only_in_a"] or un["only_in_b"]:
        print(f"unmatched: {len(un['only_in_a'])} only in {args.dir_a}, {len(un['only_in_b'])} only in {args.dir_b}")
    if any(res["random_weights"].values()):
        print("WARNING: some metrics ran on RANDOM weights (labels end in " + RANDOM_WEIGHTS_TAG + ")")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=2, allow_nan=True)
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .weights import fetch_weights

    for path in fetch_weights(args.lpips_net, args.clip_model, args.clip_pretrained, _metric_list(args.metrics)):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m metrics``; returns the exit status."""
    from .device import prefer_short_openmp_spin

    prefer_short_openmp_spin()  # before torch loads
    p = argparse.ArgumentParser(prog="python -m metrics", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def net_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--lpips-net", default="alex", choices=("alex", "vgg", "squeeze"))
        q.add_argument("--clip-model", default="ViT-B-32")
        q.add_argument("--clip-pretrained", default="laion2b_s34b_b79k")

    s = sub.add_parser("score", help="score files of DIR_A (cached) against DIR_B (baseline)")
    s.add_argument("dir_a")
    s.add_argument("dir_b")
    s.add_argument("--metrics", nargs="+", default=["psnr,ssim,lpips,clip"], help="e.g. psnr ssim or psnr,ssim")
    s.add_argument("--prompts", help="JSON file mapping relative file paths to prompts (needed for clip)")
    s.add_argument("--device", default="auto")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--allow-random-weights", action="store_true", help="smoke tests only: labelled random nets")
    s.add_argument("--json", help="also write the full result to this file")
    s.add_argument("--common-only", action="store_true",
                   help="score the files both folders hold; the others are named and skipped (default: refuse)")
    net_args(s)
    s.set_defaults(func=_cmd_score)

    f = sub.add_parser("fetch", help="download LPIPS/CLIP weights into the standard caches")
    f.add_argument("--metrics", nargs="+", default=["lpips,clip"])
    net_args(f)
    f.set_defaults(func=_cmd_fetch)

    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (WeightsMissing, InputError, argparse.ArgumentTypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
