"""The Ollama stand-in for the benchmarks: ``OllamaStub``, its replies, and
``point_at`` / ``PRIMARY`` to aim stage 7 at it.

There is one stand-in, ``tests/services/ollama_stub.py`` (the tests start it as one of
their real services). It imports nothing from the tests package, so it is loaded here
from its file, found relative to this one: bench/ imports nothing from ``tests`` and
works from any working directory.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_FILE = Path(__file__).resolve().parent.parent / "tests" / "services" / "ollama_stub.py"
_NAME = "galleryflow_bench_ollama_stub"


def _load():  # type: ignore[no-untyped-def]
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    spec = importlib.util.spec_from_file_location(_NAME, _FILE)
    assert spec is not None and spec.loader is not None, f"cannot load {_FILE}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module  # before running it: its dataclasses look themselves up here
    spec.loader.exec_module(module)
    return module


_stub = _load()

OllamaStub = _stub.OllamaStub
Good = _stub.Good
Slow = _stub.Slow
PRIMARY = _stub.PRIMARY
point_at = _stub.point_at

__all__ = ["PRIMARY", "Good", "OllamaStub", "Slow", "point_at"]
