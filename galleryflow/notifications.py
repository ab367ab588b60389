"""Notifications: run completed, run failed, review gate open — with the run link.

Flows attach the hooks::

    @flow(on_completion=[notify_completion], on_failure=[notify_failure],
          on_crashed=[notify_failure])

and the review gate calls :func:`notify_review_gate` once the run is paused and its
form is stored (so whoever follows the link finds the form).

The webhook is the ``NotificationWebhook`` block named by
``settings.ops.notify_block`` (``galleryflow setup`` creates it when
``ops.notify_url`` is set). No such block means no notifications. A notification
that cannot be sent is logged as a warning and never fails or delays a run
beyond the block's timeout: every function here returns ``False`` instead of
raising.
"""

from __future__ import annotations

import logging
from typing import Any

from blocks.webhook import Event, Notification, NotificationError, NotificationWebhook
from galleryflow.core.prefect_run import run_logger
from galleryflow.core.settings import get_settings

log = logging.getLogger(__name__)


def load_webhook(name: str | None = None) -> NotificationWebhook | None:
    """The configured webhook block, or None when there is none (or the API is down)."""
    name = name or get_settings().ops.notify_block
    try:
        return NotificationWebhook.load(name)  # type: ignore[return-value]
    except ValueError:  # no block document of that name: notifications are off
        log.debug("no %s block named %r: notifications off", NotificationWebhook.__name__, name)
        return None
    except Exception as exc:
        run_logger(log).warning("could not load the notification block %r: %s", name, exc)
        return None


def run_url(flow_run_id: str | None) -> str | None:
    """The run's page in the Prefect UI (None without a configured UI/API URL)."""
    if not flow_run_id:
        return None
    try:
        from prefect.utilities.urls import url_for

        return url_for("flow-run", obj_id=flow_run_id) or None
    except Exception:
        return None


def send(notification: Notification, webhook: NotificationWebhook | None = None) -> bool:
    """Send one notification; True if the webhook accepted it. Never raises."""
    webhook = webhook or load_webhook()
    if webhook is None or not webhook.wants(notification.event):
        return False
    try:
        webhook.send(notification)
    except NotificationError as exc:
        run_logger(log).warning("notification %r not sent: %s", notification.event, exc)
        return False
    except Exception as exc:  # a notification is never worth failing a run for
        run_logger(log).warning("notification %r not sent: %s", notification.event, type(exc).__name__)
        return False
    return True


def _deployment_name(flow_run: Any) -> str | None:
    deployment_id = getattr(flow_run, "deployment_id", None)
    if not deployment_id:
        return None
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            deployment = client.read_deployment(deployment_id)
        return deployment.name
    except Exception:
        return None


def run_notification(event: Event, flow: Any, flow_run: Any, state: Any) -> Notification:
    """Describe a flow run's end state as a notification."""
    flow_name = getattr(flow, "name", None) or "flow"
    run_name = getattr(flow_run, "name", None)
    run_id = str(flow_run.id) if getattr(flow_run, "id", None) else None
    state_name = getattr(state, "name", None)
    message = (getattr(state, "message", None) or "").strip()
    url = run_url(run_id)
    verb = "completed" if event == "completed" else f"ended {state_name or 'Failed'}"
    title = f"galleryflow: {flow_name} run {run_name or run_id} {verb}"
    text = title + (f": {message}" if message and event != "completed" else "") + (
        f" — {url}" if url else "")
    return Notification(
        event=event, title=title, text=text, flow_name=flow_name, flow_run_id=run_id,
        flow_run_name=run_name, deployment=_deployment_name(flow_run), state=state_name,
        run_url=url, details={"message": message} if message else {},
    )


def notify_completion(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook (``on_completion``)."""
    send(run_notification("completed", flow, flow_run, state))


def notify_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow hook (``on_failure``, ``on_crashed``)."""
    send(run_notification("failed", flow, flow_run, state))


def notify_review_gate(rows: int, flow_run_id: str | None = None, sets: list[str] | None = None,
                       detail: str | None = None) -> bool:
    """Tell the reviewer a gate is open: ``rows`` rows await review in this run.

    Call it once the run is paused with its form stored; ``flow_run_id`` defaults
    to the current run. Returns whether the webhook accepted it; never raises.
    """
    flow_name = run_name = None
    if flow_run_id is None:
        try:
            from prefect.context import FlowRunContext

            ctx = FlowRunContext.get()
            if ctx and ctx.flow_run:
                flow_run_id, run_name = str(ctx.flow_run.id), ctx.flow_run.name
                flow_name = ctx.flow.name if ctx.flow else None
        except Exception:
            pass
    url = run_url(flow_run_id)
    what = f" ({', '.join(sets)})" if sets else ""
    title = f"galleryflow: {rows} photo{'s' if rows != 1 else ''} await review{what}"
    text = title + (f": {detail}" if detail else "") + (f" — answer the gate at {url}" if url else "")
    return send(Notification(
        event="review_gate", title=title, text=text, flow_name=flow_name,
        flow_run_id=flow_run_id, flow_run_name=run_name, run_url=url,
        details={"rows": rows, "sets": sets or [], **({"detail": detail} if detail else {})},
    ))
