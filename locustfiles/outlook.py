"""Windows Outlook on MAPI/HTTP as a Locust user (casprobe's codecs and NTLM; see casprobe.load.outlook).

    locust -f locustfiles/outlook.py --headless -u 200 -r 20 -t 10m --casprobe-lab ~/.local/state/casprobe/lab \\
        --casprobe-cohorts namespace=3,mb1=1 --casprobe-records run.jsonl --csv run --html run.html

Each simulated client: one TCP connection, its own mailbox account (taken in turn from the accounts file), its
cohort's host name; Autodiscover, Connect, bursts of Execute, PING, a parked NotificationWait; reconnect as Outlook
does. Options: ``locust -f locustfiles/outlook.py --help`` (the casprobe group).
"""

from __future__ import annotations

import time
from typing import Any

from _shared import report, state
from locust import User, constant, task

from casprobe.errors import CasprobeError
from casprobe.load.outlook import OutlookClient, RequestReport
from casprobe.net.auth import BasicAuth, SpnegoAuth


class OutlookUser(User):
    """One Windows Outlook (MAPI/HTTP)."""

    wait_time = constant(0)  # the client paces itself: its parked NotificationWait is the think time
    weight = 3

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.outlook: OutlookClient | None = None

    def on_start(self) -> None:
        load = state(self.environment)
        try:
            settings = load.get_settings()
        except CasprobeError as exc:  # a bad profile or accounts file: one named failure per user, no traceback
            report(self.environment, RequestReport("MAPI", "Setup", 0.0, 0, f"internal: {exc}", "none"))
            return
        index = load.next_index("outlook")
        cohort = settings.cohorts.assign(index)
        account = settings.accounts[index % len(settings.accounts)]
        user = f"{load.tag}-outlook-{index}"
        auth: Any = (
            BasicAuth(account.credentials)
            if settings.auth == "basic"
            else SpnegoAuth(account.credentials, settings.auth, channel_binding=True)
        )
        self.outlook = OutlookClient(
            smtp=account.smtp,
            auth=auth,
            cohort=cohort,
            autodiscover_host=settings.profile.autodiscover or settings.profile.namespace or cohort.host,
            port=settings.profile.port,
            resolver=settings.resolver,
            options=settings.transport,
            tracker=load.tracker(cohort.label, user, "outlook", cohort.host),
            report=lambda request: report(self.environment, request),
            behaviour=settings.behaviour,
        )

    @task
    def work(self) -> None:
        if self.outlook is None:
            time.sleep(5.0)  # not set up (see on_start): idle, do not spin
            return
        self.outlook.step()

    def on_stop(self) -> None:
        if self.outlook is not None:
            self.outlook.stop()
