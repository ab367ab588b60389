"""galleryflow.torch_compat: torchvision imports beside the CPU torch, in fresh processes
(an import is once per process, so each case gets its own interpreter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# `make test` installs the `ai` extra (torch 2.13 CPU + the registry's torchvision):
# a missing torch or torchvision is an install fault, reported as an import error.
import torch  # noqa: F401

pytestmark = pytest.mark.ai
REPO = Path(__file__).resolve().parent.parent


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=240)


def _extension_loads() -> bool:
    out = _python(
        "import torch, importlib.util, pathlib\n"
        "spec = importlib.util.find_spec('torchvision')\n"
        "so = sorted(pathlib.Path(spec.submodule_search_locations[0]).glob('_C*.so'))\n"
        "try:\n    torch.ops.load_library(str(so[0])); print('loads')\n"
        "except Exception:\n    print('broken')\n"
    )
    return out.stdout.strip().endswith("loads")


def test_open_clip_and_torchvision_transforms_import_through_the_shim():
    out = _python(
        "from galleryflow.torch_compat import ensure_torchvision\n"
        "state = ensure_torchvision()\n"
        "import torchvision, open_clip\n"
        "from torchvision import transforms\n"
        "assert ensure_torchvision() == state  # idempotent\n"
        "print(state, transforms.CenterCrop(4).__class__.__name__)\n"
    )
    assert out.returncode == 0, out.stderr
    state, name = out.stdout.split()[-2:]
    assert name == "CenterCrop"
    assert state == ("native" if _extension_loads() else "shimmed")


def test_without_the_shim_the_broken_extension_stops_the_import():
    out = _python("import torchvision")
    if _extension_loads():  # a matching build (e.g. a GPU machine): torchvision just imports
        assert out.returncode == 0, out.stderr
        return
    assert out.returncode != 0
    assert "operator torchvision::nms does not exist" in out.stderr


def test_shimmed_ops_fail_loudly_rather_than_silently():
    out = _python(
        "import torch\n"
        "from galleryflow.torch_compat import import_torchvision\n"
        "tv = import_torchvision()\n"
        "try:\n"
        "    tv.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)\n"
        "except RuntimeError as exc:\n"
        "    print('refused:', str(exc)[:40])\n"
    )
    assert out.returncode == 0, out.stderr
    if _extension_loads():  # the real extension: nms runs and returns its kept indices
        assert "refused" not in out.stdout
        return
    assert "refused: Couldn't load custom C++ ops" in out.stdout
