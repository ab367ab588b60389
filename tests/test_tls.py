"""galleryflow's own HTTP clients share one TLS context per process (httpx loads the CA
bundle into every new context: most of a client's cost), made again when the CA
variables change, as they may between the commands of one warm process."""

from __future__ import annotations

import ssl

import httpx
import pytest

from blocks.ollama import OllamaEndpoint
from galleryflow.core.tls import tls_context


@pytest.fixture
def ca_loads(monkeypatch):
    """How many times a CA bundle is loaded into a context (every way ssl offers)."""
    count = {"n": 0}
    for name in ("load_verify_locations", "load_default_certs", "set_default_verify_paths"):
        real = getattr(ssl.SSLContext, name)

        def counted(self, *args, _real=real, **kwargs):  # type: ignore[no-untyped-def]
            count["n"] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(ssl.SSLContext, name, counted)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return count


def test_our_clients_load_the_ca_bundle_once(ca_loads):
    shared = tls_context()
    assert shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname  # it verifies
    ca_loads["n"] = 0
    OllamaEndpoint(host="http://127.0.0.1:9").client()
    OllamaEndpoint(host="https://ollama.example:443").client()
    httpx.Client(verify=tls_context())
    assert ca_loads["n"] == 0 and tls_context() is shared
    httpx.Client()  # the counter sees what a client of its own would load
    assert ca_loads["n"] > 0


def test_a_changed_ca_variable_gets_its_own_context(ca_loads, monkeypatch, tmp_path):
    import certifi

    default = tls_context()
    bundle = tmp_path / "company-ca.pem"
    bundle.write_bytes(open(certifi.where(), "rb").read())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    own = tls_context()
    assert own is not default and tls_context() is own
    monkeypatch.delenv("SSL_CERT_FILE")
    assert tls_context() is default
