"""A JSON POST for every failed task (e.g. to a Slack incoming webhook). The URL is a secret: never logged."""

from __future__ import annotations

import logging
import socket
from urllib.parse import urlsplit

import requests

log = logging.getLogger("luigi-interface")


def failure_payload(task_id: str, family: str, params: dict[str, str], error: str) -> dict:
    where = " ".join(params[k] for k in ("service", "month") if k in params)
    return {
        "text": f"luigi_tasks: {family} {where} failed on {socket.gethostname()}: {error}".replace("  ", " "),
        "task_id": task_id,
        "task": family,
        "service": params.get("service"),
        "month": params.get("month"),
        "error": error,
        "host": socket.gethostname(),
    }


def webhook_origin(url: str) -> str:
    """scheme://host[:port] of the webhook: its path is a secret too (a Slack token lives there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


def post_failure(url: str, payload: dict) -> None:
    try:
        response = requests.post(url, json=payload, timeout=10)
        response.raise_for_status()
    except requests.RequestException as exc:
        # A notification that cannot be sent must not hide the failure it reports.
        log.warning("could not notify %s of %s: %s", webhook_origin(url), payload["task_id"], type(exc).__name__)
