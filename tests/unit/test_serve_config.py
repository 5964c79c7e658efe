"""`casprobe serve`'s configuration: what loads, what is refused (with file, line and key), and no inline secret."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from casprobe.errors import ConfigError
from casprobe.model import TargetKind
from casprobe.serve_config import DEFAULT_TIMEOUT_OFFSET_S, key_line, load_serve_config

GOOD = """\
max_concurrency = 8
namespace = "outlook.lab.test"
targets = ["outlook.lab.test", "mb1.lab.test", "MB2.lab.test."]

[resolve]
"outlook.lab.test" = "127.0.0.10"
"mb1.lab.test" = "127.0.0.11"

[modules.health]
probes = ["health"]
timeout = 5

[modules.outlook]
probes = ["ews", "mapi", "health"]
mailbox = "alice@lab.test"
user = "LAB\\\\alice"
password_file = "alice.pw"
auth = "ntlm"
ca_file = "ca.pem"
targets = ["mb1.lab.test"]
"""

# A minimal valid head that the bad files below extend (its lines are 1-3).
HEAD = 'targets = ["mb1.lab.test"]\n[modules.h]\nprobes = ["health"]\n'


def _write(folder: Path, text: str) -> Path:
    (folder / "alice.pw").write_text("s3cret-Passw0rd\n", encoding="utf-8")
    (folder / "alice.pw").chmod(0o600)
    (folder / "ca.pem").write_text("not checked at load\n", encoding="utf-8")
    path = folder / "serve.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _refusal(folder: Path, text: str) -> str:
    path = _write(folder, text)
    with pytest.raises(ConfigError) as info:
        load_serve_config(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    return message[len(str(path)) :]


def test_a_good_configuration_loads_with_its_modules_targets_and_secret(tmp_path: Path) -> None:
    """The example loads: module order of probes, allowed names normalised, pins, default backends, and the
    password read from its file but shown nowhere (summary and repr describe the source only)."""
    config = load_serve_config(_write(tmp_path, GOOD))
    assert set(config.modules) == {"health", "outlook"}
    outlook = config.modules["outlook"]
    assert outlook.probes == ("health", "mapi", "ews")
    assert outlook.targets == ("mb1.lab.test",)
    assert config.modules["health"].targets == ("outlook.lab.test", "mb1.lab.test", "mb2.lab.test")
    assert config.modules["health"].settings.timeout_s == 5
    assert config.backends == ("outlook", "mb1", "mb2")
    assert config.max_concurrency == 8
    assert config.timeout_offset == DEFAULT_TIMEOUT_OFFSET_S
    assert outlook.settings.credentials is not None
    assert outlook.settings.credentials.secret.reveal() == "s3cret-Passw0rd"
    assert outlook.settings.server_names == ("mb1.lab.test",)
    summary = outlook.summary()
    assert summary["password"] == f"file {tmp_path / 'alice.pw'}"
    assert "s3cret" not in repr(config) + repr(summary)


def test_targets_are_built_only_for_allowed_names_with_their_pin(tmp_path: Path) -> None:
    """`target()` gives the namespace kind and pinned address for an allowed name (any case, final dot) and
    None for a name the module does not list."""
    config = load_serve_config(_write(tmp_path, GOOD))
    health = config.modules["health"]
    namespace = config.target(health, "Outlook.Lab.Test.")
    assert namespace is not None
    assert (namespace.kind, namespace.address, namespace.label) == (TargetKind.NAMESPACE, "127.0.0.10", "namespace")
    server = config.target(health, "mb1.lab.test")
    assert server is not None
    assert (server.kind, server.address, server.label) == (TargetKind.SERVER, "127.0.0.11", "mb1")
    assert config.target(config.modules["outlook"], "outlook.lab.test") is None
    assert config.target(health, "evil.example.com") is None


BAD = [
    pytest.param(
        HEAD + 'user = "LAB\\\\alice"\npassword = "hunter2"\n',
        ":5: modules.h.password: an inline secret is refused (a profile is copied and read by many, and would put "
        "it in clear on disk); use password_file or password_env",
        id="inline-password",
    ),
    pytest.param(
        HEAD + "timout = 3\n",
        ":4: modules.h.timout: unknown key (did you mean 'timeout'?)",
        id="unknown-module-key",
    ),
    pytest.param(
        "max_concurency = 3\n" + HEAD,
        ":1: max_concurency: unknown key (did you mean 'max_concurrency'?)",
        id="unknown-top-key",
    ),
    pytest.param(
        HEAD + "timeout = 0\n",
        ":4: modules.h.timeout: 0 is out of range (expected > 0 and ≤ 600)",
        id="timeout-zero",
    ),
    pytest.param(
        '[modules.h]\nprobes = ["health"]\n',
        ":1: modules.h.targets: no target allowed: list the names this module may probe (here or at the top)",
        id="no-targets",
    ),
    pytest.param(
        'targets = ["mb1.lab.test"]\n\n[modules.m]\nprobes = ["mapi"]\n',
        ":4: modules.m.probes: probe 'mapi' needs a mailbox and credentials (user + password_*)",
        id="mapi-without-mailbox",
    ),
    pytest.param(
        HEAD + '[modules.x]\nprobes = ["health", "smtp"]\n',
        ":5: modules.x.probes[1]: 'smtp' is not a probe (probes: health, autodiscover, mapi, ews)",
        id="unknown-probe",
    ),
    pytest.param(
        HEAD + '[modules.x]\nprobes = ["health"]\nuser = "LAB\\\\alice"\npassword_env = "CASPROBE_NO_SUCH_VAR"\n',
        ":7: modules.x.password_env: environment variable CASPROBE_NO_SUCH_VAR (the password) is not set",
        id="password-env-unset",
    ),
    pytest.param(
        HEAD + '[modules.x]\nprobes = ["health"]\nuser = "LAB\\\\alice"\npassword_file = "nope.pw"\n',
        ":7: modules.x.password_file: password file {dir}/nope.pw does not exist",
        id="password-file-missing",
    ),
    pytest.param(
        HEAD + '[modules.x]\nprobes = ["health"]\nuser = "LAB\\\\alice"\n',
        ":6: modules.x.user: needs password_env or password_file (an inline password is refused)",
        id="user-without-password",
    ),
    pytest.param(
        'targets = ["mb1.lab.test"]\n[resolve]\n"mb1.lab.test" = "not-an-ip"\n[modules.h]\nprobes = ["health"]\n',
        ":3: resolve.mb1.lab.test: 'not-an-ip' is not an IP address",
        id="bad-pin",
    ),
    pytest.param(
        'targets = ["mb1.lab.test", "bad name"]\n[modules.h]\nprobes = ["health"]\n',
        ":1: targets[1]: 'bad name' is not a DNS name",
        id="bad-target-name",
    ),
    pytest.param(
        'max_concurrency = 2\ntargets = ["a.test"]\n[modules.h]\nprobes = ["health", "ews", "mapi"]\n'
        'mailbox = "a@b.test"\nuser = "u"\npassword_file = "alice.pw"\n',
        ":1: max_concurrency: 2 is fewer than the 3 probes of module 'h'",
        id="concurrency-below-module",
    ),
    pytest.param(
        HEAD + "insecure = true\nca_file = 'ca.pem'\n",
        ":4: modules.h.insecure: true contradicts ca_file (verification off, yet a CA to verify with)",
        id="insecure-and-ca",
    ),
    pytest.param(
        'targets = ["a.test"]\n',
        ": modules: no module: add at least one [modules.NAME] table",
        id="no-module",
    ),
    pytest.param(
        HEAD + 'namespace = "x.test"\n',
        ":4: modules.h.namespace: unknown key (known keys: probes, mailbox, user, password_file, password_env, "
        "bearer_file, bearer_env, auth, channel_binding, ca_file, insecure, timeout, cert_warn_days, port, targets)",
        id="namespace-inside-module",
    ),
    pytest.param(
        'namespace = "outlook.test"\n' + HEAD,
        ":1: namespace: 'outlook.test' is not a target of any module",
        id="namespace-not-a-target",
    ),
    pytest.param(
        HEAD + "auth = 'kerberos'\n",
        ":4: modules.h.auth: 'kerberos' is not one of auto, ntlm, negotiate, basic, bearer",
        id="bad-auth",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_each_rule_refuses_its_bad_file_naming_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    """A file breaking one rule is refused with exactly this message: the file, the line of the key, the key."""
    assert _refusal(tmp_path, text) == expected.format(dir=tmp_path)


def test_invalid_toml_and_a_missing_file_are_refused(tmp_path: Path) -> None:
    """Broken TOML names the file and tomllib's position; a missing file says so."""
    assert "not valid TOML" in _refusal(tmp_path, "targets = [\n")
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_serve_config(tmp_path / "absent.toml")


def test_the_secret_never_appears_in_a_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal after the password was read (a later key is wrong) does not quote the password."""
    monkeypatch.setenv("CASPROBE_TEST_PW", "Sup3r-Secret!")
    text = HEAD + '[modules.x]\nprobes = ["health"]\nuser = "u"\npassword_env = "CASPROBE_TEST_PW"\ntimeout = -1\n'
    message = _refusal(tmp_path, text)
    assert "Sup3r-Secret" not in message
    assert message.startswith(":8: modules.x.timeout")


KEYS = """\
top = 1
[modules.alpha]
probes = ["x"]
  "timeout" = 3
[ modules . "beta-v2" ]
user = 'x'
[resolve]
"mb1.lab.test" = "127.0.0.1"
[modules.gamma]
inline.deep = 1
"""


@pytest.mark.parametrize(
    ("key", "line"),
    [
        ("top", 1),
        ("modules.alpha", 2),
        ("modules.alpha.probes[0]", 3),
        ("modules.alpha.timeout", 4),
        ("modules.beta-v2.user", 6),
        ("modules.beta-v2.nothing", 5),
        ("resolve.mb1.lab.test", 8),
        ("modules.gamma.inline", 10),
        ("absent", None),
    ],
)
def test_key_line_finds_keys_tables_and_falls_back_to_the_table(key: str, line: int | None) -> None:
    """`key_line` finds bare, quoted and spaced keys and headers, and a missing key's enclosing table."""
    assert key_line(textwrap.dedent(KEYS), key) == line
