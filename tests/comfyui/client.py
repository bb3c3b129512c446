"""A small ComfyUI API client for tests (stdlib only): queue API-format graphs, wait for their
history, interrupt, and read websocket events."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
import urllib.error
import urllib.request
import uuid
from typing import Any


class GraphError(AssertionError):
    """A graph was rejected or failed; the message carries ComfyUI's error."""


class Comfy:
    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.client_id = str(uuid.uuid4())

    # --- HTTP -----------------------------------------------------------------------------------
    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict[str, Any]) -> Any:
        req = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                data = r.read()
                return json.loads(data) if data else None
        except urllib.error.HTTPError as e:
            raise GraphError(f"POST {path} -> HTTP {e.code}: {e.read().decode()[:3000]}") from e

    def queue(self, graph: dict[str, Any]) -> str:
        """Queue a graph; refuse it when any node failed validation (ComfyUI would run the rest)."""
        reply = self.post("/prompt", {"prompt": graph, "client_id": self.client_id})
        if reply.get("node_errors"):
            raise GraphError(f"nodes failed validation: {json.dumps(reply['node_errors'])[:3000]}")
        return reply["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 300) -> dict[str, Any]:
        """The prompt's history entry once it has completed (successfully or not)."""
        end = time.time() + timeout
        while time.time() < end:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None:
                return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")

    def run(self, graph: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
        """Queue a graph and return its outputs by node id; raise GraphError if it fails."""
        entry = self.wait(self.queue(graph), timeout)
        status = entry["status"]
        if status.get("status_str") != "success":
            raise GraphError(f"graph failed: {json.dumps(status.get('messages'))[:4000]}")
        return entry["outputs"]

    def interrupt(self) -> None:
        self.post("/interrupt", {})


class EventStream:
    """A minimal websocket client for ComfyUI's /ws (text frames only; binary previews are skipped)."""

    def __init__(self, url: str, client_id: str, timeout: float = 300):
        host, port = url.split("://", 1)[1].split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws?clientId={client_id} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake failed: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("websocket closed")
            data += chunk
        return data

    def message(self) -> dict[str, Any] | None:
        """The next JSON message, or None for a binary frame."""
        b1, b2 = self._read(2)
        opcode, length = b1 & 0x0F, b2 & 0x7F
        if length == 126:
            length = struct.unpack(">H", self._read(2))[0]
        elif length == 127:
            length = struct.unpack(">Q", self._read(8))[0]
        payload = self._read(length)
        return json.loads(payload) if opcode == 1 else None

    def collect(self, into: list[dict[str, Any]]) -> None:
        """Append every message to `into` until the stream is closed (run it in a thread); binary
        frames (previews) appear as {"type": "binary"}."""
        try:
            while True:
                into.append(self.message() or {"type": "binary"})
        except (OSError, ValueError):
            return

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv
        except OSError:
            pass
        self.sock.close()


def train_start_warnings(comfy: Comfy, server: str, graph: dict[str, Any]) -> list[str]:
    """Run a training graph and return the warnings of its normguard.train "start" event (what the
    trainer node shows)."""
    import threading

    events = EventStream(server, comfy.client_id)
    seen: list[dict[str, Any]] = []
    reader = threading.Thread(target=events.collect, args=(seen,), daemon=True)
    reader.start()
    try:
        comfy.run(graph)
    finally:
        events.close()
        reader.join(timeout=5)
    return next(
        m["data"]["warnings"]
        for m in seen
        if m.get("type") == "normguard.train" and m["data"]["phase"] == "start"
    )
