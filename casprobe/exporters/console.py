"""One way to render rich output to text, for every terminal summary (check table, analysis)."""

from __future__ import annotations

import io
from collections.abc import Iterable

from rich.console import Console, RenderableType

__all__ = ["render_to_text"]


def render_to_text(parts: Iterable[RenderableType], *, width: int, color: bool) -> str:
    """Render ``parts`` one after the other as text: ANSI colours only with ``color``, never rich markup or emoji
    taken from the data (a hostile server's text is printed as it is)."""
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=width,
        force_terminal=color,
        color_system="standard" if color else None,
        highlight=False,
        emoji=False,
        markup=False,
    )
    for part in parts:
        console.print(part)
    return buffer.getvalue()
