"""NNPACK convolutions for LPIPS on CPU: same numbers as the default convolution, used only where they apply."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metrics.fast_conv import NnpackConv2d, nnpack_available, use_nnpack

pytestmark = pytest.mark.skipif(not nnpack_available(), reason="this torch build or CPU has no NNPACK")


def conv(cin: int, cout: int, k: int, **kw) -> torch.nn.Conv2d:
    torch.manual_seed(0)
    return torch.nn.Conv2d(cin, cout, k, padding=k // 2, **kw).eval()


@pytest.mark.parametrize("k", [3, 5])
def test_switched_layer_matches_default_convolution(k):
    m = conv(64, 128, k)
    x = torch.randn(3, 64, 48, 40)  # 1920 pixels: above the NNPACK threshold
    with torch.inference_mode():
        want = F.conv2d(x, m.weight, m.bias, padding=k // 2)
        assert use_nnpack(m) == 1 and type(m) is NnpackConv2d
        got = m(x)
        one_by_one = torch.cat([m(x[i : i + 1]) for i in range(3)])
    assert got.shape == want.shape
    # Winograd F(6x6, 3x3) rounds more than a direct sum: ~1e-5 of the largest output here;
    # LPIPS, a mean over normalised features, moves by ~1e-9 (test below).
    assert (got - want).abs().max() <= 5e-5 * want.abs().max()
    assert not torch.equal(got, want)  # a different algorithm really ran
    assert torch.equal(got, one_by_one)  # an image's result does not depend on its batch


def test_default_path_for_small_maps_autograd_and_other_dtypes():
    m = conv(64, 128, 3)
    assert use_nnpack(m) == 1
    small = torch.randn(2, 64, 20, 20)  # 400 pixels: below the threshold
    with torch.inference_mode():
        assert torch.equal(m(small), F.conv2d(small, m.weight, m.bias, padding=1))
    big = torch.randn(1, 64, 40, 40, requires_grad=True)
    out = m(big)  # autograd on: the default convolution, which has a backward
    out.sum().backward()
    assert big.grad is not None and torch.equal(out.detach(), F.conv2d(big.detach(), m.weight, m.bias, padding=1))
    assert use_nnpack(conv(64, 128, 3).double()) == 0  # float32 only


def test_only_eligible_layers_are_switched_and_state_dict_keys_stay():
    net = torch.nn.Sequential(
        conv(64, 128, 3), conv(128, 128, 1), conv(128, 128, 3, stride=2), conv(128, 128, 3, groups=2),
        conv(128, 128, 3, dilation=2), conv(128, 32, 3),  # the last one is too thin to gain
    )
    keys = list(net.state_dict())
    assert use_nnpack(net) == 1
    assert [type(m).__name__ for m in net] == ["NnpackConv2d"] + ["Conv2d"] * 5
    assert list(net.state_dict()) == keys


def test_a_layer_whose_nnpack_result_disagrees_is_not_switched(monkeypatch):
    real = torch._nnpack_spatial_convolution
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", lambda *a: real(*a) * 1.01)  # a broken NNPACK
    m = conv(64, 128, 3)
    assert use_nnpack(m) == 0 and type(m) is torch.nn.Conv2d


def test_lpips_with_nnpack_equals_direct_lpips_call():
    """Full-size frames, where every stride-1 AlexNet layer runs NNPACK, against plain lpips.LPIPS."""
    import lpips

    from metrics.lpips_distance import load_lpips, lpips_frames

    net = load_lpips("alex", "cpu", allow_random_weights=True)
    assert sum(type(m) is NnpackConv2d for m in net.module.modules()) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False).eval()
    ref.load_state_dict(net.module.state_dict())
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (1, 3, 480, 832), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-25, 26, a.shape), 0, 255).astype(np.uint8)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    with torch.no_grad():
        want = ref(ta.float() / 127.5 - 1, tb.float() / 127.5 - 1).flatten().double()
    got = lpips_frames(net, ta, tb)
    assert want.min() > 1e-4
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-7)
    assert lpips_frames(net, ta, ta.clone()).tolist() == [0.0]  # deterministic: identical frames give exactly 0


def _spin_probe(env_extra: dict[str, str], import_torch_first: bool) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    env.update(env_extra)
    code = (
        ("import torch\n" if import_torch_first else "")
        + "import os\nfrom metrics.device import prefer_short_openmp_spin as p\n"
        + "print(p(), os.environ.get('GOMP_SPINCOUNT'))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_short_openmp_spin_is_set_only_before_torch_and_never_over_the_users_choice():
    assert _spin_probe({}, import_torch_first=False) == ["True", "10000"]
    assert _spin_probe({}, import_torch_first=True) == ["False", "None"]  # too late: says so, sets nothing
    assert _spin_probe({"OMP_WAIT_POLICY": "active"}, import_torch_first=False) == ["True", "None"]
    assert _spin_probe({"GOMP_SPINCOUNT": "5"}, import_torch_first=False) == ["True", "5"]
