"""OpenAI CLIP tags (VBench's background consistency and aesthetic quality use them) run with QuickGELU."""

from __future__ import annotations


def test_openai_tag_builds_quick_gelu_even_from_random_or_file_weights(empty_caches):
    import open_clip

    from metrics.clip_similarity import load_clip

    mp = empty_caches()
    try:
        net = load_clip("ViT-B-32", "openai", "cpu", allow_random_weights=True)
    finally:
        mp.undo()
    acts = {type(m).__name__ for m in net.model.visual.modules()}
    assert "QuickGELU" in acts, acts
    assert net.random_weights and net.label.endswith("[random weights]")
    assert isinstance(open_clip.get_pretrained_cfg("ViT-B-32", "openai").get("quick_gelu"), bool)
