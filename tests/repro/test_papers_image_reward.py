"""`repro compare` on the FLUX DrawBench table (cache-dit's quotes of ToCa, TaylorSeer, FoCa): ImageReward is
listed, as compared or as not measured, never dropped."""

from __future__ import annotations

import math

import pandas as pd

from repro.papers import get_paper
from repro.papers.compare import compare, format_markdown, format_text

SPEC = {"name": "flux-run", "model": {"id": "black-forest-labs/FLUX.1-dev"},
        "generation": {"num_inference_steps": 50},
        "metrics": {"names": ["psnr", "clip", "image_reward"], "clip_model": "ViT-g-14",
                    "clip_pretrained": "laion2b_s12b_b42k"}}


def run_tables(with_image_reward: bool, random_label: bool = False):
    rows = [
        {"point_id": "baseline", "method": "baseline", "label": "baseline", "status": "ok", "params": "{}",
         "speedup": math.nan, "clip": 31.0},
        {"point_id": "ts-4", "method": "taylorseer_cache", "label": "ts 4", "status": "ok",
         "params": '{"cache_interval": 4, "max_order": 2}', "speedup": 3.1, "speedup_ci_low": 2.9,
         "speedup_ci_high": 3.3, "clip": 30.5, "clip_ci_low": 30.0, "clip_ci_high": 31.0},
    ]
    if with_image_reward:
        rows[0].update(image_reward=0.95, image_reward_ci_low=0.9, image_reward_ci_high=1.0)
        rows[1].update(image_reward=0.97, image_reward_ci_low=0.93, image_reward_ci_high=0.99)
    points = pd.DataFrame(rows)
    label = "ImageReward [random weights]" if random_label else "ImageReward"
    points.attrs["metric_labels"] = {"image_reward": label} if with_image_reward else {}
    items = pd.DataFrame({"device": ["cpu"]})
    return points, items


def lines_for(text: str, row_label: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(row_label))
    block = [lines[start]]
    for ln in lines[start + 1:]:
        if ln.strip() == "" or not ln.startswith(" "):
            break
        block.append(ln)
    return block


def test_image_reward_compared_when_the_run_measured_it():
    table = get_paper("cachedit-flux-drawbench")
    points, items = run_tables(True, random_label=True)
    cmp = compare(table, points, items, SPEC, {"ts-4": "taylorseer_cache"})
    ts = next(r for r in cmp.rows if r.row.label == "TaylorSeer(N=4,O=2)")
    assert ts.point_id == "ts-4" and ts.how == "params"
    cell = ts.cells["image_reward"]
    assert (cell.published, cell.ours, cell.inside_ci) == (0.9857, 0.97, True)
    text = format_text(cmp)
    block = "\n".join(lines_for(text, "TaylorSeer(N=4,O=2)"))
    assert "ImageReward" in block and "0.9857" in block and "0.9700 [0.9300, 0.9900]" in block
    assert "ImageReward: ours made with RANDOM network weights" in text
    assert not any("CLIP model" in m for m in cmp.mismatches)  # ViT-g-14 as the table's script


def test_image_reward_listed_as_not_measured_otherwise():
    table = get_paper("cachedit-flux-drawbench")
    points, items = run_tables(False)
    spec = {**SPEC, "metrics": {"names": ["psnr", "clip"], "clip_model": "ViT-B-32",
                                "clip_pretrained": "laion2b_s34b_b79k"}}
    cmp = compare(table, points, items, spec, {"ts-4": "taylorseer_cache"})
    text = format_text(cmp)
    for label in ("FLUX.1-dev 50 steps", "TaylorSeer(N=4,O=2)"):
        block = "\n".join(lines_for(text, label))
        assert "ImageReward" in block and "not measured" in block, block
    # rows of methods this project lacks stay listed with their published numbers
    foca = "\n".join(lines_for(text, "FoCa(N=7)"))
    assert "ImageReward" in foca and "0.9891" in foca
    assert any(m.startswith("CLIP model: published ViT-g-14") for m in cmp.mismatches)
    assert "not measured" in format_markdown(cmp)
