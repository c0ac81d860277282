"""Writes ``musiq_golden.npz``: pyiqa's OWN MUSIQ code on fixed images, for tests/metrics/test_musiq.py.

pyiqa cannot be installed beside this project, so its files are read straight out of the wheel and
imported under small stubs (``pyiqa.utils.registry.ARCH_REGISTRY``, ``pyiqa.utils.download_util``;
the real ``pyiqa/__init__.py`` and ``pyiqa/matlab_utils/__init__.py`` are never run, they import
most of pyiqa). VBench's ``transform`` is taken from the vbench wheel's ``imaging_quality.py``
(its source, compiled alone) and applied as ``technical_quality`` does.

Wheels (from PyPI, with ``pip download --no-deps pyiqa==0.1.16 vbench==0.1.5``):

* ``pyiqa-0.1.16-py3-none-any.whl``  sha256 42bbcf1c274a8b53f040a3ec5ec304a15b7725afb5a85b81050e9cc7e6d09ed4
* ``vbench-0.1.5-py3-none-any.whl``  sha256 13266ed4715d91a7669ab58484b9e010bc91bb96e129d414fb512d4937890023

Run from the repository root (needs torch, torchvision, huggingface_hub, numpy)::

    PYTHONPATH=$PWD .venv/bin/python tests/metrics/data/make_musiq_golden.py \\
        --pyiqa-wheel /tmp/pyiqa_dl/pyiqa-0.1.16-py3-none-any.whl \\
        --vbench-wheel /tmp/vb_dl/vbench-0.1.5-py3-none-any.whl

The weights are our seeded random ones (``metrics.musiq.build_musiq(None)``), loaded into pyiqa's
``MUSIQ`` with ``strict=True`` (which also proves the parameter names match). Recorded per image:
pyiqa's MOS on the image as is (``mos_*``), its multi-scale patch tensor's shape, last three columns
(hashed position, scale index, mask) and two checksums (``patch_*``), and VBench's per-frame
imaging-quality values (``vbench_*``: transform, one frame at a time, score / 100). Also the
``repr`` of every leaf module (``leaf_modules``, JSON) and pyiqa's SPAQ URL.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import json
import shutil
import sys
import tempfile
import types
import zipfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
PYIQA_FILES = ["pyiqa/archs/musiq_arch.py", "pyiqa/archs/arch_util.py", "pyiqa/archs/constants.py",
               "pyiqa/matlab_utils/padding.py", "pyiqa/data/multiscale_trans_util.py", "pyiqa/version.py"]
SEED = 20240601
SHAPES = {"a": (40, 56), "b": (64, 48), "c": (10, 561)}  # c: longer side > 512, and 512/561*561 -> 511


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def load_pyiqa(wheel: Path, root: Path) -> types.ModuleType:
    """pyiqa's musiq_arch module, imported from the wheel's files under stub packages."""
    with zipfile.ZipFile(wheel) as z:
        for name in PYIQA_FILES:
            z.extract(name, root)
    for pkg in ["pyiqa", "pyiqa.archs", "pyiqa.data", "pyiqa.utils", "pyiqa.matlab_utils"]:
        mod = types.ModuleType(pkg)
        mod.__path__ = [str(root.joinpath(*pkg.split(".")))]  # submodules load from the wheel's files
        sys.modules[pkg] = mod

    class _Registry:
        def register(self, obj=None):
            return obj if obj is not None else (lambda o: o)

    registry = types.ModuleType("pyiqa.utils.registry")
    registry.ARCH_REGISTRY = _Registry()
    sys.modules["pyiqa.utils.registry"] = registry
    download = types.ModuleType("pyiqa.utils.download_util")

    def _no_download(url, *a, **k):
        raise RuntimeError(f"golden generation must not download ({url})")

    download.load_file_from_url = _no_download
    sys.modules["pyiqa.utils.download_util"] = download
    padding = importlib.import_module("pyiqa.matlab_utils.padding")
    sys.modules["pyiqa.matlab_utils"].ExactPadding2d = padding.ExactPadding2d
    sys.modules["pyiqa.matlab_utils"].exact_padding_2d = padding.exact_padding_2d
    return importlib.import_module("pyiqa.archs.musiq_arch")


def load_vbench_transform(wheel: Path):
    """``transform`` from vbench/imaging_quality.py, compiled alone (the module imports pyiqa)."""
    with zipfile.ZipFile(wheel) as z:
        src = z.read("vbench/imaging_quality.py").decode()
    fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "transform")
    from torchvision import transforms

    ns: dict = {"transforms": transforms}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), "vbench/imaging_quality.py", "exec"), ns)
    return ns["transform"]


def checksums(t: torch.Tensor) -> tuple[float, float]:
    """Sum, and a position-weighted sum (catches reordered patches or pixels)."""
    v = t.double().reshape(-1)
    w = torch.arange(v.numel(), dtype=torch.float64) % 997 + 1
    return float(v.sum()), float((v * w).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pyiqa-wheel", type=Path, default=Path("/tmp/pyiqa_dl/pyiqa-0.1.16-py3-none-any.whl"))
    ap.add_argument("--vbench-wheel", type=Path, default=Path("/tmp/vb_dl/vbench-0.1.5-py3-none-any.whl"))
    ap.add_argument("--out", type=Path, default=HERE / "musiq_golden.npz")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from metrics.musiq import build_musiq

    tmp = Path(tempfile.mkdtemp(prefix="pyiqa_src_"))
    arch = load_pyiqa(args.pyiqa_wheel, tmp)
    transform = load_vbench_transform(args.vbench_wheel)
    version = importlib.import_module("pyiqa.version").__version__

    ours = build_musiq(None, "cpu")
    # pyiqa.MUSIQ(pretrained=False): num_class 1 (the 'ava' switch is only on the download path),
    # the architecture VBench's MUSIQ(pretrained_model_path=...) builds.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ref = arch.MUSIQ(pretrained=False)
    same_init = all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), ours.state_dict().values()))
    ref.load_state_dict(ours.state_dict(), strict=True)
    ref.training = False  # what VBench does (top module only)

    # leaf modules' reprs (eps, kernel, stride, GELU form, ...): constants too small to move a
    # random-weight output past the tolerance; Dropout / Identity (rate 0) are not transcribed
    leaves = {n: repr(m) for n, m in ref.named_modules()
              if n and not list(m.children()) and not isinstance(m, (torch.nn.Dropout, torch.nn.Identity))}

    rng = np.random.default_rng(SEED)
    out: dict[str, np.ndarray] = {
        "pyiqa_version": np.array(version), "pyiqa_wheel_sha256": np.array(_sha256(args.pyiqa_wheel)),
        "vbench_wheel_sha256": np.array(_sha256(args.vbench_wheel)),
        "spaq_url": np.array(arch.default_model_urls["spaq"]), "seeded_init_equals_pyiqa": np.array(same_init),
        "leaf_modules": np.array(json.dumps(leaves, sort_keys=True)),
    }
    for name, (h, w) in SHAPES.items():
        img = rng.integers(0, 256, size=(3, h, w), dtype=np.uint8)
        out[f"img_{name}"] = img
        x = torch.from_numpy(img).float().unsqueeze(0) / 255.0
        with torch.no_grad():
            out[f"mos_{name}"] = ref(x).double().numpy()
            p = arch.get_multiscale_patches((x - 0.5) * 2, **ref.data_preprocess_opts)
        out[f"patch_shape_{name}"] = np.array(p.shape)
        out[f"patch_cols_{name}"] = p[0, :, -3:].numpy().astype(np.int16)
        out[f"patch_sums_{name}"] = np.array(checksums(p[..., :-3]))

    # VBench's per-frame values: a 2-frame clip of image a and its negative, and image c (resized)
    for name, frames in {"clip_a": np.stack([out["img_a"], 255 - out["img_a"]]), "c": out["img_c"][None]}.items():
        images = transform(torch.Tensor(frames.transpose(0, 2, 3, 1)).permute(0, 3, 1, 2), "longer")
        vals = []
        for i in range(len(images)):
            with torch.no_grad():
                vals.append(float(ref(images[i].unsqueeze(0))) / 100.0)
        out[f"vbench_{name}"] = np.array(vals)
        out[f"vbench_size_{name}"] = np.array(images.shape[-2:])
    shutil.rmtree(tmp, ignore_errors=True)
    np.savez_compressed(args.out, **out)
    print(f"pyiqa {version}; seeded init equals pyiqa's: {same_init}; wrote {args.out} "
          f"({args.out.stat().st_size} bytes)")
    for k in sorted(out):
        if k.startswith(("mos_", "vbench_")):
            print(k, out[k].ravel().tolist())


if __name__ == "__main__":
    main()
