"""The casprobe exception tree. Each class carries the process exit code the CLI uses.

Exit codes follow the Nagios convention that monitoring systems already read: 0 OK, 1 warning, 2 critical,
3 unknown (bad configuration, bad arguments, internal error).

::

    CasprobeError (3)
     ├── ConfigError (3)        a bad profile, option or argument
     ├── CredentialError (3)    a password source that cannot be read
     └── LabError (3)           the lab cannot start, is not running, or refused an operation
         └── LabNotRunning (3)
"""

from __future__ import annotations

__all__ = ["CasprobeError", "ConfigError", "CredentialError", "LabError", "LabNotRunning"]


class CasprobeError(Exception):
    """Base class of every error casprobe reports to a user as a message rather than a traceback."""

    exit_code: int = 3

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(CasprobeError):
    """A profile file, an option or an argument is invalid."""


class CredentialError(CasprobeError):
    """A credential source (environment variable, file, prompt) could not be read."""


class LabError(CasprobeError):
    """The simulated organisation could not do what was asked."""


class LabNotRunning(LabError):
    """No lab answers in the given lab folder."""
