"""A JSON POST for every failed task (e.g. to a Slack incoming webhook). The URL is a secret: never logged."""

from __future__ import annotations

import logging
import socket

import requests

from luigi_tasks.download import redact_url

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


def post_failure(url: str, payload: dict) -> None:
    try:
        response = requests.post(url, json=payload, timeout=10)
        response.raise_for_status()
    except requests.RequestException as exc:
        # A notification that cannot be sent must not hide the failure it reports.
        log.warning("could not notify %s of %s: %s", redact_url(url), payload["task_id"], type(exc).__name__)
