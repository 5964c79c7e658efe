"""Load shapes as stage tables (issue 5): ramp up, hold steady through the maintenance window, ramp down.

Give this file to Locust beside the users; the table comes from ``--casprobe-stages`` (or ``CASPROBE_STAGES``)::

    locust -f locustfiles/outlook.py,locustfiles/mac_outlook.py,locustfiles/shapes.py --headless \\
        --casprobe-lab ~/.local/state/casprobe/lab --casprobe-stages ramp:30s:200@20,hold:10m,down:30s \\
        --casprobe-records run.jsonl --csv run --csv-full-history

Grammar (details in :mod:`casprobe.load.stages`)::

    ramp:DURATION:USERS[@RATE]   from the current count to USERS (linear over DURATION, or at RATE users/s)
    hold:DURATION                keep the count
    down:DURATION[@RATE]         to 0 users

Durations are ``90`` (seconds), ``90s``, ``5m``, ``1h30m``. Without the option the table is
``ramp:1m:100,hold:10m,down:1m``. After the last stage the test stops on its own (``--headless``: Locust quits),
so ``-u``, ``-r`` and ``-t`` are not needed (Locust says it ignores them). In a distributed run the shape runs on
the master only. A table that cannot be read stops Locust at start with the reason (exit code 2).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from locust import LoadTestShape, events
from locust.env import Environment
from locust.runners import WorkerRunner

from casprobe.load.stages import DEFAULT_STAGES, StageError, StageTable, parse_stages

log = logging.getLogger("casprobe.load")


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--casprobe-stages",
        default=DEFAULT_STAGES,
        env_var="CASPROBE_STAGES",
        help="load shape as a stage table: ramp:DURATION:USERS[@RATE], hold:DURATION, down:DURATION[@RATE], "
        "comma-separated (shapes.py)",
    )


class StageShape(LoadTestShape):
    """The user count follows the ``--casprobe-stages`` table; the test ends with the table."""

    def __init__(self) -> None:
        super().__init__()
        self.table: StageTable | None = None

    def load(self, spec: str) -> StageTable:
        self.table = parse_stages(spec)
        return self.table

    def tick(self) -> tuple[int, float] | None:
        table = self.table
        if table is None:
            runner = self.runner
            options = runner.environment.parsed_options if runner is not None else None
            try:
                table = self.load(getattr(options, "casprobe_stages", None) or DEFAULT_STAGES)
            except StageError as exc:  # checked at init already; never crash the shape greenlet
                log.error("casprobe: --casprobe-stages: %s", exc)
                return None
        return table.tick(self.get_run_time())


@events.init.add_listener
def _check_table(environment: Environment, **_kwargs: Any) -> None:
    """Read the table once at start (not on workers: the master runs the shape), so a typo stops Locust at once."""
    shape = environment.shape_class
    if not isinstance(shape, StageShape) or isinstance(environment.runner, WorkerRunner):
        return
    spec = getattr(environment.parsed_options, "casprobe_stages", None) or DEFAULT_STAGES
    try:
        table = shape.load(spec)
    except StageError as exc:
        sys.stderr.write(f"casprobe: --casprobe-stages: {exc}\n")
        sys.exit(2)
    log.info("casprobe: load shape %s", table.describe())
