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


def test_recovery_rolls_back_a_dead_session_and_gives_its_set_back(db, gf_home, tmp_path):
    from sqlalchemy import select

    from galleryflow.core.ledger import SessionLedger
    from galleryflow.db import Photo, SeenContent, session_scope
    from tasks.recovery import recover

    gone = f"{socket.gethostname()}:{2**22 + 4321}:1000.00"
    with session_scope() as s:
        dead = _session(gone, "dead-run")
        s.add(dead)
        s.flush()
        s.add(Photo(set_key="alps", original_name="a.jpg", image_set_id=dead.id,
                    created_session_id=dead.id, sha256="a" * 64, source_path="/x/a.jpg",
                    status="awaiting_review"))
        s.add(SeenContent(content_sha256="c" * 64, folder="/intake/urgent/alps", queue="urgent",
                          flow_run_id="dead-run"))
        dead_id = dead.id
    copy = gf_home.incoming_dir / "alps" / "aaaa" / "a.jpg"
    partial = gf_home.incoming_dir / "alps" / "aaaa" / ".a.jpg.x1y2.jpg.part"
    for path in (copy, partial):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"jpeg")
    SessionLedger(gf_home, dead_id).record_created_file(copy)

    report = recover()
    assert [(r.set, r.outcome) for r in report.sessions] == [("alps", "rolled_back")]
    assert report.claims == ["/intake/urgent/alps"] and report.partial_files == 1
    with session_scope() as s:
        assert s.get(ImageSet, dead_id).status == "rolled_back"
        assert list(s.scalars(select(Photo))) == [] and list(s.scalars(select(SeenContent))) == []
    assert not copy.exists() and not partial.exists()
    assert not SessionLedger(gf_home, dead_id).root.exists()
    assert recover().anything is False  # nothing left to do
