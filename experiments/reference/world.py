"""The reference world: a procedural text-to-video grammar and its matching clips.

A caption is "a {colour} {shape} moving {direction} on a {background} background"; its clip
is that shape, filled with that colour, sliding across a plain background in that direction.
Everything is generated in code from integers, so the world is identical on every machine:
no data set is downloaded. The reference Wan model and the reference CLIP are trained on it
(:mod:`experiments.reference.train`); the tests classify generated clips back into captions
with :func:`classify_clip`.

Example::

    from experiments.reference.world import WORLD, render_clip
    cap = WORLD.captions()[0]                       # a Caption
    clip = render_clip(cap, frames=9, size=32)      # float32 (frames, size, size, 3) in [0, 1]
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import numpy as np

# Well-separated RGB colours (0-255), so a dominant-colour classifier can read them back.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 200, 60),
    "blue": (45, 85, 235),
    "yellow": (240, 220, 40),
    "purple": (160, 55, 210),
    "white": (245, 245, 245),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (12, 12, 12),
    "gray": (105, 105, 105),
    "brown": (100, 60, 30),
}
SHAPES = ("circle", "square", "triangle", "diamond")
# direction -> unit step in (x, y) image coordinates (y grows downwards)
MOTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

# Words the captions use, added to the tokenizers' vocabularies.
VOCABULARY = tuple(dict.fromkeys(
    ["a", "moving", "on", "background", *COLOURS, *BACKGROUNDS, *SHAPES, *MOTIONS]
))


@dataclass(frozen=True)
class Caption:
    colour: str
    shape: str
    motion: str
    background: str

    @property
    def text(self) -> str:
        return f"a {self.colour} {self.shape} moving {self.motion} on a {self.background} background"

    def __str__(self) -> str:
        return self.text


def parse_caption(text: str) -> Caption:
    """The Caption of a grammar sentence; ValueError names the word that does not fit."""
    words = text.strip().lower().split()
    if len(words) != 9 or words[0] != "a" or words[3] != "moving" or words[5:7] != ["on", "a"] or words[8] != "background":
        raise ValueError(f"not a reference-world caption: {text!r} (expected 'a COLOUR SHAPE moving DIRECTION on a BACKGROUND background')")
    colour, shape, motion, background = words[1], words[2], words[4], words[7]
    for word, allowed in ((colour, COLOURS), (shape, SHAPES), (motion, MOTIONS), (background, BACKGROUNDS)):
        if word not in allowed:
            raise ValueError(f"caption {text!r}: {word!r} is not one of {', '.join(allowed)}")
    return Caption(colour, shape, motion, background)


@dataclass(frozen=True)
class World:
    """The caption grammar and its fixed split into training and held-out captions."""

    held_out_count: int = 20
    split_seed: int = 0

    def captions(self) -> list[Caption]:
        """Every caption of the grammar, in a fixed order."""
        return [Caption(c, s, m, b) for c, s, m, b in itertools.product(COLOURS, SHAPES, MOTIONS, BACKGROUNDS)]

    def held_out(self) -> list[Caption]:
        """Captions never shown in training: every colour and every motion appears among them."""
        rng = random.Random(self.split_seed)
        picked: list[Caption] = []
        # Cycle colours and motions so the held-out set covers each value of both.
        for i in range(self.held_out_count):
            colour = list(COLOURS)[i % len(COLOURS)]
            motion = list(MOTIONS)[i % len(MOTIONS)]
            while True:
                cap = Caption(colour, rng.choice(SHAPES), motion, rng.choice(list(BACKGROUNDS)))
                if cap not in picked:
                    break
            picked.append(cap)
        return picked

    def training(self) -> list[Caption]:
        held = set(self.held_out())
        return [c for c in self.captions() if c not in held]


WORLD = World()


def _shape_mask(shape: str, size: int, cx: float, cy: float, radius: float) -> np.ndarray:
    # Supersample 4x4 per pixel so edges are anti-aliased (smooth motion between frames).
    ss = 4
    coords = (np.arange(size * ss) + 0.5) / ss
    x, y = np.meshgrid(coords, coords)
    dx, dy = x - cx, y - cy
    if shape == "circle":
        inside = dx * dx + dy * dy <= radius * radius
    elif shape == "square":
        inside = (np.abs(dx) <= radius * 0.85) & (np.abs(dy) <= radius * 0.85)
    elif shape == "diamond":
        inside = np.abs(dx) + np.abs(dy) <= radius * 1.15
    elif shape == "triangle":  # pointing up
        inside = (dy <= radius * 0.8) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) * 0.6)
    else:
        raise ValueError(f"unknown shape {shape!r}; shapes: {', '.join(SHAPES)}")
    return inside.reshape(size, ss, size, ss).mean(axis=(1, 3))


def render_clip(caption: Caption, frames: int = 9, size: int = 32, jitter: int | None = None,
                only_frame: int | None = None) -> np.ndarray:
    """The clip of `caption`: float32 (frames, size, size, 3) in [0, 1].

    The shape travels 1/2 of the frame along its direction, centred; `jitter` (an integer seed,
    None = none) shifts its path and size slightly, to give training variety. `only_frame`
    renders just that frame (shape (size, size, 3)), for training on single frames.
    """
    if frames < 2 or size < 16:
        raise ValueError(f"render_clip needs frames >= 2 and size >= 16, got frames={frames}, size={size}")
    rng = np.random.default_rng(jitter) if jitter is not None else None
    radius = size * 0.16 * (1.0 + (rng.uniform(-0.12, 0.12) if rng else 0.0))
    across = size / 2 + (rng.uniform(-0.12, 0.12) * size if rng else 0.0)  # offset perpendicular to motion
    along_shift = rng.uniform(-0.06, 0.06) * size if rng else 0.0
    travel = size * 0.5
    ux, uy = MOTIONS[caption.motion]
    colour = np.array(COLOURS[caption.colour], np.float32) / 255
    background = np.array(BACKGROUNDS[caption.background], np.float32) / 255
    out = np.empty((frames, size, size, 3), np.float32)
    for f in range(frames) if only_frame is None else [only_frame]:
        along = size / 2 + along_shift + travel * (f / (frames - 1) - 0.5)
        cx, cy = (along, across) if ux else (across, along)
        if ux < 0:
            cx = size - cx
        if uy < 0:
            cy = size - cy
        mask = _shape_mask(caption.shape, size, cx, cy, radius)[..., None]
        out[f] = mask * colour + (1 - mask) * background
    return out if only_frame is None else out[only_frame]


@dataclass(frozen=True)
class Reading:
    """What :func:`classify_clip` sees in a clip."""

    colour: str
    background: str
    motion: str
    displacement: tuple[float, float]  # centroid travel (x, y) in pixels, first to last frame


def classify_clip(clip: np.ndarray) -> Reading:
    """Read colour, background and motion back from a clip (frames, H, W, 3) in [0, 1].

    Background: the grammar background nearest to the median border pixel. Foreground: pixels
    far from it; its colour is the grammar colour nearest to their median; its motion is the
    dominant axis and sign of the foreground centroid's travel from the first to the last frame.
    """
    clip = np.asarray(clip, np.float32)
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"classify_clip expects (frames, H, W, 3), got {clip.shape}")
    border = np.concatenate([clip[:, 0], clip[:, -1], clip[:, :, 0], clip[:, :, -1]]).reshape(-1, 3)
    bg_rgb = np.median(border, axis=0)
    background = _nearest(bg_rgb, BACKGROUNDS)
    dist = np.linalg.norm(clip - bg_rgb, axis=-1)  # (frames, H, W)
    fg = dist > 0.25
    colour = _nearest(np.median(clip[fg], axis=0), COLOURS) if fg.any() else "none"
    centroids = []
    h, w = clip.shape[1:3]
    ys, xs = np.mgrid[0:h, 0:w]
    for f in range(clip.shape[0]):
        weight = fg[f] * dist[f]
        total = weight.sum()
        centroids.append((float((weight * xs).sum() / total), float((weight * ys).sum() / total)) if total > 0 else (np.nan, np.nan))
    (x0, y0), (x1, y1) = centroids[0], centroids[-1]
    dx, dy = x1 - x0, y1 - y0
    if not np.isfinite(dx + dy):
        motion = "none"
    elif abs(dx) >= abs(dy):
        motion = "right" if dx > 0 else "left"
    else:
        motion = "down" if dy > 0 else "up"
    return Reading(colour=colour, background=background, motion=motion, displacement=(dx, dy))


def _nearest(rgb: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> str:
    names = list(palette)
    table = np.array([palette[n] for n in names], np.float32) / 255
    return names[int(np.argmin(np.linalg.norm(table - rgb, axis=-1)))]
