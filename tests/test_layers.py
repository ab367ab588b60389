"""The house plan's promises that `lint-imports` cannot check: import order does not
matter, and every deployment runs a flow from flows/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys
first, second = sys.argv[1:3]
__import__(first); __import__(second)
from prefect.settings import get_current_settings
s = get_current_settings()
print(json.dumps({
    "persist": s.results.persist_by_default,
    "storage": str(s.results.local_storage_path),
    "database": s.server.database.connection_url.get_secret_value()
        if s.server.database.connection_url else None,
    "startup": s.server.ephemeral.startup_timeout_seconds,
    "analytics": s.server.analytics_enabled,
}))
"""


def _settings_after(first: str, second: str, tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "GALLERYFLOW_"))}
    env.update(HOME=str(tmp_path / "user"), GALLERYFLOW_HOME=str(tmp_path / "gf"))
    done = subprocess.run([sys.executable, "-c", PROBE, first, second], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_prefect_before_galleryflow_changes_nothing(tmp_path: Path) -> None:
    ours_first = _settings_after("galleryflow", "prefect", tmp_path)
    prefect_first = _settings_after("prefect", "galleryflow", tmp_path)
    assert prefect_first == ours_first
    # …and both carry galleryflow's defaults, not Prefect's.
    assert ours_first["persist"] is True and ours_first["analytics"] is False
    assert ours_first["storage"] == str((tmp_path / "gf" / "results").resolve())
    assert ours_first["database"].endswith(str(tmp_path / "gf" / "prefect" / "prefect.db"))
    assert ours_first["startup"] == 180


def test_every_deployment_runs_a_flow_from_flows() -> None:
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    entrypoints = {d["entrypoint"] for d in spec["deployments"]}
    assert entrypoints and all(e.startswith("flows/") for e in entrypoints), entrypoints
    for entrypoint in entrypoints:
        path, _, name = entrypoint.partition(":")
        assert f"\n{name} = " in (REPO / path).read_text() or f"def {name}(" in (REPO / path).read_text()
