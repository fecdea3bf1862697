"""The pure-ASGI pieces the middlewares share: HTTP-only dispatch, editing the response's start message, and
knowing whether a response has started.

Why pure ASGI and not Starlette's ``BaseHTTPMiddleware``: streaming bodies and the request-id context variable
pass through unchanged, and an error can still be answered as long as no response has started.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class HttpMiddleware:
    """A middleware for HTTP requests: other scopes (lifespan, websockets) go straight to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one HTTP request (subclasses)."""
        raise NotImplementedError


def on_response_start(send: Send, edit: Callable[[Message], None]) -> Send:
    """``send``, with ``edit`` applied to the ``http.response.start`` message (status, headers) before it goes out."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            edit(message)
        await send(message)

    return sending


class ResponseTracking:
    """An ASGI ``send`` that remembers whether the response has started (after that, no error answer can be sent)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        self.started = self.started or message["type"] == "http.response.start"
        await self.send(message)
