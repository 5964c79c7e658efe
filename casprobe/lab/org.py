"""The simulated organisation: domain ``lab.test``, mailbox servers in one DAG, databases, users.

Everything here is plain data, generated once at ``lab up`` and saved as JSON in the lab folder so that every
process (the lab daemon, the CLI, tests) sees the same organisation. Passwords are not part of it: they live in
``secrets.json`` (mode 0600) beside it, see :mod:`casprobe.lab.secrets`.

Naming follows Exchange 2013+ conventions: a user's legacyExchangeDN is
``/o=<ORG>/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Recipients/cn=<hex>-<alias>``; MAPI/HTTP URLs
carry ``MailboxId=<mailbox guid>@<domain>`` ([MS-OXCMAPIHTTP] 2.2.2, [MS-OXDSCLI] 4.4).
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from casprobe.errors import ConfigError

__all__ = [
    "ADMIN_GROUP_DN",
    "Database",
    "LabConfig",
    "Org",
    "Server",
    "User",
    "build_org",
]

ADMIN_GROUP = "Exchange Administrative Group (FYDIBOHF23SPDLT)"
ORG_NAME = "LAB"
ADMIN_GROUP_DN = f"/o={ORG_NAME}/ou={ADMIN_GROUP}"

_FIRST_NAMES = (
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj",
    "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yolanda",
)  # fmt: skip

UrlMode = Literal["namespace", "server"]
LbMode = Literal["l7", "l4"]


@dataclass(frozen=True, slots=True)
class Server:
    """A mailbox server that also runs Client Access services.

    Attributes:
        name: short name, lower case (``mb1``); Exchange headers carry it upper case (``MB1``).
        fqdn: ``mb1.lab.test``.
        address: its own loopback address.
        port: the HTTPS port it listens on.
        guid: the server's Exchange GUID (used in its server DN).
    """

    name: str
    fqdn: str
    address: str
    port: int
    guid: str

    @property
    def netbios(self) -> str:
        """The name as Exchange puts it in X-FEServer / X-BEServer."""
        return self.name.upper()

    @property
    def server_dn(self) -> str:
        """The Exchange 2013+ style server DN (``…/cn=Configuration/cn=Servers/cn=<guid>@<domain>``)."""
        domain = self.fqdn.partition(".")[2]
        return f"{ADMIN_GROUP_DN}/cn=Configuration/cn=Servers/cn={self.guid}@{domain}"


@dataclass(frozen=True, slots=True)
class Database:
    """A mailbox database with copies on several DAG members.

    Attributes:
        name: ``DB01``.
        copies: the servers holding a copy, in activation preference order; the first is active at start.
        guid: the database GUID.
    """

    name: str
    copies: tuple[str, ...]
    guid: str


@dataclass(frozen=True, slots=True)
class User:
    """A mailbox user.

    Attributes:
        alias: ``alice``.
        display_name: ``Alice Lab``.
        smtp: primary SMTP address.
        legacy_dn: legacyExchangeDN (the UserDn of a MAPI Connect).
        mailbox_guid: the mailbox GUID (the MailboxId of MAPI/HTTP URLs, with ``@domain``).
        database: the database holding the mailbox.
    """

    alias: str
    display_name: str
    smtp: str
    legacy_dn: str
    mailbox_guid: str
    database: str

    @property
    def mailbox_id(self) -> str:
        """``<mailbox guid>@<domain>`` as carried in MAPI/HTTP URLs."""
        return f"{self.mailbox_guid}@{self.smtp.partition('@')[2]}"


@dataclass(frozen=True, slots=True)
class LabConfig:
    """What ``lab up`` was asked for: enough to rebuild the same organisation.

    Attributes:
        servers: number of mailbox servers.
        databases: number of databases (defaults to the number of servers).
        users_per_database: mailboxes per database.
        base_address: HAProxy's address; servers take the following addresses.
        port: the HTTPS port of every server and of HAProxy.
        lb: ``l7`` (TLS terminated, per-vdir health checks) or ``l4`` (TCP passthrough).
        domain: the SMTP/AD domain.
        url_mode: per server, whether Autodiscover hands out the namespace or the server's own name.
        check_inter_ms, check_fall, check_rise: HAProxy health-check timing.
        switchover_s: how long a database copy takes to move (clients see it as unavailable meanwhile).
        failover_delay_s: how long the DAG takes to notice a powered-off member before failing over.
        pending_period_ms: X-PendingPeriod, the MAPI/HTTP keep-alive interval.
        expiration_ms: X-ExpirationInfo, the MAPI/HTTP session idle lifetime.
        notification_wait_s: how long a NotificationWait is held when nothing happens ([MS-OXCMAPIHTTP] 3.2.2: 5 min).
        extended_protection: refuse NTLM/Negotiate without a matching channel binding.
        auth_offered: the WWW-Authenticate schemes offered, in order.
        response_delay_ms: added before every answer (a stand-in for WAN round trips and server latency).
    """

    servers: int = 3
    databases: int = 0
    users_per_database: int = 2
    base_address: str = "127.0.0.10"
    port: int = 443
    lb: LbMode = "l7"
    domain: str = "lab.test"
    url_mode: dict[str, UrlMode] = field(default_factory=dict)
    check_inter_ms: int = 1000
    check_fall: int = 2
    check_rise: int = 2
    switchover_s: float = 2.0
    failover_delay_s: float = 3.0
    pending_period_ms: int = 30000
    expiration_ms: int = 900000
    notification_wait_s: float = 300.0
    extended_protection: bool = False
    auth_offered: tuple[str, ...] = ("Negotiate", "NTLM", "Basic")
    response_delay_ms: int = 0

    def validate(self) -> None:
        """Raise ConfigError for a configuration the lab cannot run."""
        if not 1 <= self.servers <= 16:
            raise ConfigError(f"--servers must be between 1 and 16, not {self.servers}")
        if not 0 <= self.databases <= 64:
            raise ConfigError(f"the number of databases must be between 1 and 64, not {self.databases}")
        if not 1 <= self.users_per_database <= 10:
            raise ConfigError("users per database must be between 1 and 10")
        if self.lb not in ("l7", "l4"):
            raise ConfigError(f"--lb must be l7 or l4, not {self.lb!r}")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range")
        try:
            base = ipaddress.IPv4Address(self.base_address)
        except ValueError as exc:
            raise ConfigError(f"base address {self.base_address!r} is not an IPv4 address") from exc
        last = ipaddress.IPv4Address(int(base) + self.servers)
        loopback = ipaddress.IPv4Network("127.0.0.0/8")
        if base not in loopback or last not in loopback:
            raise ConfigError(f"the lab only binds loopback addresses (127.0.0.0/8), not {self.base_address}")
        for name, mode in self.url_mode.items():
            if mode not in ("namespace", "server"):
                raise ConfigError(f"url mode of {name} must be 'namespace' or 'server', not {mode!r}")
        if not 0 <= self.response_delay_ms <= 10000:
            raise ConfigError("the response delay must be between 0 and 10000 ms")
        if self.check_inter_ms < 100 or self.check_fall < 1 or self.check_rise < 1:
            raise ConfigError("health checks need inter >= 100 ms and fall, rise >= 1")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["auth_offered"] = list(self.auth_offered)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "auth_offered" in known:
            known["auth_offered"] = tuple(known["auth_offered"])
        return cls(**known)


@dataclass(frozen=True, slots=True)
class Org:
    """The whole organisation.

    Attributes:
        config: what it was built from.
        domain: ``lab.test``; netbios: the NTLM domain (``LAB``).
        namespace: the load-balanced name (``outlook.lab.test``); autodiscover: ``autodiscover.lab.test``.
        lb_address: the address the namespace names resolve to (HAProxy).
        servers, databases, users: the members.
    """

    config: LabConfig
    domain: str
    netbios: str
    namespace: str
    autodiscover: str
    lb_address: str
    servers: tuple[Server, ...]
    databases: tuple[Database, ...]
    users: tuple[User, ...]

    def server(self, name: str) -> Server:
        for server in self.servers:
            if server.name == name.lower() or server.fqdn == name.lower():
                return server
        raise ConfigError(f"no server named {name!r} in the lab (servers: {', '.join(self.server_names)})")

    def database(self, name: str) -> Database:
        for db in self.databases:
            if db.name.lower() == name.lower():
                return db
        known = ", ".join(d.name for d in self.databases)
        raise ConfigError(f"no database named {name!r} in the lab (databases: {known})")

    @property
    def server_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.servers)

    def url_mode(self, server: str) -> UrlMode:
        return self.config.url_mode.get(server, "namespace")

    def names(self) -> dict[str, str]:
        """Every DNS name of the lab and the address it resolves to."""
        out = {self.namespace: self.lb_address, self.autodiscover: self.lb_address}
        out.update({s.fqdn: s.address for s in self.servers})
        return out

    def find_user(self, key: str) -> User | None:
        """Find a user by SMTP address, alias, ``DOMAIN\\alias``, UPN, legacyDN or MailboxId (case-insensitive)."""
        k = key.strip().lower()
        if "\\" in k:
            domain, _, k = k.partition("\\")
            if domain != self.netbios.lower():
                return None
        for user in self.users:
            if k in (user.smtp.lower(), user.alias, user.legacy_dn.lower(), user.mailbox_id.lower()):
                return user
            if k == user.mailbox_guid.lower():
                return user
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config.to_json(),
            "domain": self.domain,
            "netbios": self.netbios,
            "namespace": self.namespace,
            "autodiscover": self.autodiscover,
            "lb_address": self.lb_address,
            "servers": [asdict(s) for s in self.servers],
            "databases": [{**asdict(d), "copies": list(d.copies)} for d in self.databases],
            "users": [asdict(u) for u in self.users],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Org:
        try:
            return cls(
                config=LabConfig.from_json(data["config"]),
                domain=data["domain"],
                netbios=data["netbios"],
                namespace=data["namespace"],
                autodiscover=data["autodiscover"],
                lb_address=data["lb_address"],
                servers=tuple(Server(**s) for s in data["servers"]),
                databases=tuple(Database(d["name"], tuple(d["copies"]), d["guid"]) for d in data["databases"]),
                users=tuple(User(**u) for u in data["users"]),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"the lab's org.json is damaged ({exc!r}); run 'casprobe lab up' again") from exc

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Org:
        try:
            return cls.from_json(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the lab organisation {path}: {exc}") from exc


def _guid(seed: str) -> str:
    """A GUID that depends only on the lab's names, so that a rebuilt lab keeps its identities."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, seed))


def build_org(config: LabConfig) -> Org:
    """Build the organisation described by ``config``."""
    config.validate()
    n_db = config.databases or config.servers
    domain = config.domain.lower()
    netbios = domain.partition(".")[0].upper()[:15]
    base = ipaddress.IPv4Address(config.base_address)
    servers = tuple(
        Server(
            name=f"mb{i}",
            fqdn=f"mb{i}.{domain}",
            address=str(base + i),
            port=config.port,
            guid=_guid(f"server.mb{i}.{domain}"),
        )
        for i in range(1, config.servers + 1)
    )
    names = [s.name for s in servers]
    databases = []
    for i in range(n_db):
        # active on member i (round robin), passive copies on the others in rotating preference order
        order = names[i % len(names) :] + names[: i % len(names)]
        databases.append(Database(f"DB{i + 1:02d}", tuple(order), _guid(f"database.{i + 1}.{domain}")))
    users = []
    pool = list(_FIRST_NAMES)
    for i in range(n_db * config.users_per_database):
        alias = pool[i] if i < len(pool) else f"user{i + 1:03d}"
        db = databases[i % n_db]
        guid = _guid(f"mailbox.{alias}.{domain}")
        users.append(
            User(
                alias=alias,
                display_name=f"{alias.capitalize()} Lab",
                smtp=f"{alias}@{domain}",
                legacy_dn=f"{ADMIN_GROUP_DN}/cn=Recipients/cn={guid.replace('-', '')[:32]}-{alias}",
                mailbox_guid=guid,
                database=db.name,
            )
        )
    return Org(
        config=config,
        domain=domain,
        netbios=netbios,
        namespace=f"outlook.{domain}",
        autodiscover=f"autodiscover.{domain}",
        lb_address=str(base),
        servers=servers,
        databases=tuple(databases),
        users=tuple(users),
    )
