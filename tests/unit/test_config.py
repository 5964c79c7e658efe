"""Profiles are validated at load time (one tiny bad file per rule, exact messages), and options override them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from casprobe.config import default_lab_dir, lab_profile_path, load_profile
from casprobe.errors import ConfigError, CredentialError
from casprobe.net.resolve import Pin
from casprobe.probes import PROBE_NAMES
from casprobe.targets import CheckOptions, build_plan

DATA = Path(__file__).parent / "data" / "config"
_REFUSED = "an inline secret is refused (a profile is copied and read by many, and would put it in clear on disk)"
_KNOWN = (
    "namespace, autodiscover, servers, port, resolve, ca_file, insecure, mailbox, user, password_file, "
    "password_env, bearer_file, bearer_env, auth, channel_binding, timeout, probes, cert_warn_days, "
    "mapi_notification_wait, lb, lab_dir"
)

# file -> the exact message ({path}: the file, {dir}: its folder)
INVALID = {
    "invalid-auth.toml": "{path}: auth: 'digest' is not one of auto, ntlm, negotiate, basic, bearer",
    "invalid-bearer-sources.toml": "{path}: bearer_env: set only one of bearer_file and bearer_env",
    "invalid-ca-file.toml": "{path}: ca_file: {dir}/missing-ca.pem does not exist or is not a file",
    "invalid-cert-warn-days.toml": "{path}: cert_warn_days: -1 is out of range (expected 0..3650)",
    "invalid-channel-binding.toml": "{path}: channel_binding: expected true or false, got an integer",
    "invalid-credential-twice.toml": "{path}: user: set both at the top level and in [mailbox]; keep one",
    "invalid-inline-bearer.toml": f"{{path}}: bearer: {_REFUSED}; use bearer_file or bearer_env",
    "invalid-inline-password-mailbox.toml": (
        f"{{path}}: mailbox.password: {_REFUSED}; use password_file or password_env"
    ),
    "invalid-inline-password.toml": f"{{path}}: password: {_REFUSED}; use password_file or password_env",
    "invalid-insecure-type.toml": "{path}: insecure: expected true or false, got a string",
    "invalid-insecure-with-ca-file.toml": (
        "{path}: insecure: true contradicts ca_file (verification off, yet a CA to verify with)"
    ),
    "invalid-mailbox-key.toml": "{path}: mailbox.smpt: unknown key (did you mean 'smtp'?)",
    "invalid-mailbox-type.toml": "{path}: mailbox: expected an SMTP address or a [mailbox] table, got an integer",
    "invalid-mailbox.toml": "{path}: mailbox: 'alice' is not an SMTP address",
    "invalid-namespace-name.toml": "{path}: namespace: 'outlook example.test' is not a DNS name",
    "invalid-namespace-type.toml": "{path}: namespace: expected a string, got an integer",
    "invalid-notification-wait.toml": "{path}: mapi_notification_wait: 30 s must be shorter than the timeout (20 s)",
    "invalid-password-env-name.toml": "{path}: password_env: '1ALICE' is not an environment variable name",
    "invalid-password-sources.toml": "{path}: password_env: set only one of password_file and password_env",
    "invalid-port-boolean.toml": "{path}: port: expected an integer, got a boolean",
    "invalid-port-range.toml": "{path}: port: 70000 is out of range (expected 1..65535)",
    "invalid-probes-empty.toml": "{path}: probes: must name at least one probe",
    "invalid-probes-unknown.toml": "{path}: probes[1]: 'owa' is not a probe (probes: health, autodiscover, mapi, ews)",
    "invalid-resolve-address-type.toml": (
        "{path}: resolve.mb1.example.test: expected an IP address as a string, got an integer"
    ),
    "invalid-resolve-address.toml": "{path}: resolve.mb1.example.test: '127.0.0.300' is not an IP address",
    "invalid-resolve-type.toml": "{path}: resolve: expected a table of name = address, got a string",
    "invalid-servers-duplicate.toml": "{path}: servers[1]: 'MB1.example.test' is listed twice",
    "invalid-servers-name.toml": "{path}: servers[1]: 'mb_2!.example.test' is not a DNS name",
    "invalid-servers-type.toml": "{path}: servers: expected an array of server names, got a string",
    "invalid-timeout-type.toml": "{path}: timeout: expected a number, got a string",
    "invalid-timeout-zero.toml": "{path}: timeout: 0 is out of range (expected > 0 and ≤ 600)",
    "invalid-toml.toml": "{path}: not valid TOML: Invalid value (at line 1, column 13)",
    "invalid-unknown-key.toml": "{path}: namespce: unknown key (did you mean 'namespace'?)",
    "invalid-unknown-key-far.toml": f"{{path}}: label: unknown key (known keys: {_KNOWN})",
    "invalid-user-empty.toml": "{path}: user: must not be empty",
}

GOOD = """
namespace = "Outlook.Example.Test"
autodiscover = "autodiscover.example.test"
servers = ["mb1.example.test", "mb2.example.test"]
port = 8443
ca_file = "ca.pem"
auth = "ntlm"
channel_binding = false
timeout = 7.5
probes = ["ews", "health"]
cert_warn_days = 14
mapi_notification_wait = 2

[resolve]
"outlook.example.test" = "127.0.0.10"
"mb1.example.test" = "127.0.0.11"

[mailbox]
smtp = "alice@example.test"
user = "EX\\\\alice"
password_file = "secrets/alice.pw"
"""


def test_every_invalid_file_has_its_expected_message_and_vice_versa() -> None:
    """Each invalid-*.toml in the data folder is listed here with its message, and each listed file exists."""
    assert {p.name for p in DATA.glob("invalid-*.toml")} == set(INVALID)


@pytest.mark.parametrize("name", sorted(INVALID))
def test_an_invalid_profile_is_refused_with_a_message_naming_file_key_and_problem(name: str) -> None:
    """Loading the bad file raises ConfigError with exactly the expected message."""
    path = DATA / name
    with pytest.raises(ConfigError) as caught:
        load_profile(path)
    assert str(caught.value) == INVALID[name].format(path=path, dir=path.parent)


def test_a_good_profile_loads_every_field(tmp_path: Path) -> None:
    """Every key of a full profile lands in the Profile, names lower-cased, relative paths from its folder."""
    (tmp_path / "ca.pem").write_text("not checked at load time\n")
    path = tmp_path / "p.toml"
    path.write_text(GOOD)
    profile = load_profile(path)
    assert profile.namespace == "outlook.example.test"
    assert profile.servers == ("mb1.example.test", "mb2.example.test")
    assert profile.port == 8443
    assert profile.ca_file == tmp_path / "ca.pem"
    assert profile.auth == "ntlm"
    assert profile.channel_binding is False
    assert profile.timeout == 7.5
    assert profile.probes == ("health", "ews")  # report order, whatever the file's order
    assert profile.cert_warn_days == 14
    assert profile.mapi_notification_wait == 2.0
    assert profile.resolve == (Pin("outlook.example.test", "127.0.0.10"), Pin("mb1.example.test", "127.0.0.11"))
    assert (profile.mailbox, profile.user) == ("alice@example.test", "EX\\alice")
    assert profile.password_file == tmp_path / "secrets" / "alice.pw"


def test_the_lab_profile_format_loads(tmp_path: Path) -> None:
    """What `casprobe lab up` writes (casprobe/lab/profile.py) is a valid profile with pins, CA and mailbox."""
    from casprobe.lab.org import LabConfig, build_org
    from casprobe.lab.profile import render_profile
    from casprobe.lab.secrets import PasswordBook

    org = build_org(LabConfig(base_address="127.0.99.10", port=8443))
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "ca.pem").write_text("x")
    (tmp_path / "profile.toml").write_text(render_profile(org, tmp_path, PasswordBook(org, tmp_path)))
    profile = load_profile(lab_profile_path(tmp_path))
    assert profile.namespace == org.namespace
    assert profile.servers == tuple(s.fqdn for s in org.servers)
    assert {pin.name: pin.address for pin in profile.resolve} == org.names()
    assert profile.user == f"{org.netbios}\\{org.users[0].alias}"
    assert profile.mailbox == org.users[0].smtp
    assert profile.password_file == tmp_path / "secrets" / f"{org.users[0].alias}.password"


@pytest.mark.parametrize(
    "env",
    [{}, {"XDG_STATE_HOME": "/srv/state"}, {"CASPROBE_LAB_DIR": "/srv/lab", "XDG_STATE_HOME": "/srv/state"}],
)
def test_the_default_lab_dir_stays_in_step_with_the_lab(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """config.default_lab_dir re-implements casprobe.lab.cli.default_lab_dir (the product may not import the lab)."""
    from casprobe.lab.cli import default_lab_dir as lab_default

    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert default_lab_dir() == lab_default()


def _lab(tmp_path: Path, password: str = "pw-in-file") -> Path:
    (tmp_path / "alice.pw").write_text(password + "\n")
    os.chmod(tmp_path / "alice.pw", 0o600)
    (tmp_path / "profile.toml").write_text(
        'namespace = "outlook.example.test"\nservers = ["mb1.example.test"]\nport = 8443\n'
        '[resolve]\n"outlook.example.test" = "127.0.0.10"\n'
        '[mailbox]\nsmtp = "alice@example.test"\nuser = "EX\\\\alice"\npassword_file = "alice.pw"\n'
    )
    return tmp_path


def test_options_override_the_profile_key_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--lab DIR loads DIR/profile.toml; the namespace, servers, port, pins, timeout and password source given as
    options win; what they leave out comes from the profile."""
    monkeypatch.setenv("OTHER_PW", "pw-in-env")
    options = CheckOptions(
        namespace="mail.example.test",
        servers=("mb9.example.test",),
        lab=True,
        lab_dir=_lab(tmp_path),
        resolve=("outlook.example.test:127.0.0.20", "mb9.example.test:127.0.0.29:9443"),
        timeout=3.0,
        password_env="OTHER_PW",
    )
    plan = build_plan(options, available=PROBE_NAMES, interactive=False)
    assert (plan.namespace, plan.servers, plan.port) == ("mail.example.test", ("mb9.example.test",), 8443)
    assert {p.name: (p.address, p.port) for p in plan.pins} == {
        "outlook.example.test": ("127.0.0.20", None),
        "mb9.example.test": ("127.0.0.29", 9443),
    }
    assert plan.settings.timeout_s == 3.0
    assert plan.settings.mailbox == "alice@example.test"
    assert plan.settings.credentials is not None
    assert plan.settings.credentials.secret.reveal() == "pw-in-env"
    assert plan.password_source == "env"
    assert plan.probes == PROBE_NAMES
    assert [t.label for t in plan.targets()] == ["namespace", "mb9"]
    assert "pw-in" not in repr(plan) + str(plan.summary())


def test_the_default_lab_folder_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--lab without a folder reads $CASPROBE_LAB_DIR/profile.toml, and the password from its password_file."""
    monkeypatch.setenv("CASPROBE_LAB_DIR", str(_lab(tmp_path)))
    plan = build_plan(CheckOptions(lab=True), available=("health",), interactive=False)
    assert plan.namespace == "outlook.example.test"
    assert plan.password_source == "file"
    assert plan.probes == ("health",)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (CheckOptions(), ConfigError, "nothing to probe: give a NAMESPACE, --server NAME, --profile FILE or --lab"),
        (
            CheckOptions(namespace="o.example.test", user="EX\\alice"),
            CredentialError,
            "no password for EX\\alice: use --password-env VAR or --password-file PATH (standard input is not a "
            "terminal, so casprobe cannot ask)",
        ),
        (
            CheckOptions(namespace="o.example.test", password_env="PW"),
            ConfigError,
            "a password source was given without --user",
        ),
        (
            CheckOptions(namespace="o.example.test", user="EX\\alice", password_env="CASPROBE_TEST_UNSET"),
            CredentialError,
            "environment variable CASPROBE_TEST_UNSET (the password) is not set",
        ),
        (
            CheckOptions(servers=("mb1.example.test",), discover_servers=True),
            ConfigError,
            "--discover-servers needs a NAMESPACE to ask through",
        ),
        (
            CheckOptions(namespace="o.example.test", probes=("mapi",)),
            ConfigError,
            "probe 'mapi' needs a mailbox (--mailbox) and credentials (--user or a token)",
        ),
        (
            CheckOptions(namespace="o.example.test", timeout=5, notification_wait=5),
            ConfigError,
            "--notification-wait 5 must be shorter than --timeout 5",
        ),
        (
            CheckOptions(namespace="o.example.test", auth="bearer"),
            ConfigError,
            "--auth bearer needs a token: --bearer-env VAR or --bearer-file PATH",
        ),
        (
            CheckOptions(namespace="o.example.test", insecure=True, ca_file=Path("/x.pem")),
            ConfigError,
            "--insecure and --ca-file contradict each other: use one",
        ),
        (
            CheckOptions(namespace="o.example.test", lab=True, profile=Path("/p.toml")),
            ConfigError,
            "--lab and --profile both name a profile: use one",
        ),
    ],
)
def test_options_that_cannot_work_are_refused_with_one_clear_message(
    options: CheckOptions, error: type[Exception], message: str
) -> None:
    """Contradictions, missing sources and non-interactive password prompts raise the error the CLI maps to 3."""
    with pytest.raises(error) as caught:
        build_plan(options, available=PROBE_NAMES, interactive=False)
    assert str(caught.value) == message


def test_probes_that_need_a_mailbox_are_left_out_of_the_defaults_with_a_note() -> None:
    """Without mailbox and credentials, the default probe list keeps only health and says why."""
    plan = build_plan(CheckOptions(namespace="o.example.test"), available=PROBE_NAMES, interactive=False)
    assert plan.probes == ("health",)
    assert plan.skipped == "autodiscover, mapi, ews skipped: they need --mailbox and credentials"


def test_a_missing_lab_profile_says_where_it_looked(tmp_path: Path) -> None:
    """--lab on a folder without profile.toml names the path and how to start a lab there."""
    with pytest.raises(ConfigError, match=r"no lab profile at .*profile\.toml \(start a lab with 'casprobe lab up"):
        build_plan(CheckOptions(lab=True, lab_dir=tmp_path), available=PROBE_NAMES, interactive=False)
