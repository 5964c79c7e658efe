"""Helpers shared by the lab's route modules (one module per protocol beside this one)."""

from __future__ import annotations

from starlette.requests import ClientDisconnect, Request

__all__ = ["BodyTooLarge", "ClientDisconnect", "read_body"]


class BodyTooLarge(Exception):
    """The request body passed the route's limit; what was read so far is discarded."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


async def read_body(request: Request, limit: int) -> bytes:
    """Read the request body, refusing more than ``limit`` bytes without holding them.

    A Content-Length above the limit is refused before anything is read. Otherwise chunks are accumulated only
    while the total stays within the limit; past it the rest of the stream is read and dropped, so that the
    connection stays usable, and BodyTooLarge is raised.
    """
    declared = request.headers.get("content-length")
    too_large = declared is not None and declared.isdigit() and int(declared) > limit
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if too_large or size > limit:
            too_large = True
            chunks.clear()
            continue
        chunks.append(chunk)
    if too_large:
        raise BodyTooLarge(limit)
    return b"".join(chunks)
