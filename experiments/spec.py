"""The experiment spec: a YAML file validated into typed objects.

A spec names a model, the generation settings shared by every run, the prompts and
seeds, the cache methods with their sweep grids, optional optimization axes, the
metrics, timing and tracking settings. Everything a user can get wrong is reported as
one :class:`SpecError` naming the field, the value and what is allowed.

Example::

    spec = load_spec("configs/tiny.yaml", overrides=["generation.num_inference_steps=8"])
    print(spec.name, len(spec.prompts), spec.methods[0].name)
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from experiments.errors import SpecError
from experiments.untrusted_text import MAX_PROMPTS_BYTES, MAX_SPEC_BYTES, load_yaml, read_text_file, shorten
from metrics.registry import DEFAULT_NAMES, SCORED

DTYPES = ("float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda", "mps")


# Strict: a bool is not a number, 2.5 is not an int, "3" is not a number; NaN and inf are refused.
_STRICT = dict(frozen=True, strict=True, allow_inf_nan=False)

#: Largest value of each count a spec may ask for, and why (beyond it a run cannot finish or fit).
MAXIMA = {
    "height": (8192, "no supported family is trained beyond 4096 px; larger frames do not fit in memory"),
    "width": (8192, "no supported family is trained beyond 4096 px; larger frames do not fit in memory"),
    "num_frames": (1025, "the longest supported video models generate a few hundred frames"),
    "num_inference_steps": (1000, "diffusion schedulers have 1000 training timesteps"),
    "warmup": (100, "one warm-up per configuration is enough; each is a full generation"),
    "repeats": (100, "a median over more repeats adds nothing; each repeat is a full generation"),
    "batch_size": (4096, "metric batches beyond this do not fit in memory"),
    "seed": (2**63 - 1, "seeds are stored as signed 64-bit integers"),
    "seeds": (100_000, "each seed multiplies the number of generations"),
    "prompts": (100_000, "each prompt multiplies the number of generations"),
    "prompt_chars": (10_000, "text encoders read a few hundred tokens at most"),
}


def _at_most(name: str, value: Any, what: str | None = None) -> Any:
    limit, why = MAXIMA[name]
    if value is not None and value > limit:
        raise ValueError(f"{what or shorten(value)} is above the maximum {limit:,} ({why})")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", **_STRICT)


class ModelSpec(_Strict):
    """Where the pipeline comes from: exactly one of `id` (hub id), `path` (local folder), `tiny` (built in
    code, random weights) or `reference` (the trained offline reference model shipped in experiments/reference)."""

    id: str | None = Field(default=None, description="A Hugging Face hub id, e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers "
                           "(downloaded into the standard cache, HF_HOME; `repro fetch-weights` fetches it ahead).")
    path: str | None = Field(default=None, description="A local diffusers pipeline folder (one with model_index.json).")
    tiny: str | None = Field(default=None, description="A model family built in code with random weights (wan, flux, "
                             "...): offline plumbing runs; its outputs are not images of anything.")
    reference: str | None = Field(default=None, description="A trained offline reference model shipped in "
                                  "experiments/reference/weights (wan): the toy world's text-to-video model.")
    pipeline_class: str | None = Field(default=None, description="The diffusers pipeline class to load with (e.g. "
                                       "WanPipeline); default: the one model_index.json names. With tiny it must be "
                                       "the class that family is built as.")
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit) of model.id.")
    dtype: Literal["float32", "float16", "bfloat16"] = Field(default="float32", description="The pipeline's dtype.")
    component_dtypes: dict[str, Literal["float32", "float16", "bfloat16"]] = Field(
        default_factory=dict, description="Per-component dtype overrides, e.g. {vae: float32}; each name must be a "
                                          "component of the pipeline.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(default="auto", description="Where generations run; auto: "
                                                          "cuda, else mps, else cpu. It must exist on this machine.")
    trust_remote_code: bool = Field(default=False, description="Let diffusers run code from the model's repository "
                                    "(off unless set: remote code is never run silently).")
    vae_tiling: bool = Field(default=False, description="Enable the VAE's tiled decoding for every generation "
                             "(the optimizations.vae_tiling axis sweeps it instead).")
    scheduler: dict[str, float | int | str | bool] = Field(
        default_factory=dict, description="Overrides of the pipeline scheduler's config, e.g. {flow_shift: 5.0} (Wan: "
        "the official scripts' shift; the hub config says 3.0). Checked against the scheduler's own settings when "
        "the pipeline loads.")

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("id", "path", "tiny", "reference") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of model.id (a Hugging Face hub id), model.path (a local folder), "
                "model.tiny (a family built in code) or model.reference (the trained offline reference model); "
                f"got {given or 'none'}"
            )
        return self

    @field_validator("id")
    @classmethod
    def _hub_id(cls, v):
        # the hub's own rule (huggingface_hub validate_repo_id): 'name' or 'namespace/name', no '..' or '--'
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import validate_repo_id

        if v is not None:
            try:
                validate_repo_id(v)
            except HFValidationError as exc:
                raise ValueError(f"{v!r} is not a Hugging Face hub id ({str(exc).split('. ')[0].lower()}); "
                                 f"give 'organization/name', or model.path for a local folder") from None
        return v

    @field_validator("reference")
    @classmethod
    def _known_reference(cls, v):
        from experiments.reference import reference_names

        if v is not None and v not in reference_names():
            raise ValueError(f"unknown reference model {v!r}; reference models: {', '.join(reference_names())}")
        return v

    @property
    def source(self) -> str:
        if self.reference:
            return f"reference:{self.reference}"
        return self.id or self.path or f"tiny:{self.tiny}"


class GenerationSpec(BaseModel):
    """Pipeline keyword arguments shared by every generation. Unknown keys pass through to the pipeline."""

    model_config = ConfigDict(extra="allow", **_STRICT)

    height: int | None = Field(default=None, gt=0, description="Output height in pixels (default: the pipeline's); "
                               "a multiple of the family's VAE x patch factor.")
    width: int | None = Field(default=None, gt=0, description="Output width in pixels (default: the pipeline's); "
                              "a multiple of the family's VAE x patch factor.")
    num_frames: int | None = Field(default=None, gt=0, description="Frames of a video (video families only): k*4+1 "
                                   "(LTX-Video: k*8+1).")
    num_inference_steps: int = Field(default=28, gt=0, description="Denoising steps of every generation.")
    guidance_scale: float | None = Field(default=None, ge=0, description="Classifier-free guidance scale (default: "
                                         "the pipeline's).")
    negative_prompt: str | None = Field(default=None, description="The negative prompt of every generation.")

    @field_validator("height", "width", "num_frames", "num_inference_steps")
    @classmethod
    def _count_limits(cls, value, info):
        return _at_most(info.field_name, value)

    @model_validator(mode="after")
    def _extra_values(self):
        for key, value in (self.model_extra or {}).items():
            if key in _SET_BY_THE_SWEEP:
                raise ValueError(f"{key} is set by the sweep for every generation; remove it from generation")
            _plain_value(key, value)
        return self

    def pipeline_kwargs(self) -> dict[str, Any]:
        """The keyword arguments handed to the pipeline call (None means: use the pipeline's default)."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


#: Most values one range's grid may have (a grid beyond it is no resolution anyone can run or search).
MAX_GRID_VALUES = 10_000
#: Intervals of a float range without a step: min, min + (max - min) / 20, ..., max.
DEFAULT_INTERVALS = 20


class SweepRange(_Strict):
    """A parameter's range instead of a list, for `repro tune` (``threshold: {min: 0.0, max: 0.5}``).

    It stands for the grid ``min, min + step, ..., max``: `repro tune` searches that grid, a
    sweep never runs it (``repro sweep`` and ``validate`` say so). ``step`` is the resolution:
    1 for an integer parameter, ``(max - min) / 20`` for a float one unless given; it must divide
    ``max - min`` so that the grid ends at ``max``.
    """

    min: int | float = Field(description="The smallest value of the grid.")
    max: int | float = Field(description="The largest value of the grid (min < max).")
    step: int | float | None = Field(default=None, description="The grid's resolution; must divide max - min "
                                     "(default: 1 for an integer parameter, (max - min) / 20 for a float one).")

    @model_validator(mode="after")
    def _ordered(self):
        if not self.min < self.max:
            raise ValueError(f"a range needs min < max, got min {self.min}, max {self.max}")
        if self.step is not None:
            if self.step <= 0:
                raise ValueError(f"step must be > 0, got {self.step}")
            n = (self.max - self.min) / self.step
            if n > MAX_GRID_VALUES:
                raise ValueError(f"step {self.step} gives {n:,.0f} values over [{self.min}, {self.max}]; at most "
                                 f"{MAX_GRID_VALUES:,} (a coarser step)")
            if abs(n - round(n)) > 1e-6 or round(n) < 1:
                raise ValueError(f"step {self.step} does not divide max - min = {_clean(self.max - self.min)}: "
                                 f"the grid must end at max (e.g. step {_clean((self.max - self.min) / max(1, round(n)))})")
        return self

    def grid(self, integer: bool) -> list[int | float]:
        """The values the range stands for, ascending (integers for an integer parameter)."""
        if integer:
            step = int(self.step) if self.step is not None else 1
            return list(range(int(self.min), int(self.max) + 1, step))
        step = self.step if self.step is not None else (self.max - self.min) / DEFAULT_INTERVALS
        n = round((self.max - self.min) / step)
        return [_clean(self.min + k * step) for k in range(n)] + [float(self.max)]

    def describe(self) -> str:
        return f"{{min: {self.min}, max: {self.max}{f', step: {self.step}' if self.step is not None else ''}}}"


def _clean(value: float) -> float:
    """min + k * step without the float noise (0.07500000000000001 -> 0.075): the same value every time."""
    return float(round(value, 12)) + 0.0


class MethodSpec(_Strict):
    """One cache method: fixed `params` plus a `sweep` grid whose cartesian product gives the points.

    A sweep axis is a list of values, or (for `repro tune` only) a :class:`SweepRange`.
    """

    name: str = Field(description="A registered cache method (`repro methods` lists them), e.g. first_block_cache.")
    label: str | None = Field(default=None, description="The entry's name in tables and figures (default: name); "
                              "needed to tell apart two entries of the same method.")
    params: dict[str, Any] = Field(default_factory=dict, description="Fixed parameters of the method's config, "
                                   "checked against its fields, types and allowed ranges.")
    sweep: dict[str, list[Any] | SweepRange] = Field(
        default_factory=dict, description="Parameters to sweep: each a list of values (their cartesian product gives "
        "the points), or a range {min, max, step} that only `repro tune` searches.")
    calibrate: Literal["auto", "always", "never"] = Field(
        default="auto", description="Calibrated methods (MagCache, TeaCache): auto uses published values where the "
        "method has them for the model, else calibrates once per (model, scheduler, steps, resolution) and reuses it; "
        "always calibrates even when published values exist; never needs the values in params.")
    cfg_branch: Literal["cond", "uncond"] = Field(default="cond", description="Which calibration array to use when "
                                                  "the pipeline runs CFG as two passes.")

    @field_validator("sweep", mode="before")
    @classmethod
    def _axes(cls, sweep):
        """Each axis is a non-empty list or a range {min, max[, step]}; one message per mistake."""
        if not isinstance(sweep, dict):
            return sweep  # the type check says what a sweep is
        out = {}
        for key, values in sweep.items():
            if isinstance(values, dict):
                try:
                    values = SweepRange.model_validate(values)
                except ValidationError as exc:
                    errors = exc.errors()
                    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
                    loc = [str(p) for p in err["loc"] if p not in ("int", "float")]  # not the union's member tags
                    where = f".{loc[0]}" if loc else ""
                    shape = "a range is {min: A, max: B} or {min: A, max: B, step: S}"
                    if err["type"] == "extra_forbidden":
                        msg, where = f"unknown field {shorten(err['loc'][-1])}; {shape}", ""
                    elif err["type"] == "missing":
                        msg = f"required; {shape}"
                    elif err["type"] == "value_error":
                        msg = err["msg"].removeprefix("Value error, ")
                    else:
                        msg = f"must be a finite number (got {shorten(err.get('input'))})"
                    raise ValueError(f"sweep axis {key!r}{where}: {msg}") from None
            elif isinstance(values, list) and not values:
                raise ValueError(f"sweep axis {key!r} is an empty list; give at least one value")
            elif not isinstance(values, list):
                raise ValueError(f"sweep axis {key!r}: expected a list of values or a range {{min: A, max: B}} "
                                 f"(for `repro tune`), got {shorten(values)}")
            out[key] = values
        return out

    def ranges(self) -> dict[str, SweepRange]:
        """The axes given as ranges (searched by `repro tune`, never run by a sweep)."""
        return {k: v for k, v in self.sweep.items() if isinstance(v, SweepRange)}

    @property
    def display_name(self) -> str:
        return self.label or self.name


class _OptimizationsBase(_Strict):
    def axes(self) -> dict[str, list[Any]]:
        return {k: list(v) for k, v in self.model_dump().items()}


def _optimizations_spec() -> type[BaseModel]:
    """Acceleration knobs swept orthogonally to the cache grid: one list-valued field per registered axis
    (experiments.optimizations), defaulting to that axis' default alone."""
    from pydantic import create_model

    from experiments.optimizations import AXES

    fields: dict[str, Any] = {}
    for axis in AXES.values():
        kind = Literal[axis.choices] if axis.choices else type(axis.default)
        fields[axis.name] = (list[kind], Field(default_factory=lambda a=axis: [a.default], description=axis.doc))
    return create_model("OptimizationsSpec", __base__=_OptimizationsBase, __doc__=_OPTIMIZATIONS_DOC, **fields)


_OPTIMIZATIONS_DOC = """Optimization axes swept orthogonally to the cache grid (docs/optimizations.md).

Each axis is a list of values; every combination is crossed with every cache point, and each
combination gets its own uncached speed baseline, so a cache on top of an optimization is timed
next to that optimization alone."""


OptimizationsSpec = _optimizations_spec()


class MetricsSpec(_Strict):
    """What is scored, with which networks, under which protocol (docs/metrics.md)."""

    names: list[Literal[SCORED]] = Field(
        default_factory=lambda: list(DEFAULT_NAMES), description="The metrics to score, any of metrics.registry "
        "(left out: lpips, psnr, ssim, clip). A metric not listed appears nowhere.")
    lpips_net: Literal["alex", "vgg"] = Field(default="alex", description="LPIPS's backbone network.")
    clip_model: str = Field(default="ViT-B-32", description="An open_clip model name, local-dir:FOLDER, or reference: "
                            "the reference CLIP trained on the reference world (experiments/reference; its scores are "
                            "not comparable with published CLIP scores).")
    clip_pretrained: str = Field(default="laion2b_s34b_b79k", description="The open_clip weights of clip_model.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(default="auto", description="Where metrics run; auto: cuda, "
                                                          "else mps, else cpu.")
    batch_size: int = Field(default=16, gt=0, description="Frames per batch of the metric "
                            "networks (fewer for very large frames, to bound memory).")
    protocol: dict[str, Any] = Field(
        default_factory=dict, description="How PSNR/SSIM/LPIPS are computed and averaged (metrics.protocol), e.g. "
        "{psnr: pooled_video, ssim: uniform7, data_range: 1.0}; only non-default choices are kept, so a spec that "
        "leaves it out keeps its hash.")
    allow_random_weights: bool = Field(
        default=False, description="Only for tests and smoke runs: build the metric networks with random weights when "
        "pretrained ones are missing. Every score made that way is labelled [random weights].")

    @field_validator("batch_size")
    @classmethod
    def _limits(cls, value):
        return _at_most("batch_size", value)

    @property
    def clip_model_id(self) -> str:
        """The open_clip model identifier handed to the metrics package ("reference" -> its local-dir folder)."""
        from experiments.reference import REFERENCE_CLIP, clip_model_id

        return clip_model_id() if self.clip_model == REFERENCE_CLIP else self.clip_model

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, given):
        from metrics.protocol import CHOICES, DEFAULT, Protocol

        allowed = (*CHOICES, "data_range")
        unknown = [k for k in given if k not in allowed]
        if unknown:
            near = difflib.get_close_matches(str(unknown[0]), allowed, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ValueError(f"unknown protocol option {unknown[0]!r}{hint} Allowed: {', '.join(allowed)}")
        record = Protocol(**given).record()  # checks every value (ValueError names what is allowed)
        return {k: v for k, v in record.items() if v != getattr(DEFAULT, k)}

    def scoring_protocol(self):
        """The metrics.protocol.Protocol these settings ask for."""
        from metrics.protocol import Protocol

        return Protocol(**self.protocol)


class TimingSpec(_Strict):
    """How generations are timed (docs/timing.md).

    Every generation runs once: its quality run is its timed run, paired with the adjacent
    baseline run of the same item on the same worker. ``warmup`` uncached calls run once per
    worker (a newly compiled configuration is warmed once by the compile step itself).
    ``repeats`` > 1 adds targeted timing: for the first ``items`` items of the plan, each cached
    point is timed ``repeats`` times, interleaved with its baseline (B C B C ...), and the
    item's speedup is the median of those paired ratios.
    """

    warmup: int = Field(default=1, ge=0, description="Uncached pipeline calls once per worker, before its first "
                        "generation (not per generation).")
    repeats: int = Field(default=1, ge=1, description="Timed baseline/cached pairs per cached generation of a "
                         "targeted item (1: the quality run is the timed run).")
    items: int | Literal["all"] = Field(default=2, description="How many items (prompt, seed) of the plan, from the "
                                        "first, are targeted when repeats > 1; or all.")

    @field_validator("items")
    @classmethod
    def _items(cls, items):
        if isinstance(items, bool) or (isinstance(items, int) and items < 1):
            raise ValueError(f"timing.items must be an integer >= 1 or 'all', got {items!r}")
        return items

    @field_validator("warmup", "repeats")
    @classmethod
    def _limits(cls, value, info):
        return _at_most(info.field_name, value)


class WandbSpec(_Strict):
    """Weights & Biases, a projection of the results store made by `repro track` (docs/wandb.md)."""

    mode: Literal["auto", "online", "offline", "disabled"] = Field(
        default="auto", description="auto: online with credentials, offline without. --wandb-mode and W&B's own "
        "WANDB_MODE come first.")
    project: str = Field(default="diffusion-cache-repro", description="The W&B project (WANDB_PROJECT comes first).")
    entity: str | None = Field(default=None, description="The W&B entity (WANDB_ENTITY comes first).")
    tags: list[str] = Field(default_factory=list, description="Tags of every W&B run of the sweep.")
    artifact: bool = Field(default=True, description="Log the results (store, exports, figures) as a versioned "
                           "artifact at the end.")
    artifact_media: bool = Field(default=False, description="Include media/ in that artifact (large).")


class OutputSpec(_Strict):
    """Where a sweep writes (docs/results.md)."""

    dir: str | None = Field(default=None, description="The run directory (default: runs/<name>; --out comes first).")
    mp4: bool = Field(default=True, description="Also write a viewable MP4 of each video beside its lossless "
                      "frames (metrics never read it).")


class Spec(_Strict):
    """An experiment: one model, its generation settings, prompts x seeds, and the cache methods to sweep."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="The experiment's name: the default "
                      "run directory runs/<name> and the W&B group.")
    description: str | None = Field(default=None, description="Free text, kept with the results.")
    model: ModelSpec = Field(description="Where the pipeline comes from, and its dtypes and device.")
    generation: GenerationSpec = Field(default_factory=GenerationSpec, description="Pipeline arguments shared by "
                                       "every generation.")
    prompts: list[str] = Field(description="A list of prompts, {file: prompts.txt} (one prompt per line, # starts a "
                               "comment), or {preset: vbench | partiprompts | drawbench, limit: N, sample_seed: S, "
                               "revision: REV}.")
    prompt_set: dict[str, Any] | None = Field(default=None, description="Filled in from a prompts preset (source, "
                                              "revision, sha256, sampling); never set by hand.")
    seeds: list[int] = Field(description="Generator seeds (distinct integers >= 0); every prompt runs with each.")
    methods: list[MethodSpec] = Field(description="The cache methods and their grids: at least one entry.")
    plugins: list[str] = Field(default_factory=list, description="Modules of your own code that register cache "
                               "methods (imported only because they are named here).")
    optimizations: OptimizationsSpec = Field(default_factory=OptimizationsSpec, description="Optimization axes, "
                                             "crossed with the cache grid (each defaults to its unoptimized value).")
    metrics: MetricsSpec = Field(default_factory=MetricsSpec, description="What is scored, with which networks, "
                                 "under which protocol.")
    timing: TimingSpec = Field(default_factory=TimingSpec, description="Warm-up and timing repeats.")
    wandb: WandbSpec = Field(default_factory=WandbSpec, description="Weights & Biases tracking.")
    output: OutputSpec = Field(default_factory=OutputSpec, description="Where results are written.")

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, prompts):
        if not prompts:
            raise ValueError("no prompts given; list at least one prompt (or a file with one prompt per line)")
        _at_most("prompts", len(prompts), f"{len(prompts):,} prompts")
        for i, p in enumerate(prompts):
            if not p.strip():
                raise ValueError(f"prompt {i} is empty")
            _at_most("prompt_chars", len(p), f"prompt {i} ({len(p):,} characters)")
        return prompts

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, seeds):
        if not isinstance(seeds, list) or not seeds:
            raise ValueError("seeds must be a non-empty list of integers, e.g. [0, 1]")
        _at_most("seeds", len(seeds), f"{len(seeds):,} seeds")
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, int):
                raise ValueError(f"seed {shorten(s)} is not an integer; seeds must be integers, e.g. [0, 1]")
            if s < 0:
                raise ValueError(f"seed {s} is negative; seeds must be integers >= 0")
            _at_most("seed", s, f"seed {shorten(s)}")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds contain duplicates: {shorten(seeds)}")
        return seeds

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods):
        if not methods:
            raise ValueError("no cache methods given; add at least one entry under `methods`")
        labels = [m.display_name for m in methods]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"method entries {dupes} appear twice; give each a distinct `label`")
        return methods

    @property
    def run_dir(self) -> Path:
        return Path(self.output.dir) if self.output.dir else Path("runs") / self.name

    def spec_hash(self) -> str:
        """The experiment's hash: every field that determines results, none that only says where they go
        (``output``), how they are tracked (``wandb``) or what the experiment is called (name, description)."""
        return stable_hash(result_fields(self.model_dump(mode="json")))


def refuse_ranges(spec: Spec) -> None:
    """SpecError when a method entry gives a range: a sweep runs lists of values; ranges are `repro tune`'s."""
    for i, m in enumerate(spec.methods):
        for key, axis in m.ranges().items():
            raise SpecError(f"methods[{i}] ({m.display_name}): sweep.{key} is a range {axis.describe()}: ranges are "
                            f"searched by `repro tune SPEC --max METRIC=VALUE` (docs/tune.md); a sweep runs lists of "
                            f"values, e.g. {key}: [{axis.min}, {axis.max}]")


#: Fields that do not change any result: where it is written, how it is tracked, what it is called.
NOT_RESULTS = ("name", "description", "output", "wandb")
#: Fields fixed for the life of a run directory: change one and every stored generation or score is stale.
#: (Adding methods, thresholds, prompts, seeds, optimizations or metrics is fine: new keys, old ones reused.)
RUN_DIR_FIXED = ("model", "generation", "timing", "metrics.lpips_net", "metrics.clip_model",
                 "metrics.clip_pretrained", "metrics.allow_random_weights")


def result_fields(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k not in NOT_RESULTS}


def fixed_changes(stored: dict, spec: "Spec") -> list[str]:
    """``field: old -> new`` for every run-directory-fixed field (:data:`RUN_DIR_FIXED`) that differs."""
    new = spec.model_dump(mode="json")
    try:
        old = Spec.model_validate(stored).model_dump(mode="json")  # defaults filled in the same way
    except ValidationError:  # a spec stored by an older version: compare what it says
        old = stored
    changes: list[str] = []
    for path in RUN_DIR_FIXED:
        a, b = _at(old, path), _at(new, path)
        changes += [f"{where}: {x!r} -> {y!r}" for where, x, y in _differences(path, a, b)]
    return changes


def _at(tree: dict, path: str) -> Any:
    for part in path.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _differences(where: str, a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _differences(f"{where}.{k}", a.get(k), b.get(k))
        return out
    return [] if a == b else [(where, a, b)]


#: Pipeline arguments the sweep sets itself for every generation.
_SET_BY_THE_SWEEP = ("prompt", "generator", "output_type", "callback_on_step_end", "return_dict")


def _plain_value(key: str, value: Any) -> None:
    """A pass-through pipeline argument must be plain YAML data: finite numbers, strings, booleans, lists."""
    if isinstance(value, float) and value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{key}={shorten(value)} is not a finite number")
    if isinstance(value, (list, tuple)):
        for v in value:
            _plain_value(key, v)
    elif isinstance(value, dict):
        raise ValueError(f"{key}={shorten(value)}: a mapping cannot be passed to the pipeline")
    elif value is not None and not isinstance(value, (str, int, float, bool)):
        raise ValueError(f"{key}={shorten(value)} is not a number, string, boolean or list")


def stable_hash(obj: Any) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys), first 16 hex digits."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Loading


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = (), plan_only: bool = False) -> Spec:
    """Read, override, validate. Raises SpecError with one clear message on any problem.

    A prompt-set preset that is not in the cache raises PromptSetUnavailable (exit 3); with
    ``plan_only`` (validate, fetch-weights) it is replaced by labelled stand-ins instead, and
    ``spec.prompt_set["fetched"]`` is False: such a spec is for planning, never for running.
    """
    path = Path(path)
    raw = read_yaml_mapping(path)
    for item in overrides:
        apply_override(raw, item)
    raw = _resolve_prompts(raw, path.parent, plan_only)
    spec = validate_spec_data(raw, str(path))
    from experiments.feasibility import check_feasible
    from experiments.methods import check_method_spec, load_plugins

    load_plugins(spec.plugins, where=f"{path}: plugins")
    for i, m in enumerate(spec.methods):
        check_method_spec(m, where=f"{path}: methods[{i}] ({m.name})", generation=spec.generation)
    check_feasible(spec, where=str(path))
    return spec


def read_yaml_mapping(path: Path) -> dict:
    data = load_yaml(read_text_file(path, "spec file", MAX_SPEC_BYTES), where=str(path))
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec must be a YAML mapping (name:, model:, prompts:, ...), got {type(data).__name__}")
    return data


def apply_override(raw: dict, item: str) -> None:
    """Apply one `--set key.path=value`; the value is parsed as YAML (numbers, lists, booleans)."""
    if "=" not in item:
        raise SpecError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. generation.num_inference_steps=20")
    if len(item) > 100_000:
        raise SpecError(f"--set {shorten(item)}: longer than 100,000 characters; put large values in the spec")
    key, _, text = item.partition("=")
    value = load_yaml(text, where=f"--set {shorten(item)}") if text else ""
    parts = key.strip().split(".")
    node: Any = raw
    for depth, part in enumerate(parts[:-1]):
        node = _step(node, part, item, create=True)
    last = parts[-1]
    if isinstance(node, list):
        index = _index(node, last, item)
        node[index] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise SpecError(f"--set {item!r}: {'.'.join(parts[:-1])} is not a mapping or list")


def _step(node: Any, part: str, item: str, create: bool) -> Any:
    if isinstance(node, list):
        return node[_index(node, part, item)]
    if isinstance(node, dict):
        if part not in node or node[part] is None:
            node[part] = {}
        return node[part]
    raise SpecError(f"--set {item!r}: cannot descend into {part!r} (not a mapping or list)")


def _index(node: list, part: str, item: str) -> int:
    try:
        index = int(part)
        node[index]
    except (ValueError, IndexError):
        raise SpecError(f"--set {item!r}: {part!r} is not a valid index into a list of {len(node)}") from None
    return index


def _resolve_prompts(raw: dict, base: Path, plan_only: bool = False) -> dict:
    prompts = raw.get("prompts")
    if "prompt_set" in raw:
        raise SpecError("prompt_set: filled in from `prompts: {preset: ...}`; do not set it by hand")
    if isinstance(prompts, dict) and "preset" in prompts:
        from experiments import prompt_sets

        request = prompt_sets.PromptSetRequest.from_spec(prompts)
        try:
            loaded = prompt_sets.load(request)
        except prompt_sets.PromptSetUnavailable as exc:
            if not plan_only:
                raise
            loaded = prompt_sets.placeholder(request, str(exc))
        return {**raw, "prompts": loaded.prompts, "prompt_set": loaded.record}
    if isinstance(prompts, dict) and set(prompts) == {"file"}:
        if not isinstance(prompts["file"], str) or not prompts["file"]:
            raise SpecError(f"prompts.file: expected the path of a text file, got {shorten(prompts['file'])}")
        file = Path(prompts["file"])
        file = file if file.is_absolute() else base / file
        if not file.is_file():
            raise SpecError(f"prompts.file: prompts file not found: {shorten(str(file))[1:-1]} (one prompt per line)")
        text = read_text_file(file, "prompts file", MAX_PROMPTS_BYTES)
        lines = [ln.strip() for ln in text.splitlines()]
        raw = {**raw, "prompts": [ln for ln in lines if ln and not ln.startswith("#")]}
        if not raw["prompts"]:
            raise SpecError(f"prompts.file: {file} holds no prompts (one prompt per line, # starts a comment)")
    elif prompts is not None and not isinstance(prompts, list):
        raise SpecError("prompts: expected a list of strings, {file: prompts.txt} or {preset: NAME, limit: N}, got "
                        + type(prompts).__name__)
    return raw


def validate_spec_data(raw: dict, where: str) -> Spec:
    """A Spec from parsed data; any problem is one SpecError line naming `where`, the field and the value."""
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = _format_loc(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            field = err["loc"][-1]
            parent = _model_at(err["loc"][:-1])
            allowed = sorted(parent.model_fields) if parent else []
            near = difflib.get_close_matches(str(field), allowed, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            msg = f"unknown field {shorten(field)}{hint} Allowed: {', '.join(allowed)}"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif "input" in err and err["type"] not in ("value_error",):
            msg = f"{msg} (got {shorten(err['input'])})"
        raise SpecError(f"{where}: {loc}: {msg}") from None


def _format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        part = part if isinstance(part, int) else shorten(str(part))[1:-1]
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top level)"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = Spec
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        inner = getattr(ann, "__args__", None)
        candidates = [ann, *(inner or ())]
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            return None
        model = nxt
    return model
