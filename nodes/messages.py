"""Messages to the ComfyUI frontend (no-ops where no server runs, e.g. in scripts)."""

from __future__ import annotations

from typing import Any


def _server() -> Any:
    try:
        from server import PromptServer

        return PromptServer.instance
    except (ImportError, AttributeError):
        return None


def send_event(event: str, data: dict[str, Any]) -> None:
    """A custom websocket event to the client that queued the running prompt."""
    server = _server()
    if server is not None:
        server.send_sync(event, data, server.client_id)


def show_text(node: str | None, text: str) -> None:
    """Text shown under a node while/after it runs."""
    server = _server()
    if server is not None and node is not None:
        server.send_progress_text(text, node)
