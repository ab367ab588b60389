"""Prefect cache policies keyed on file *content*, not on paths or row ids.

Prefect's default policy includes the flow run id, so it never hits across runs,
and a ``Path`` input is hashed by its string: a renamed or re-copied file would
miss, and an edited file under the same name would wrongly hit. galleryflow's
expensive work (EXIF, scores, captions) is a pure function of the image bytes
and the parameters, so its cache key is exactly that:

- every pydantic model or dict in the inputs contributes its fields, except the
  volatile ones (paths, row and session ids, file stamps) listed in ``VOLATILE_FIELDS``;
- a model with a ``sha256`` field stands for its content through that hash;
- the task's source code is part of the key (``TASK_SOURCE``), so a change to
  the code recomputes rather than serving stale results.

Tasks that *write* (files, rows) are never cached: after a rollback their
effects are gone, and a cache hit would skip redoing them. They call a cached
compute task and write its result.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from prefect.cache_policies import TASK_SOURCE, CachePolicy
from prefect.results import ResultStore, get_default_result_storage, get_result_store
from prefect.utilities.hashing import hash_objects
from pydantic import BaseModel

_log = logging.getLogger(__name__)

VOLATILE_FIELDS = frozenset(
    {
        "path", "source_path", "incoming_path", "ollama_path", "thumbnail_path", "work_path",
        "row_id", "review_id", "image_set_id", "id",
        # how the file looked on disk (size, mtime: core.fsutil.FileStamp): a check
        # that it is unchanged, not its content
        "stamp",
    }
)


def _canonical(value: Any, exclude: frozenset[str]) -> Any:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        return {k: _canonical(v, exclude) for k, v in sorted(value.items()) if k not in exclude}
    if isinstance(value, (list, tuple)):
        return [_canonical(v, exclude) for v in value]
    if isinstance(value, PurePath):
        raise TypeError(
            "a Path reached a content-keyed cache policy: pass a model carrying the file's sha256"
        )
    return value


@dataclass
class ContentInputs(CachePolicy):
    """Cache key from the inputs' content (sha256 and parameters), never their paths."""

    exclude: frozenset[str] = field(default_factory=lambda: VOLATILE_FIELDS)

    def compute_key(
        self,
        task_ctx: Any,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        if not inputs:
            return None
        return hash_objects(_canonical(inputs, self.exclude), raise_on_failure=True)


CONTENT = ContentInputs() + TASK_SOURCE
"""The policy for galleryflow's pure, expensive per-image computations."""


class PhotoCache:
    """Per-photo results in Prefect's result store, keyed on the photo's content
    (sha256) and on what else the result depends on (``depends_on``: model names,
    weight fingerprints, code versions; never paths).

    Why not a cached task: a task cached on a *batch* of photos misses as soon as
    the batch changes — a locked row, a photo added to the set or another chunk
    size shifts every batch after it, and a rerun recomputed them all — while a
    cached task run per photo costs orchestration (a task run, its states and
    events) for every photo. Here each photo is looked up on its own, the misses
    are computed in one batch, and each result is stored on its own. The records
    live in the same result store as the task results (``GALLERYFLOW_HOME/results``),
    written and read by Prefect's own ``ResultStore``.
    """

    def __init__(self, kind: str, depends_on: BaseModel | dict[str, Any]) -> None:
        self.kind = kind
        self._salt = hash_objects(kind, _canonical(depends_on, frozenset()), raise_on_failure=True)
        self._store: ResultStore | None = None

    def _result_store(self) -> ResultStore:
        """The run's result store, its storage resolved once.

        Outside a task run Prefect's store has no storage yet, and each write would
        resolve the default one again: a new API client (an SSL context) and a
        request to the server, ~50 ms per photo. Resolved once here, the same way.
        """
        if self._store is None:
            store = get_result_store()
            if store.result_storage is None:
                store = store.model_copy(update={"result_storage": get_default_result_storage(
                    _sync=True)})  # type: ignore[call-arg]
            self._store = store
        return self._store

    def key(self, sha256: str) -> str:
        return f"{self.kind}-{hash_objects(self._salt, sha256, raise_on_failure=True)}"

    def get_many(self, sha256s: Iterable[str]) -> dict[str, Any]:
        """The stored results of those photos that have one."""
        store = self._result_store()
        found: dict[str, Any] = {}
        for sha256 in dict.fromkeys(sha256s):
            key = self.key(sha256)
            try:
                if store.exists(key):
                    found[sha256] = store.read(key).result
            except Exception as exc:  # a torn or foreign record is a miss, not a failure
                _log.warning("cached %s of %s unreadable (%s): computing again",
                             self.kind, sha256[:12], exc)
        return found

    def put(self, sha256: str, value: Any) -> None:
        try:
            self._result_store().write(value, key=self.key(sha256))
        except Exception as exc:  # the result is still used; only the next run pays
            _log.warning("could not cache %s of %s: %s", self.kind, sha256[:12], exc)
