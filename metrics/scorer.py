"""Batched scoring of cached outputs against their uncached baselines.

A :class:`Scorer` builds its networks once, then scores pairs of items (an
image, or a video as ``[F, H, W, 3]`` / ``[F, 3, H, W]`` frames). Frames of all
items of the same size are streamed through the metrics in chunks of
``batch_size`` frames (fewer for very large frames, to bound memory): PSNR and
SSIM as vectorised torch ops (exact integer arithmetic on uint8 pairs, float64
otherwise; on the CPU when the device is MPS, which has no float64), LPIPS and
CLIP as network batches on the device. Nothing loops over single images in
Python.

How PSNR, SSIM and LPIPS are computed is the Scorer's ``protocol``
(:class:`metrics.protocol.Protocol`: pooled or per-frame PSNR, SSIM window, LPIPS
averaging, data range); each of their entries also carries ``"protocol"``, in words.

Per item and metric the result is ``{"value", "per_frame", "label"}``:

* ``value`` of a video is the mean of its frames' values;
* PSNR: a frame identical to its baseline has ``inf`` in ``per_frame``; an item
  identical in every frame has ``value`` inf, otherwise ``value`` averages inf
  frames as ``PSNR_CAP_DB`` (100 dB); the entry then also has ``"n_inf"`` and a
  ``"note"`` saying so;
* CLIP (only when "clip" is requested and the item has a prompt):
  ``clip_cached``, ``clip_baseline`` and ``clip_delta`` (= cached - baseline,
  per frame and in ``value``);
* the temporal metrics ``psnr_tdiff`` / ``mae_tdiff`` (:mod:`metrics.temporal`): ``per_frame``
  holds one value per transition (frame t -> t+1); an item of one frame (an image) gets
  ``value`` None, an empty ``per_frame`` and a ``note`` saying they do not apply.

Metrics of each output alone (CLIP, VBench's dimensions, ImageReward: ``metrics.registry.ALONE``)
come from :meth:`Scorer.score_alone`, once per output: a sweep stores the baseline's own value
with the baseline. (:meth:`Scorer.score_pair` keeps giving CLIP of both sides when given a prompt.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from .protocol import psnr_item
from .psnr_db import PSNR_CAP_DB
from .registry import ALONE, DEFAULT_NAMES, METRICS as REGISTRY, SCORED

if TYPE_CHECKING:
    import torch

    from .protocol import Protocol

    from .inputs import Frames

__all__ = ["Scorer", "Reference", "METRICS"]

METRICS = SCORED  # the metric names a Scorer computes (metrics.registry)
# Upper bound on pixels per chunk (frames x H x W): keeps the float64 copies of a
# chunk around 0.4 GB each even for large frames, whatever batch_size says.
_CHUNK_PIXELS = 1 << 24
#: reference metrics computed chunk by chunk on aligned frames (the temporal ones need neighbours)
_FRAMEWISE = ("psnr", "ssim", "lpips")


class Scorer:
    """Scores cached outputs against baselines with PSNR, SSIM, LPIPS and CLIP score.

    Networks are built (and weights resolved) in the constructor, so a missing
    checkpoint fails here with :class:`~metrics.WeightsMissing` before any work,
    unless ``allow_random_weights=True``, in which case the affected labels end
    in ``[random weights]`` (metrics.registry.RANDOM_WEIGHTS_TAG) and ``random_weights[name]`` is True.

    >>> import numpy as np, metrics
    >>> s = metrics.Scorer(names=("psnr", "ssim"), device="cpu")
    >>> a = np.zeros((2, 32, 32, 3), np.uint8)  # a 2-frame video
    >>> r = s.score_pair(a, a + 10)
    >>> round(r["psnr"]["value"], 3), s.labels
    (28.131, {'psnr': 'psnr', 'ssim': 'ssim'})
    """

    def __init__(
        self,
        names: Sequence[str] = DEFAULT_NAMES,
        device: Any = "auto",
        batch_size: int = 16,
        lpips_net: str = "alex",
        clip_model: str = "ViT-B-32",
        clip_pretrained: str = "laion2b_s34b_b79k",
        allow_random_weights: bool = False,
        protocol: "Protocol | None" = None,
    ) -> None:
        from .device import resolve_device
        from .protocol import DEFAULT

        if isinstance(names, str):
            names = (names,)
        names = tuple(dict.fromkeys(n.lower() for n in names))
        unknown = [n for n in names if n not in METRICS]
        if unknown or not names:
            raise ValueError(f"unknown metric names {unknown}; choose from {METRICS}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.names = names
        #: how PSNR, SSIM and LPIPS are computed (metrics.protocol); recorded with every result
        self.protocol = protocol or DEFAULT
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)
        self._lpips = None
        self._clip = None
        self._vbench: dict[str, Any] = {}
        self._image_reward = None
        if "lpips" in names:
            from .lpips_distance import load_lpips

            self._lpips = load_lpips(lpips_net, self.device, allow_random_weights)
        if "clip" in names:
            from .clip_similarity import load_clip

            self._clip = load_clip(clip_model, clip_pretrained, self.device, allow_random_weights)
        for n in names:
            if n.startswith("vbench_") and REGISTRY[n].needs_weights:
                from .vbench import load_dimension

                self._vbench[n] = load_dimension(n, self.device, allow_random_weights)
        if "image_reward" in names:
            from .image_reward import load_image_reward

            self._image_reward = load_image_reward(self.device, allow_random_weights)
        self._text_cache: dict[str, "torch.Tensor"] = {}

    @property
    def labels(self) -> dict[str, str]:
        """Metric name -> label recorded with results (network, weights, random-weights flag)."""
        out = {}
        for n in self.names:
            if n == "lpips":
                out[n] = self._lpips.label
            elif n == "clip":
                out[n] = self._clip.label
            elif n in self._vbench:
                out[n] = self._vbench[n].label
            elif n == "image_reward":
                out[n] = self._image_reward.label
            else:
                out[n] = n
        return out

    @property
    def random_weights(self) -> dict[str, bool]:
        """Network metric -> whether it runs on random (not pretrained) weights."""
        out = {}
        if self._lpips is not None:
            out["lpips"] = self._lpips.random_weights
        if self._clip is not None:
            out["clip"] = self._clip.random_weights
        out.update({n: net.random_weights for n, net in self._vbench.items()})
        if self._image_reward is not None:
            out["image_reward"] = self._image_reward.random_weights
        return out

    # ------------------------------------------------------------------ public

    def score_pair(self, cached: Any, baseline: Any, prompt: str | None = None) -> dict:
        """Score one item (image or video frames) against its baseline; see the module docstring.

        ``baseline`` may be a :class:`Reference` (from :meth:`reference`): its LPIPS features are
        then computed once and reused for every cached output scored against it.
        """
        if isinstance(baseline, Reference):
            return self._score_reference(cached, baseline, prompt)
        return self._score([(cached, baseline, prompt)], single=True)[0]

    def reference(self, baseline: Any) -> "Reference":
        """A baseline prepared for scoring many cached outputs against it (same values as passing the frames).

        >>> import numpy as np, metrics
        >>> s = metrics.Scorer(names=("psnr",), device="cpu")
        >>> ref = s.reference(np.zeros((16, 16, 3), np.uint8))
        >>> [round(s.score_pair(np.full((16, 16, 3), v, np.uint8), ref)["psnr"]["value"], 2) for v in (1, 2)]
        [48.13, 42.11]
        """
        from .inputs import to_frames

        return Reference(to_frames(baseline, "baseline"), baseline)

    def score_pairs(self, pairs: Iterable[tuple[Any, Any, str | None]]) -> list[dict]:
        """Score many items at once, batching frames across items of the same size.

        >>> import numpy as np, metrics
        >>> s = metrics.Scorer(names=("psnr",), device="cpu")
        >>> a = np.zeros((16, 16, 3), np.uint8)
        >>> [round(r["psnr"]["value"], 2) for r in s.score_pairs([(a, a + 1, None), (a, a + 2, None)])]
        [48.13, 42.11]
        """
        return self._score(list(pairs), single=False)

    def score_prompt(self, frames: Any, prompt: str) -> dict:
        """CLIP score of one output (image or video frames) against its prompt, no baseline needed.

        Returns ``{"value", "per_frame", "label"}``; for a video ``value`` is the mean over frames.
        """
        from .clip_similarity import clip_frames
        from .errors import InputError
        from .inputs import to_frames

        if self._clip is None:
            raise InputError("score_prompt needs a Scorer with 'clip' among its names")
        if not isinstance(prompt, str) or not prompt:
            raise InputError("score_prompt: prompt must be a non-empty string")
        fr = to_frames(frames, "output")
        self._text_embeddings([prompt])
        h, w = fr.size
        chunk = max(1, min(self.batch_size, _CHUNK_PIXELS // (h * w)))
        values = []
        for start in range(0, fr.n, chunk):
            stop = min(fr.n, start + chunk)
            x = fr.pixels(start, stop, device=self.device)
            text = self._text_cache[prompt].unsqueeze(0).expand(stop - start, -1)
            values.append(clip_frames(self._clip, x, text, self.batch_size).numpy())
        per_frame = np.concatenate(values)
        return {"value": float(per_frame.mean()), "per_frame": per_frame.tolist(), "label": self.labels["clip"]}

    def score_alone(self, frames: Any, prompt: str | None = None) -> dict:
        """Every requested metric of one output alone (``metrics.registry.ALONE``): ``{name: entry}``.

        CLIP and ImageReward need ``prompt`` (without one they are left out); VBench's video
        dimensions on a 1-frame output give ``value`` None and a note (not applicable).

        >>> import numpy as np, metrics
        >>> s = metrics.Scorer(names=("vbench_temporal_flickering",), device="cpu")
        >>> v = np.zeros((3, 8, 8, 3), np.uint8); v[1] = 51
        >>> round(s.score_alone(v)["vbench_temporal_flickering"]["value"], 6)
        0.8
        """
        from .inputs import to_frames
        from .temporal import not_applicable

        fr = to_frames(frames, "output")
        labels = self.labels
        h, w = fr.size
        chunk = max(1, min(self.batch_size, _CHUNK_PIXELS // (h * w)))
        out: dict[str, dict] = {}
        for n in self.names:
            if n not in ALONE or (n in ("clip", "image_reward") and not prompt):
                continue
            if fr.n < REGISTRY[n].min_frames:
                out[n] = not_applicable(fr.n, labels[n])
                continue
            if min(h, w) < REGISTRY[n].min_side:
                out[n] = {"value": None, "per_frame": [], "label": labels[n],
                          "note": f"not applicable: {h}x{w} frames; {n} needs at least {REGISTRY[n].min_side} px "
                                  f"a side"}
                continue
            if n == "clip":
                out[n] = self.score_prompt(frames, prompt)
                continue
            if n == "vbench_temporal_flickering":
                from .vbench import item_flickering

                v = item_flickering(fr, chunk, _cpu_or(self.device))
            elif n == "image_reward":
                from .image_reward import image_reward_frames

                v = np.concatenate([image_reward_frames(self._image_reward,
                                                        fr.pixels(s, s + chunk, device=self.device), prompt,
                                                        self.batch_size) for s in range(0, fr.n, chunk)])
            else:
                from .vbench import score_dimension

                v = score_dimension(self._vbench[n], fr, chunk)
            out[n] = {"value": float(v.mean()), "per_frame": v.tolist(), "label": labels[n],
                      "protocol": REGISTRY[n].protocol.get("definition", "")}
        return out

    # --------------------------------------------------------------- internals

    def _check(self, pairs: list, single: bool) -> list[tuple["Frames", "Frames", str | None]]:
        from .errors import InputError
        from .inputs import check_pair, to_frames

        if not pairs:
            raise InputError("score_pairs: no pairs given (empty input)")
        checked = []
        for i, pair in enumerate(pairs):
            tag = "" if single else f"pair {i} "
            if not isinstance(pair, (tuple, list)) or len(pair) != 3:
                raise InputError(f"{tag or 'pair '}must be a (cached, baseline, prompt) tuple")
            cached, baseline, prompt = pair
            if prompt is not None and not isinstance(prompt, str):
                raise InputError(f"{tag}prompt must be a string or None, got {type(prompt).__name__}")
            fc = to_frames(cached, f"{tag}cached")
            fb = to_frames(baseline, f"{tag}baseline")
            check_pair(fc, fb)
            for metric, side in self._min_sizes():
                if min(fc.size) < side:
                    h, w = fc.size
                    raise InputError(f"{tag}cached: {h}x{w} frames are too small for {metric} (needs {side}x{side})")
            checked.append((fc, fb, prompt))
        return checked

    def _min_sizes(self) -> list[tuple[str, int]]:
        from .lpips_distance import MIN_SIZE
        from .ssim_index import WINDOWS

        out = []
        if "ssim" in self.names:
            out.append(("ssim", WINDOWS[self.protocol.ssim][0]))
        if self._lpips is not None:
            out.append((self._lpips.label, MIN_SIZE.get(self._lpips.net, 1)))
        return out

    def _text_embeddings(self, prompts: list[str]) -> None:
        from .clip_similarity import encode_texts

        todo = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if todo:
            emb = encode_texts(self._clip, todo, batch_size=max(self.batch_size, 32))
            self._text_cache.update(zip(todo, emb))

    def _score(self, pairs: list, single: bool) -> list[dict]:
        import torch

        from .device import pixel_device
        from .inputs import all_uint8, metric_pixels

        items = self._check(pairs, single)
        if self._clip is not None:
            self._text_embeddings([p for _, _, p in items if p is not None])
        per_frame = [{k: np.full(fc.n, np.nan) for k in self._keys(p)} for fc, _, p in items]
        pixel_metrics = "psnr" in self.names or "ssim" in self.names
        # Float pixels are converted once per chunk: float64 for PSNR/SSIM (the networks cast
        # that to float32), float32 when only networks run. uint8 pixels stay uint8: PSNR and
        # SSIM then use their exact integer path, and the networks scale them themselves.
        dtype = torch.float64 if pixel_metrics else torch.float32
        data_device = pixel_device(self.device) if pixel_metrics else self.device
        # Items of one frame size share chunks; different sizes cannot be stacked.
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (fc, _, _) in enumerate(items):
            groups.setdefault(fc.size, []).append(i)
        if not any(per_frame):  # only temporal metrics requested: no frame-by-frame pass
            groups = {}
        for (h, w), idx in groups.items():
            exact = all_uint8(*(f for i in idx for f in items[i][:2]))
            chunk = max(1, min(self.batch_size, _CHUNK_PIXELS // (h * w)))
            for segs in _chunks([(i, items[i][0].n) for i in idx], chunk):
                x, y = (
                    _stack([metric_pixels(items[i][side], s, e, exact=exact, dtype=dtype, device=data_device)
                            for i, s, e in segs])
                    for side in (0, 1)
                )
                prompts = [items[i][2] for i, s, e in segs for _ in range(e - s)]
                vals = self._compute_chunk(x, y, prompts)
                o = 0  # scatter the chunk's per-frame values back to their items
                for i, s, e in segs:
                    for k, v in vals.items():
                        if k in per_frame[i]:
                            per_frame[i][k][s:e] = v[o : o + e - s]
                    o += e - s
        out = [self._entries(r) for r in per_frame]
        for i, (fc, fb, _) in enumerate(items):
            out[i].update(self._temporal(fc, fb))
        return out

    def _score_reference(self, cached: Any, ref: "Reference", prompt: str | None) -> dict:
        """One item against a prepared baseline: the same chunks as :meth:`_score`, baseline LPIPS features cached."""
        import torch

        from .device import pixel_device
        from .inputs import all_uint8, metric_pixels

        ((fc, fb, prompt),) = self._check([(cached, ref.raw, prompt)], single=True)
        fb = ref.frames
        if self._clip is not None and prompt is not None:
            self._text_embeddings([prompt])
        pixel_metrics = "psnr" in self.names or "ssim" in self.names
        dtype = torch.float64 if pixel_metrics else torch.float32
        data_device = pixel_device(self.device) if pixel_metrics else self.device
        exact = all_uint8(fc, fb)
        h, w = fc.size
        chunk = max(1, min(self.batch_size, _CHUNK_PIXELS // (h * w)))
        per_frame = {k: np.full(fc.n, np.nan) for k in self._keys(prompt)}
        for start in range(0, fc.n if per_frame else 0, chunk):
            stop = min(fc.n, start + chunk)
            x = metric_pixels(fc, start, stop, exact=exact, dtype=dtype, device=data_device)
            y = metric_pixels(fb, start, stop, exact=exact, dtype=dtype, device=data_device)
            feats = None
            if self._lpips is not None:
                feats = ref.lpips_features(self, (start, stop, exact), y)
            vals = self._compute_chunk(x, y, [prompt] * (stop - start), y_lpips=feats)
            for k, v in vals.items():
                if k in per_frame:
                    per_frame[k][start:stop] = v
        out = self._entries(per_frame)
        out.update(self._temporal(fc, fb))
        return out

    def _temporal(self, fc: "Frames", fb: "Frames") -> dict:
        """Entries of the temporal reference metrics for one checked pair (metrics.temporal)."""
        from .psnr_db import video_psnr
        from .temporal import NAMES, item_errors, not_applicable

        wanted = [n for n in NAMES if n in self.names]
        if not wanted:
            return {}
        if fc.n < 2:
            return {n: not_applicable(fc.n, n) for n in wanted}
        h, w = fc.size
        vals = item_errors(fc, fb, max(1, min(self.batch_size, _CHUNK_PIXELS // (h * w))), _cpu_or(self.device))
        out = {}
        for n in wanted:
            v = vals[n]
            entry = {"value": float(v.mean()), "per_frame": v.tolist(), "label": n,
                     "protocol": REGISTRY[n].protocol["definition"] + "; per transition, mean over transitions"}
            if n == "psnr_tdiff":
                entry["value"], n_inf = video_psnr(v)
                if n_inf:
                    entry["n_inf"] = n_inf
                    entry["note"] = (f"{n_inf} of {v.size} transitions change exactly as the baseline's (inf dB); "
                                     + ("the item is identical in its changes" if n_inf == v.size else
                                        f"value averages them as {PSNR_CAP_DB:g} dB"))
            out[n] = entry
        return out

    def _compute_chunk(self, x: "torch.Tensor", y: "torch.Tensor", prompts: list[str | None],
                       y_lpips: list["torch.Tensor"] | None = None) -> dict[str, np.ndarray]:
        """Per-frame values of every metric for one chunk of frames (NaN where CLIP has no prompt).

        ``x`` and ``y`` are ``[n, 3, H, W]``: both uint8, or both floats on [0, 1]. ``y_lpips``:
        the baseline chunk's LPIPS features, when already computed.
        """
        import torch

        from .clip_similarity import clip_frames
        from .lpips_distance import lpips_features, lpips_frames, lpips_from_features
        from .psnr_db import psnr_frames
        from .ssim_index import ssim_frames

        vals: dict[str, np.ndarray] = {}
        if "psnr" in self.names:
            vals["psnr"] = psnr_frames(x, y).cpu().numpy()
        if "ssim" in self.names:
            vals["ssim"] = ssim_frames(x, y, window=self.protocol.ssim, data_range=self.protocol.data_range).cpu().numpy()
        if self._lpips is not None:
            spatial = self.protocol.lpips_spatial == "upsampled_map_mean"
            if y_lpips is not None:
                fx = lpips_features(self._lpips, x, self.batch_size)
                vals["lpips"] = lpips_from_features(self._lpips, fx, y_lpips,
                                                    spatial_size=tuple(x.shape[-2:]) if spatial else None).numpy()
            else:
                vals["lpips"] = lpips_frames(self._lpips, x, y, self.batch_size, spatial=spatial).numpy()
        rows = [j for j, p in enumerate(prompts) if p is not None]
        if self._clip is not None and rows:
            sel = torch.tensor(rows, device=x.device)
            text = torch.stack([self._text_cache[prompts[j]] for j in rows])
            for key, z in (("clip_cached", x), ("clip_baseline", y)):
                v = np.full(len(prompts), np.nan)
                v[rows] = clip_frames(self._clip, z.index_select(0, sel), text, self.batch_size).numpy()
                vals[key] = v
        return vals

    def _keys(self, prompt: str | None) -> list[str]:
        keys = [n for n in self.names if n in _FRAMEWISE]
        if "clip" in self.names and prompt is not None:
            keys += ["clip_cached", "clip_baseline"]
        return keys

    def _entries(self, per_frame: dict[str, np.ndarray]) -> dict:
        labels = self.labels
        out: dict[str, dict] = {}
        for k, v in per_frame.items():
            label = labels["clip"] if k.startswith("clip_") else labels[k]
            if k == "psnr":
                value, v, n_inf = psnr_item(v, self.protocol)
                out[k] = {"value": value, "per_frame": v.tolist(), "label": label}
                if n_inf:
                    out[k]["n_inf"] = n_inf
                    out[k]["note"] = (
                        f"{n_inf} of {v.size} frames identical to the baseline (inf dB); "
                        + ("the item is identical" if n_inf == v.size else
                           "the pooled MSE includes them as 0" if self.protocol.psnr == "pooled_video" else
                           f"value averages them as {PSNR_CAP_DB:g} dB")
                    )
            else:
                out[k] = {"value": float(v.mean()), "per_frame": v.tolist(), "label": label}
            if k in ("psnr", "ssim", "lpips"):
                out[k]["protocol"] = self.protocol.describe(k)
        if "clip_cached" in per_frame:
            d = per_frame["clip_cached"] - per_frame["clip_baseline"]
            out["clip_delta"] = {
                "value": out["clip_cached"]["value"] - out["clip_baseline"]["value"],
                "per_frame": d.tolist(),
                "label": labels["clip"],
            }
        return out


class Reference:
    """A baseline prepared by :meth:`Scorer.reference`: its frames, and its LPIPS features per chunk once computed."""

    def __init__(self, frames: "Frames", raw: Any):
        self.frames = frames
        self.raw = raw
        self._lpips: dict[tuple, list["torch.Tensor"]] = {}
        self.feature_computations = 0  # how often the baseline's LPIPS features were computed (once per chunk)

    def lpips_features(self, scorer: Scorer, chunk: tuple, pixels: "torch.Tensor") -> list["torch.Tensor"]:
        if chunk not in self._lpips:
            from .lpips_distance import lpips_features

            self._lpips[chunk] = lpips_features(scorer._lpips, pixels, scorer.batch_size)
            self.feature_computations += 1
        return self._lpips[chunk]


def _cpu_or(device: Any) -> Any:
    """Where the model-free float64 pixel work runs: the device, except MPS (no float64)."""
    from .device import pixel_device

    return pixel_device(device)


def _chunks(items: list[tuple[int, int]], size: int) -> Iterable[list[tuple[int, int, int]]]:
    """Split the frames of (item, n_frames) into chunks of ``size`` frames: lists of (item, start, stop)."""
    segs: list[tuple[int, int, int]] = []
    room = size
    for i, n in items:
        s = 0
        while s < n:
            take = min(room, n - s)
            segs.append((i, s, s + take))
            s += take
            room -= take
            if room == 0:
                yield segs
                segs, room = [], size
    if segs:
        yield segs


def _stack(parts: list["torch.Tensor"]) -> "torch.Tensor":
    """Concatenate frame chunks; a single chunk is used as is (a video usually fills whole chunks)."""
    import torch

    return parts[0] if len(parts) == 1 else torch.cat(parts)
