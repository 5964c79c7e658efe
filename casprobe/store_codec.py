"""Rows of the run store ↔ the model's dataclasses, losslessly, without I/O.

A :class:`~casprobe.model.ProbeResult` becomes one ``results`` row (layout in :mod:`casprobe.store_schema`):
scalar columns for what analysis filters and sorts on, JSON objects for the nested parts, with each dataclass's
field names as keys and enums as their values. Floats go through ``repr`` in JSON and REAL columns, so they come
back bit for bit; JSON text is ASCII (``\\u`` escapes), so any Python string, even one with lone surrogates, survives.
Scalar text columns are UTF-8 in SQLite: a lone surrogate there (never seen from a probe) becomes ``?``.

Decoding is strict about types and lenient about keys: an unknown key (written by a later casprobe of the same
schema version) is ignored, a missing one takes the dataclass default; a wrong type, an unknown enum value or JSON
that does not parse raise :class:`StoreDataError`. :func:`check_settings` refuses run settings that look like they
carry a secret (defence in depth: callers build them from ``CheckPlan.summary()``, which never holds one).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from casprobe.model import (
    ErrorClass,
    PhaseTimings,
    ProbeResult,
    RunInfo,
    Severity,
    Step,
    Target,
    TargetKind,
    TlsFacts,
)

__all__ = [
    "RESULT_COLUMNS",
    "RUN_COLUMNS",
    "StoreDataError",
    "check_settings",
    "clean_text",
    "decode_result",
    "decode_run",
    "encode_result",
    "encode_run",
]

RESULT_COLUMNS = (
    "target_name",
    "target_label",
    "target_kind",
    "probe",
    "success",
    "severity",
    "error_class",
    "started_at",
    "started_mono",
    "duration",
    "fe_server",
    "be_server",
    "address",
    "detail",
    "phases",
    "tls",
    "steps",
    "facts",
    "auth",
    "target",
)
RUN_COLUMNS = (
    "run_id",
    "started_at",
    "ended_at",
    "casprobe_version",
    "interval_s",
    "targets",
    "probes",
    "tls_verification",
    "settings",
    "host",
)

_SECRET_WORDS = ("password", "passwd", "secret", "token")
_REFERENCE_SUFFIXES = ("_source", "_env", "_file")
_MAX_DEPTH = 32

_T = TypeVar("_T")
_Readers = dict[str, Callable[[Any], Any]]


class StoreDataError(ValueError):
    """A row or a value that cannot be stored or read back (wrong type, bad JSON, a secret in the settings)."""


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _loads(text: object, what: str) -> Any:
    if not isinstance(text, str):
        raise StoreDataError(f"{what}: expected JSON text, found {type(text).__name__}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise StoreDataError(f"{what}: invalid JSON ({exc})") from None


def clean_text(text: str | None) -> str | None:
    """``text`` as SQLite can store it (UTF-8): lone surrogates become ``?``."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def _finite(value: float, what: str) -> float:
    if math.isnan(value):
        raise StoreDataError(f"{what} is NaN (SQLite would store NULL)")
    return value


# --- typed readers of decoded JSON / column values -------------------------------------------------------------


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise StoreDataError(f"expected a string, found {type(value).__name__}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise StoreDataError(f"expected a number, found {type(value).__name__}")
    return float(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else _float(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StoreDataError(f"expected an integer, found {type(value).__name__}")
    return value


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):  # SQLite INTEGER columns
        return bool(value)
    raise StoreDataError(f"expected a boolean, found {value!r:.40}")


def _opt_bool(value: Any) -> bool | None:
    return None if value is None else _bool(value)


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise StoreDataError(f"expected a list, found {type(value).__name__}")
    return value


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(_str(item) for item in _list(value))


def _floats(value: Any) -> tuple[float, ...]:
    return tuple(_float(item) for item in _list(value))


def _error_class(value: Any) -> ErrorClass | None:
    if value is None:
        return None
    try:
        return ErrorClass(_str(value))
    except ValueError:
        raise StoreDataError(f"unknown error class {value!r:.40} (written by a later casprobe?)") from None


def _build(cls: Callable[..., _T], obj: Any, readers: _Readers, what: str) -> _T:
    """``cls`` from the JSON object ``obj``: known keys through their reader, unknown keys ignored."""
    if not isinstance(obj, dict):
        raise StoreDataError(f"{what}: expected an object, found {type(obj).__name__}")
    try:
        return cls(**{key: read(obj[key]) for key, read in readers.items() if key in obj})
    except StoreDataError as exc:
        raise StoreDataError(f"{what}: {exc}") from None
    except TypeError as exc:  # a required field missing
        raise StoreDataError(f"{what}: {exc}") from None


_TARGET: _Readers = {
    "name": _str,
    "kind": lambda v: TargetKind(_str(v)),
    "port": _int,
    "address": _opt_str,
    "label": _str,
}
_PHASES: _Readers = {
    "resolve": _opt_float,
    "connect": _opt_float,
    "tls": _opt_float,
    "auth": _floats,
    "first_byte": _opt_float,
    "total": _opt_float,
}
_TLS: _Readers = {
    "version": _opt_str,
    "cipher": _opt_str,
    "verified": _bool,
    "name_match": _opt_bool,
    "not_after": _opt_str,
    "days_left": _opt_int,
    "subject": _str,
    "issuer": _str,
    "san": _strs,
    "verification_disabled": _bool,
}
_STEP: _Readers = {
    "name": _str,
    "ok": _bool,
    "detail": _str,
    "error_class": _error_class,
    "status_code": _opt_int,
    "duration": _float,
    "address": _opt_str,
    "fe_server": _opt_str,
    "be_server": _opt_str,
    "response_code": _opt_int,
}


def _fields(obj: object, names: Sequence[str]) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in names}


# --- results -----------------------------------------------------------------------------------------------------


def encode_result(result: ProbeResult) -> tuple[object, ...]:
    """The values of :data:`RESULT_COLUMNS` for ``result``."""
    target = result.target
    phases = _fields(result.phases, tuple(_PHASES))
    return (
        clean_text(target.name),
        clean_text(target.label),
        str(target.kind.value),
        clean_text(result.probe),
        int(result.success),
        int(result.severity),
        None if result.error_class is None else str(result.error_class.value),
        _finite(result.started_at, "started_at"),
        _finite(result.started_mono, "started_mono"),
        _finite(result.duration, "duration"),
        clean_text(result.fe_server),
        clean_text(result.be_server),
        clean_text(result.address),
        clean_text(result.detail),
        _dumps(phases),
        None if result.tls is None else _dumps(_fields(result.tls, tuple(_TLS))),
        _dumps([_fields(step, tuple(_STEP)) for step in result.steps]),
        _dumps([[name, value] for name, value in result.facts]),
        _dumps({"offered": list(result.auth_offered), "used": result.auth_used}),
        _dumps(_fields(target, tuple(_TARGET))),
    )


def _facts(value: Any) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in _list(value):
        pair = _list(item)
        if len(pair) != 2:
            raise StoreDataError("a fact is not a [name, value] pair")
        pairs.append((_str(pair[0]), _str(pair[1])))
    return tuple(pairs)


def decode_result(row: Sequence[Any]) -> ProbeResult:
    """The :class:`ProbeResult` of a row holding :data:`RESULT_COLUMNS` in that order."""
    if len(row) != len(RESULT_COLUMNS):
        raise StoreDataError(f"expected {len(RESULT_COLUMNS)} columns, found {len(row)}")
    col = dict(zip(RESULT_COLUMNS, row, strict=True))
    auth = _loads(col["auth"], "auth")
    if not isinstance(auth, dict):
        raise StoreDataError("auth: expected an object")
    tls_text = col["tls"]
    try:
        severity = Severity(_int(col["severity"]))
    except ValueError:
        raise StoreDataError(f"unknown severity {col['severity']!r:.20}") from None
    try:
        return ProbeResult(
            target=_build(Target, _loads(col["target"], "target"), _TARGET, "target"),
            probe=_str(col["probe"]),
            success=_bool(col["success"]),
            severity=severity,
            error_class=_error_class(col["error_class"]),
            detail=_str(col["detail"]),
            started_at=_float(col["started_at"]),
            duration=_float(col["duration"]),
            phases=_build(PhaseTimings, _loads(col["phases"], "phases"), _PHASES, "phases"),
            address=_opt_str(col["address"]),
            fe_server=_opt_str(col["fe_server"]),
            be_server=_opt_str(col["be_server"]),
            tls=None if tls_text is None else _build(TlsFacts, _loads(tls_text, "tls"), _TLS, "tls"),
            auth_offered=_strs(auth.get("offered", [])),
            auth_used=_opt_str(auth.get("used")),
            steps=tuple(_build(Step, item, _STEP, "step") for item in _list(_loads(col["steps"], "steps"))),
            facts=_facts(_loads(col["facts"], "facts")),
            started_mono=_float(col["started_mono"]),
        )
    except ValueError as exc:  # StoreDataError, or TargetKind of an unknown value
        raise StoreDataError(str(exc)) from None


# --- the run -----------------------------------------------------------------------------------------------------


def _secret_key(value: Any, path: str, depth: int = 0) -> str | None:
    """The path of the first key in ``value`` that looks like it holds a secret, or None."""
    if depth > _MAX_DEPTH:
        raise StoreDataError("settings are nested too deeply")
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            lowered = str(key).lower()
            if any(word in lowered for word in _SECRET_WORDS):
                harmless = item is None or isinstance(item, bool)
                reference = lowered.endswith(_REFERENCE_SUFFIXES) and isinstance(item, str)
                if not (harmless or reference):
                    return where
            found = _secret_key(item, where, depth + 1)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _secret_key(item, f"{path}[{index}]", depth + 1)
            if found is not None:
                return found
    return None


def check_settings(settings: str) -> None:
    """Refuse run settings that are not a JSON object or have a key that looks like it holds a secret.

    A key containing ``password``, ``passwd``, ``secret`` or ``token`` may only hold null or a boolean (whether
    one is set: ``bearer_token: true``), or, if it ends in ``_source``, ``_env`` or ``_file``, a string saying
    where the secret comes from (``password_source: "env"``). Anything else raises :class:`StoreDataError`
    naming the key (never its value).
    """
    parsed = _loads(settings, "settings")
    if not isinstance(parsed, dict):
        raise StoreDataError("settings: expected a JSON object")
    found = _secret_key(parsed, "")
    if found is not None:
        raise StoreDataError(f"settings key {found!r} looks like a secret: a run store never keeps one")


def encode_run(run: RunInfo) -> tuple[object, ...]:
    """The values of :data:`RUN_COLUMNS` for ``run`` (after :func:`check_settings`)."""
    check_settings(run.settings)
    return (
        clean_text(run.run_id),
        _finite(run.started_at, "started_at"),
        None if run.ended_at is None else _finite(run.ended_at, "ended_at"),
        clean_text(run.casprobe_version),
        _finite(run.interval_s, "interval_s"),
        _dumps(list(run.targets)),
        _dumps(list(run.probes)),
        int(run.tls_verification),
        run.settings if clean_text(run.settings) == run.settings else _dumps(json.loads(run.settings)),
        clean_text(run.host),
    )


def decode_run(row: Sequence[Any]) -> RunInfo:
    """The :class:`RunInfo` of a row holding :data:`RUN_COLUMNS` in that order."""
    if len(row) != len(RUN_COLUMNS):
        raise StoreDataError(f"expected {len(RUN_COLUMNS)} columns, found {len(row)}")
    col = dict(zip(RUN_COLUMNS, row, strict=True))
    return RunInfo(
        run_id=_str(col["run_id"]),
        started_at=_float(col["started_at"]),
        casprobe_version=_str(col["casprobe_version"]),
        interval_s=_float(col["interval_s"]),
        targets=_strs(_loads(col["targets"], "targets")),
        probes=_strs(_loads(col["probes"], "probes")),
        tls_verification=_bool(col["tls_verification"]),
        settings=_str(col["settings"]),
        host=_str(col["host"]),
        ended_at=_opt_float(col["ended_at"]),
    )
