"""Which sessions are dead (tasks/recovery.py): the process that ran one is gone on
this host, or Prefect says its run ended; a live one is never touched."""

from __future__ import annotations

import socket

import pytest

from galleryflow.core.liveness import current_owner
from galleryflow.db import ImageSet
from tasks.recovery import dead_reason


def _session(owner: str | None, flow_run_id: str | None = None) -> ImageSet:
    return ImageSet(set_key="alps", name="alps", source_dir="/x", status="running",
                    owner=owner, flow_run_id=flow_run_id)


def test_a_session_of_a_live_process_is_not_dead():
    assert dead_reason(_session(current_owner())) is None


def test_a_session_whose_process_is_gone_is_dead():
    gone = f"{socket.gethostname()}:{2**22 + 12345}:1000.00"  # no such pid
    assert dead_reason(_session(gone)) == "its process is gone (killed or crashed)"


def test_another_hosts_session_is_dead_only_when_prefect_says_its_run_ended(prefect_api):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Running

    @flow(name="worker-run")
    def worker_run() -> int:
        return 1

    run_id = worker_run(return_state=True).state_details.flow_run_id
    elsewhere = _session("worker-2.studio.lan:4242:1000.00", str(run_id))
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run_id, Running(), force=True)
        assert dead_reason(elsewhere) is None  # it may still be working
        client.set_flow_run_state(run_id, Crashed(message="worker lost"), force=True)
    assert dead_reason(elsewhere) == "its flow run ended Crashed"
    assert dead_reason(_session("worker-2.studio.lan:4242:1000.00")) is None  # cannot tell


@pytest.mark.parametrize("owner", [None, "garbage"])
def test_an_unknown_owner_without_a_run_is_left_alone(owner):
    assert dead_reason(_session(owner)) is None
