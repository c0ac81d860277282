"""The trained offline reference models: a Wan pipeline and a CLIP trained on a procedural world.

``model: {reference: wan}`` in a spec loads :data:`WAN_DIR` (a diffusers ``WanPipeline`` folder);
``metrics.clip_model: reference`` scores with :data:`CLIP_DIR` (an open_clip ``local-dir``
folder). Both were trained by ``python -m experiments.reference.train`` on the toy world of
:mod:`experiments.reference.world`; their numbers describe that world, not Wan or real CLIP.
The weights ship in the repository (``weights/``, with a sha256 manifest), so nothing is
trained or downloaded on a fresh machine. Importing this package does not import torch.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
CLIP_DIR = WEIGHTS_DIR / "clip"
REFERENCES: dict[str, str] = {"wan": "wan"}  # name -> its family (cache-support table, defaults); folder weights/<name>
# The value of metrics.clip_model that selects the reference CLIP.
REFERENCE_CLIP = "reference"
RETRAIN = "python -m experiments.reference.train"


class ReferenceUnavailable(RuntimeError):
    """The shipped reference weights are missing or do not match their manifest."""


def reference_names() -> list[str]:
    return sorted(REFERENCES)


def reference_family(name: str) -> str:
    return REFERENCES[name]


def reference_folder(name: str) -> Path:
    return WEIGHTS_DIR / name


def check_weights(name: str | None = None) -> None:
    """Raise ReferenceUnavailable unless every shipped file matches ``weights/SHA256SUMS``
    (and, given a reference model `name`, its folder is there)."""
    from experiments.reference.manifest import manifest_problems

    if name is not None and not (WEIGHTS_DIR / name / "model_index.json").is_file():
        raise ReferenceUnavailable(
            f"reference model {name!r} has no trained weights in {WEIGHTS_DIR / name} (this checkout ships "
            f"only: {', '.join(sorted(p.name for p in WEIGHTS_DIR.glob('*/'))) or 'nothing'}). "
            f"Train them (deterministic from a seed): `{RETRAIN}`"
        )
    problems = manifest_problems(WEIGHTS_DIR)
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise ReferenceUnavailable(
            f"the reference weights in {WEIGHTS_DIR} do not match their manifest ({shown}). "
            f"Restore them from git (`git checkout -- {WEIGHTS_DIR}`) or retrain: `{RETRAIN}`"
        )


def weights_digest() -> str:
    """sha256 of the manifest (so of every shipped file): which trained weights a result came from."""
    from experiments.reference.manifest import sha256_file

    manifest = WEIGHTS_DIR / "SHA256SUMS"
    return sha256_file(manifest) if manifest.is_file() else "missing"


def load_reference(name: str):
    """The trained reference pipeline `name` (float32, CPU), checked against the manifest first."""
    from experiments.families.tiny_parts import quiet_loading

    check_weights(name)
    from diffusers import WanPipeline

    with quiet_loading():
        pipe = WanPipeline.from_pretrained(str(reference_folder(name)), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def clip_model_id() -> str:
    """The open_clip model identifier of the reference CLIP (``local-dir:<folder>``)."""
    return f"local-dir:{CLIP_DIR}"
