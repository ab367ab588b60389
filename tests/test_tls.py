"""galleryflow's own HTTP clients share one TLS context per process (httpx loads the CA
bundle into every new context: most of a client's cost), made again when the CA
variables change, as they may between the commands of one warm process."""

from __future__ import annotations

import ssl

from blocks.ollama import OllamaEndpoint
from galleryflow.core.tls import tls_context


def _context_of(client) -> ssl.SSLContext:  # type: ignore[no-untyped-def]
    return client._transport._pool._ssl_context  # httpx's transport keeps the one it was given


def test_the_ollama_client_uses_the_shared_context(monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    shared = tls_context()
    assert tls_context() is shared
    first = OllamaEndpoint(host="http://127.0.0.1:9").client()
    second = OllamaEndpoint(host="https://ollama.example:443").client()
    assert _context_of(first._client) is shared and _context_of(second._client) is shared
    assert shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname  # verifying


def test_a_changed_ca_variable_gets_its_own_context(monkeypatch, tmp_path):
    import certifi

    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    default = tls_context()
    bundle = tmp_path / "company-ca.pem"
    bundle.write_bytes(open(certifi.where(), "rb").read())
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    own = tls_context()
    assert own is not default and tls_context() is own
    monkeypatch.delenv("SSL_CERT_FILE")
    assert tls_context() is default
