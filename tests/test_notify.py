"""Notifications: a webhook block called on completion, failure and review gates,
with the run link; a webhook that fails never fails the run."""

from __future__ import annotations

import uuid

import pytest
from prefect import flow

from blocks.webhook import NotificationError, NotificationWebhook
from galleryflow.notifications import notify_completion, notify_failure, notify_review_gate, send
from galleryflow.core.settings import Settings
from tests.services.webhook import webhook_receiver

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def notify_block(gf_home: Settings, monkeypatch: pytest.MonkeyPatch):
    """A uniquely named notification block, selected through the settings."""
    name = f"notify-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(gf_home.ops, "notify_block", name)

    def save(url: str, **fields) -> NotificationWebhook:
        block = NotificationWebhook(url=url, **fields)
        block.save(name, overwrite=True)
        return block

    return save


@flow(name="gf-notify-ok", on_completion=[notify_completion], on_failure=[notify_failure])
def finishes() -> int:
    return 42


@flow(name="gf-notify-fails", on_completion=[notify_completion], on_failure=[notify_failure])
def fails() -> None:
    raise RuntimeError("the disk is full")


@flow(name="gf-notify-gate")
def opens_a_gate() -> bool:
    return notify_review_gate(rows=3, sets=["alps"], detail="2 blocked proofs")


def test_completion_and_failure_are_posted_with_the_run_link(notify_block):
    with webhook_receiver() as hook:
        notify_block(hook.url, bearer_token="tok-123")
        state = finishes(return_state=True)
        assert state.is_completed()
        failed = fails(return_state=True)
        assert failed.is_failed()
    assert hook.events() == ["completed", "failed"]
    done, broken = hook.received
    assert done["flow_name"] == "gf-notify-ok" and done["state"] == "Completed"
    assert done["run_url"] and done["run_url"].endswith(f"/runs/flow-run/{done['flow_run_id']}")
    assert done["run_url"] in done["text"]
    assert broken["flow_name"] == "gf-notify-fails" and "the disk is full" in broken["text"]
    assert hook.headers[0]["Authorization"] == "Bearer tok-123"


def test_the_review_gate_notification_names_rows_and_link(notify_block):
    with webhook_receiver() as hook:
        notify_block(hook.url)
        assert opens_a_gate() is True
    (message,) = hook.received
    assert message["event"] == "review_gate"
    assert message["details"] == {"rows": 3, "sets": ["alps"], "detail": "2 blocked proofs"}
    assert "3 photos await review (alps)" in message["text"] and message["run_url"] in message["text"]


def test_a_failing_webhook_never_fails_the_run(notify_block):
    with webhook_receiver(status=500) as hook:
        notify_block(hook.url)
        state = finishes(return_state=True)
        assert opens_a_gate() is False
    assert state.is_completed() and state.result() == 42
    assert hook.events() == ["completed", "review_gate"]  # tried, refused, run unaffected


def test_an_unreachable_webhook_names_the_host_not_the_secret_url(notify_block):
    from tests.services import free_port

    url = f"http://127.0.0.1:{free_port()}/hooks/very-secret"
    block = notify_block(url, timeout_seconds=2)
    with pytest.raises(NotificationError) as info:
        from blocks.webhook import Notification

        block.send(Notification(event="completed", title="t", text="t"))
    assert "127.0.0.1" in str(info.value) and "very-secret" not in str(info.value)
    assert finishes(return_state=True).is_completed()


def test_events_can_be_narrowed_and_no_block_means_no_notification(notify_block, gf_home):
    from blocks.webhook import Notification

    with webhook_receiver() as hook:
        assert send(Notification(event="completed", title="t", text="t")) is False  # no block yet
        notify_block(hook.url, events=["failed"])
        finishes()
        fails(return_state=True)
    assert hook.events() == ["failed"]
