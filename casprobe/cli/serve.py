"""``casprobe serve``: the blackbox_exporter-style prober (:mod:`casprobe.serve`), as a command.

Thin by design (style.md rule 13): parse ``--config`` and ``--listen``, start :func:`casprobe.serve.serve`, and say
where it listens. A configuration that does not load is a ConfigError: one line and exit code 3.
"""

from __future__ import annotations

from pathlib import Path

import click

from casprobe.errors import ConfigError
from casprobe.serve import DEFAULT_LISTEN, ProbeServer, serve
from casprobe.watch_metrics import parse_address

__all__ = ["serve_command"]


@click.command("serve")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The configuration file (TOML: modules, allowed targets, limits).",
)
@click.option(
    "--listen",
    default=f"{DEFAULT_LISTEN[0]}:{DEFAULT_LISTEN[1]}",
    show_default=True,
    help="HOST:PORT to serve /probe, /metrics and / on (port 0: any free port).",
)
def serve_command(config_path: Path, listen: str) -> None:
    """Answer Prometheus scrapes of /probe?module=M&target=NAME like blackbox_exporter (SIGHUP reloads)."""
    host, port = _address(listen)

    def ready(bound_host: str, bound_port: int, server: ProbeServer) -> None:
        modules = ", ".join(server.config.modules)
        click.echo(f"casprobe serve: listening on http://{bound_host}:{bound_port} (modules: {modules})")

    serve(config_path, (host, port), on_ready=ready)


def _address(text: str) -> tuple[str, int]:
    text = text.strip()
    free = text.endswith(":0")  # a free port, chosen by the system (parse_address refuses port 0)
    try:
        host, port = parse_address(text[:-1] + "1" if free else text)
    except ConfigError:
        raise ConfigError(f"--listen wants HOST:PORT (e.g. 127.0.0.1:9815), not {text!r}") from None
    return host, 0 if free else port
