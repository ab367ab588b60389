"""Make ``import torchvision`` work beside the CPU build of torch.

Why this exists: ``torch==2.13.0`` installs from a CPU wheel, but the registry's
``torchvision==0.28.0`` (the build that matches torch 2.13, pinned in
``requirements.lock``) is a CUDA build. Its C++ extension (``torchvision/_C.so``)
cannot load against the CPU torch, so the custom operators it would register never
exist, and ``import torchvision`` dies in ``torchvision/_meta_registrations.py``::

    RuntimeError: operator torchvision::nms does not exist

because that module registers fake (meta) kernels for ``torchvision::nms`` and
``torchvision::qnms`` unconditionally, while its other registrations are skipped
when the extension is missing.

The fix: when (and only when) the extension cannot load, define the *schemas* of
those two operators ourselves, before torchvision is imported. The pure-Python
parts of torchvision then import normally: ``transforms`` (which open_clip uses for
preprocessing), ``models`` and ``datasets``. ``torchvision.ops`` stays unusable:
calling ``nms`` or ``roi_align`` raises torchvision's own "Couldn't load custom C++
ops" error. Nothing galleryflow runs needs those operators.

When a working torchvision is installed (a matching CPU or CUDA build), the
extension loads, the operators are registered by torchvision itself and this
module does nothing.

Everything that imports open_clip, pyiqa or torchvision calls
:func:`ensure_torchvision` (or :func:`import_torchvision`) first.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

_log = logging.getLogger(__name__)

# The operators torchvision's Python code touches at import time whatever the
# extension state (see torchvision/_meta_registrations.py: register_fake(...)).
# Schemas copied from torchvision's C++ sources (torchvision/csrc/ops/nms.cpp).
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)

_lock = threading.Lock()
_state: str | None = None  # "native" | "shimmed" | "absent", once decided
# The Library must stay referenced: when it is garbage-collected, torch removes
# the definitions it made.
_library: Any = None


def _operator_exists(name: str) -> bool:
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def _extension_path() -> Path | None:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        for candidate in sorted(Path(folder).glob("_C*.so")) + sorted(Path(folder).glob("_C*.pyd")):
            return candidate
    return None


def _extension_loads(path: Path) -> bool:
    """Try what torchvision's ``extension.py`` does; loading it twice is harmless."""
    import torch

    try:
        torch.ops.load_library(str(path))
        return True
    except (ImportError, OSError) as exc:
        _log.debug("torchvision extension %s does not load: %s", path, exc)
        return False


def ensure_torchvision() -> str:
    """Prepare torch so that ``import torchvision`` succeeds; idempotent and thread-safe.

    Returns how torchvision's operators are provided:

    - ``"native"``: torchvision's extension loads (or torchvision was already
      imported); nothing was changed;
    - ``"shimmed"``: the extension cannot load; the ``torchvision::nms`` and
      ``torchvision::qnms`` schemas were defined so the Python parts import, and
      ``torchvision.ops`` is unusable;
    - ``"absent"``: torchvision is not installed (open_clip will say so itself).
    """
    global _state, _library
    with _lock:
        if _state is not None:
            return _state
        if "torchvision" in sys.modules:
            _state = "native"
            return _state
        if importlib.util.find_spec("torchvision") is None:
            _state = "absent"
            return _state
        import torch

        path = _extension_path()
        if path is not None and _extension_loads(path):
            _state = "native"
            return _state
        missing = [schema for schema in _SCHEMAS if not _operator_exists(schema.split("(", 1)[0])]
        if missing:
            _library = torch.library.Library("torchvision", "DEF")
            for schema in missing:
                _library.define(schema)
        _log.info(
            "torchvision's C++ extension does not load with this torch (%s): "
            "defined the torchvision::nms/qnms schemas so its Python parts import; "
            "torchvision.ops is unavailable",
            torch.__version__,
        )
        _state = "shimmed"
        return _state


def import_torchvision() -> ModuleType:
    """``import torchvision`` after :func:`ensure_torchvision`."""
    ensure_torchvision()
    import torchvision

    return torchvision


def torchvision_state() -> str | None:
    """What :func:`ensure_torchvision` decided, or None if it has not run."""
    return _state
