"""One TLS context for galleryflow's own HTTP clients, made once per process.

httpx builds a new SSL context for every client it creates, and loading the CA bundle
into it is most of the cost: 20 ms of CPU for a client, 5.8 ms with a context made
once (measured on this project's machine). A run made two such clients on its
single-threaded start (the background server's health check, the Ollama client);
httpx documents passing one context as ``verify=`` to share it. The warm run process
makes it before it forks (``galleryflow.app.warm._preload``), so its commands find it
made.

The context is httpx's default one (its CA bundle, or ``SSL_CERT_FILE`` /
``SSL_CERT_DIR`` when set): it is made again when those variables change, as they
may between the commands of one warm process.
"""

from __future__ import annotations

import functools
import os
import ssl

# The variables httpx's default context reads (trust_env=True).
_CA_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def tls_context() -> ssl.SSLContext:
    """The shared default context for this process's environment (pass it as
    ``verify=`` to httpx; never change it: every client shares it)."""
    return _context(tuple(os.environ.get(name) for name in _CA_VARIABLES))


@functools.lru_cache(maxsize=4)
def _context(_ca_settings: tuple[str | None, ...]) -> ssl.SSLContext:
    import httpx

    return httpx.create_ssl_context()
