"""Named MAPI error codes (the ``ec*`` values of ROP ReturnValue and Connect/Execute ErrorCode fields).

Values are from [MS-OXCDATA] section 2.4 (2.4.1 error codes, 2.4.2 additional error codes) and, where that
table was only partly reachable, cross-checked against [MS-OXCSTOR] 3.2.5.1.3 (RopLogon return codes),
[MS-OXCRPC] 3.2.4.1.3.2 (ecServerBusy) and OpenChange's ``mapistatus.h`` (a transcription of
[MS-OXCDATA] v20121003). Sources per value are noted below; :func:`error_code_name` falls back to hex.
No I/O.
"""

from __future__ import annotations

__all__ = [
    "EC_ACCESS_DENIED",
    "EC_BACKUP_IN_PROGRESS",
    "EC_BAD_CONFIG",
    "EC_BUFFER_TOO_SMALL",
    "EC_CACHED_MODE_REQUIRED",
    "EC_CLIENT_VER_DISALLOWED",
    "EC_DISMOUNT_IN_PROGRESS",
    "EC_END_OF_SESSION",
    "EC_ERROR",
    "EC_EXITING",
    "EC_INVALID_PARAM",
    "EC_JET_ERROR",
    "EC_LOGIN_FAILURE",
    "EC_LOGIN_PERM",
    "EC_MAILBOX_DISABLED",
    "EC_MAILBOX_IN_TRANSIT",
    "EC_MAPI_OOM",
    "EC_MDB_NOT_INIT",
    "EC_MOUNT_IN_PROGRESS",
    "EC_NETWORK",
    "EC_NONE",
    "EC_NOT_ENCRYPTED",
    "EC_NOT_FOUND",
    "EC_NOT_SUPPORTED",
    "EC_PROFILE_NOT_CONFIGURED",
    "EC_PROTOCOL_DISABLED",
    "EC_RPC_FORMAT",
    "EC_SERVER_BUSY",
    "EC_SERVER_OOM",
    "EC_SERVER_PAUSED",
    "EC_UNKNOWN_CODE_PAGE",
    "EC_UNKNOWN_USER",
    "EC_VERSION_MISMATCH",
    "EC_WRONG_SERVER",
    "error_code_name",
]

# [MS-OXCDATA] 2.4.1 (seen on the spec page) unless noted.
EC_NONE = 0x00000000  # Success / ecNone
EC_ERROR = 0x80004005  # GeneralFailure (E_FAIL, MAPI_E_CALL_FAILED, ecError)
EC_MAPI_OOM = 0x8007000E  # OutOfMemory (ecMAPIOOM)
EC_INVALID_PARAM = 0x80070057  # InvalidParameter (ecInvalidParam)
EC_ACCESS_DENIED = 0x80070005  # AccessDenied (ecAccessDenied)
EC_LOGIN_FAILURE = 0x80040111  # LogonFailed (MAPI_E_LOGON_FAILED); [MS-OXCSTOR] 3.2.5.1.3
EC_NOT_SUPPORTED = 0x80040102  # NotSupported (MAPI_E_NO_SUPPORT); OpenChange
EC_NOT_FOUND = 0x8004010F  # NotFound (MAPI_E_NOT_FOUND, ecNotFound); OpenChange
EC_VERSION_MISMATCH = 0x80040110  # VersionMismatch (MAPI_E_VERSION); OpenChange
EC_NETWORK = 0x80040115  # NetworkError (MAPI_E_NETWORK_ERROR, ecNetwork); OpenChange
EC_END_OF_SESSION = 0x80040200  # EndOfSession (MAPI_E_END_OF_SESSION); OpenChange
# [MS-OXCDATA] 2.4.2 additional error codes.
EC_PROFILE_NOT_CONFIGURED = 0x0000011C  # [MS-OXCSTOR] 3.2.5.1.3
EC_JET_ERROR = 0x000003EA  # IsamError (spec page; OpenChange has 0x3E4)
EC_UNKNOWN_USER = 0x000003EB  # UnknownUser
EC_EXITING = 0x000003ED  # Exiting: the server is stopping
EC_BAD_CONFIG = 0x000003EE  # BadConfiguration
EC_UNKNOWN_CODE_PAGE = 0x000003EF  # UnknownCodePage
EC_SERVER_OOM = 0x000003F0  # ServerMemory (ecServerOOM)
EC_LOGIN_PERM = 0x000003F2  # LoginPermission (ecLoginPerm)
EC_MDB_NOT_INIT = 0x00000476  # DatabaseNotInitialized (ecMdbNotInit); OpenChange
EC_WRONG_SERVER = 0x00000478  # WrongServer; [MS-OXCSTOR] 3.2.5.1.3, [MS-OXCROPS] 2.2.3.1.4
EC_BUFFER_TOO_SMALL = 0x0000047D  # BufferTooSmall; OpenChange
EC_SERVER_PAUSED = 0x0000047F  # ServerPaused; [MS-OXCSTOR] 3.2.5.1.3
EC_SERVER_BUSY = 0x00000480  # ServerBusy; [MS-OXCRPC] 3.2.4.1.3.2
EC_RPC_FORMAT = 0x000004B6  # RpcFormat: badly formatted RPC buffer; OpenChange
EC_CLIENT_VER_DISALLOWED = 0x000004DF  # ClientVersionBlocked; OpenChange
EC_CACHED_MODE_REQUIRED = 0x000004E1  # CachedModeRequired; OpenChange
EC_MAILBOX_IN_TRANSIT = 0x0000050C  # MailboxInTransit; [MS-OXCSTOR] 3.2.5.1.3
EC_BACKUP_IN_PROGRESS = 0x0000050D  # BackupInProgress; OpenChange
EC_PROTOCOL_DISABLED = 0x000007D8  # ProtocolDisabled; OpenChange
EC_MAILBOX_DISABLED = 0x0000096C  # MailboxDisabled; [MS-OXCSTOR] 3.2.5.1.3
EC_NOT_ENCRYPTED = 0x00000970  # NotEncrypted; OpenChange
EC_MOUNT_IN_PROGRESS = 0x00000A34  # DatabaseMountInProgress; OpenChange
EC_DISMOUNT_IN_PROGRESS = 0x00000A35  # DatabaseDismountInProgress; OpenChange

_NAMES: dict[int, str] = {
    EC_NONE: "ecNone",
    EC_ERROR: "ecError",
    EC_MAPI_OOM: "ecMAPIOOM",
    EC_INVALID_PARAM: "ecInvalidParam",
    EC_ACCESS_DENIED: "ecAccessDenied",
    EC_LOGIN_FAILURE: "ecLoginFailure",
    EC_NOT_SUPPORTED: "ecNotSupported",
    EC_NOT_FOUND: "ecNotFound",
    EC_VERSION_MISMATCH: "ecVersionMismatch",
    EC_NETWORK: "ecNetwork",
    EC_END_OF_SESSION: "ecEndOfSession",
    EC_PROFILE_NOT_CONFIGURED: "ecProfileNotConfigured",
    EC_JET_ERROR: "ecJetError",
    EC_UNKNOWN_USER: "ecUnknownUser",
    EC_EXITING: "ecExiting",
    EC_BAD_CONFIG: "ecBadConfig",
    EC_UNKNOWN_CODE_PAGE: "ecUnknownCodePage",
    EC_SERVER_OOM: "ecServerOOM",
    EC_LOGIN_PERM: "ecLoginPerm",
    EC_MDB_NOT_INIT: "ecMdbNotInit",
    EC_WRONG_SERVER: "ecWrongServer",
    EC_BUFFER_TOO_SMALL: "ecBufferTooSmall",
    EC_SERVER_PAUSED: "ecServerPaused",
    EC_SERVER_BUSY: "ecServerBusy",
    EC_RPC_FORMAT: "ecRpcFormat",
    EC_CLIENT_VER_DISALLOWED: "ecClientVerDisallowed",
    EC_CACHED_MODE_REQUIRED: "ecCachedModeRequired",
    EC_MAILBOX_IN_TRANSIT: "ecMailboxInTransit",
    EC_BACKUP_IN_PROGRESS: "ecBackupInProgress",
    EC_PROTOCOL_DISABLED: "ecProtocolDisabled",
    EC_MAILBOX_DISABLED: "ecMailboxDisabled",
    EC_NOT_ENCRYPTED: "ecNotEncrypted",
    EC_MOUNT_IN_PROGRESS: "ecMountInProgress",
    EC_DISMOUNT_IN_PROGRESS: "ecDismountInProgress",
}


def error_code_name(code: int) -> str:
    """The ``ec*`` name of a 32-bit error code, or ``0x%08X`` when it is not in the table."""
    name = _NAMES.get(code)
    return name if name is not None else f"0x{code & 0xFFFFFFFF:08X}"
