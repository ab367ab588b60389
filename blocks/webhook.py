"""``NotificationWebhook``: where galleryflow tells a person that something happened.

A JSON ``POST`` on run completion, run failure and when a review gate opens, with
the run's link in the Prefect UI. The body carries a plain ``text`` line (what
Slack, Mattermost and most chat webhooks show) plus structured fields for
anything that wants more. The URL and the optional bearer token are secrets:
they are never logged, and errors name only the host.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from prefect.blocks.core import Block
from pydantic import BaseModel, Field, SecretStr

from galleryflow.core.tls import tls_context

Event = Literal["completed", "failed", "review_gate"]
ALL_EVENTS: list[Event] = ["completed", "failed", "review_gate"]


class Notification(BaseModel):
    """What one notification says (the JSON body, plus ``text``)."""

    event: Event
    title: str
    text: str
    flow_name: str | None = None
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    deployment: str | None = None
    state: str | None = None
    run_url: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class NotificationError(RuntimeError):
    """The webhook did not accept the notification (names the host, never the URL)."""


class NotificationWebhook(Block):
    """POSTs galleryflow notifications (run completed/failed, review gate open) as JSON."""

    _block_type_name = "galleryflow Notification Webhook"
    _block_type_slug = "galleryflow-notification-webhook"
    _description = (
        "POSTs a JSON message with the run link when a galleryflow run completes, "
        "fails, or opens a review gate. Its failure never fails a run."
    )

    url: SecretStr = Field(description="Webhook URL (kept secret: it often embeds a token).")
    bearer_token: SecretStr | None = Field(
        default=None, description="Sent as 'Authorization: Bearer …' when set."
    )
    events: list[Event] = Field(
        default_factory=lambda: list(ALL_EVENTS), description="Which events to send."
    )
    timeout_seconds: float = Field(default=10.0, description="Per request.")

    def host(self) -> str:
        return urlsplit(self.url.get_secret_value()).netloc or "(no host)"

    def wants(self, event: Event) -> bool:
        return event in self.events

    def send(self, notification: Notification) -> None:
        """POST the notification; raise :class:`NotificationError` if it is refused."""
        headers = {"Content-Type": "application/json", "User-Agent": "galleryflow"}
        if self.bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.bearer_token.get_secret_value()}"
        try:
            response = httpx.post(
                self.url.get_secret_value(), json=notification.model_dump(mode="json"),
                headers=headers, timeout=self.timeout_seconds, verify=tls_context(),
            )
        except httpx.HTTPError as exc:
            # httpx messages can contain the URL: name the host and the error type only.
            raise NotificationError(
                f"webhook at {self.host()} unreachable ({type(exc).__name__})"
            ) from None
        if response.status_code >= 400:
            raise NotificationError(
                f"webhook at {self.host()} answered HTTP {response.status_code}"
            )
