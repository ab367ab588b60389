"""The OllamaEndpoint block: settings defaults, a saved block by name, secrets kept secret."""

from __future__ import annotations

import pytest

from blocks.ollama import (
    OllamaEndpoint,
    endpoint_from_settings,
    processor_split,
    redact_host,
    resolve_endpoint,
    same_model,
)
from galleryflow.core.settings import Settings
from galleryflow.core.stages import StageError


def test_settings_defaults_need_no_block(gf_home: Settings) -> None:
    gf_home.ollama.model = "qwen2.5vl:7b"
    endpoint = resolve_endpoint(gf_home)
    assert endpoint.host == "http://127.0.0.1:11434" and endpoint.model == "qwen2.5vl:7b"
    assert endpoint == endpoint_from_settings(gf_home)


@pytest.mark.usefixtures("prefect_api")
def test_named_block_overrides_settings(gf_home: Settings) -> None:
    OllamaEndpoint(host="http://gpu-box:11434", model="llava:13b", fallback_model="llava:7b",
                   api_key="s3cret-token", options={"temperature": 0.1, "num_ctx": 8192},
                   ).save("studio-gpu", overwrite=True)
    gf_home.ollama.block_name = "studio-gpu"
    endpoint = resolve_endpoint(gf_home)
    assert (endpoint.host, endpoint.model, endpoint.fallback_model) == (
        "http://gpu-box:11434", "llava:13b", "llava:7b")
    assert endpoint.options["num_ctx"] == 8192
    assert "s3cret-token" not in repr(endpoint)
    assert endpoint.client()._client.headers["authorization"] == "Bearer s3cret-token"

    gf_home.ollama.block_name = "no-such-endpoint"
    with pytest.raises(StageError, match="no-such-endpoint"):
        resolve_endpoint(gf_home)


def test_host_credentials_never_reach_messages() -> None:
    assert redact_host("http://user:pw@gpu-box:11434/") == "http://gpu-box:11434/"
    assert redact_host("gpu-box:11434") == "http://gpu-box:11434"


@pytest.mark.parametrize("size, vram, expected", [
    (6_000, 6_000, "100% GPU"), (6_000, 0, "100% CPU"), (10_000, 6_200, "38%/62% CPU/GPU"),
    (None, None, "unknown processor"),
])
def test_processor_split_like_ollama_ps(size, vram, expected) -> None:
    assert processor_split(size, vram) == expected


def test_model_names_with_and_without_tag() -> None:
    assert same_model("llava", "llava:latest") and same_model("llava:7b", "llava:7b")
    assert not same_model("llava:7b", "llava:13b")
