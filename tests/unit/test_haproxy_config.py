"""Unit tests of casprobe.lab.haproxy: configuration rendering (validated by the real ``haproxy -c``) and
``show stat`` parsing."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import trustme

from casprobe.lab.haproxy import (
    DEFAULT_VDIRS,
    HAPROXY_BIN,
    L4_BACKEND,
    HaproxyConfigError,
    LbBackendServer,
    LbSettings,
    RuntimeApiError,
    backend_name,
    backend_names,
    check_config,
    parse_show_stat,
    render_config,
    write_config,
)

needs_haproxy = pytest.mark.skipif(not HAPROXY_BIN.exists(), reason=f"{HAPROXY_BIN} is not installed")

SERVERS = tuple(LbBackendServer(f"mb{i}", f"mb{i}.lab.test", f"127.0.0.1{i}", 443) for i in (1, 2, 3))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A CA file and a load-balancer PEM (key + chain), as the lab writes them."""
    folder = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    leaf = ca.issue_cert("outlook.lab.test", "autodiscover.lab.test")
    leaf.private_key_and_cert_chain_pem.write_to_path(str(folder / "lb.pem"))
    return folder / "ca.pem", folder / "lb.pem"


def settings(tmp_path: Path, mode: str = "l7", **kw: Any) -> LbSettings:
    base = LbSettings(
        mode="l7" if mode == "l7" else "l4",
        bind_address="127.0.0.10",
        port=443,
        ca_file=tmp_path / "ca.pem",
        lb_pem=tmp_path / "lb.pem",
        run_dir=tmp_path / "run",
    )
    return dataclasses.replace(base, **kw)


def section(cfg: str, header: str) -> str:
    """Return the lines of one configuration section (up to the next blank line)."""
    match = re.search(rf"^{re.escape(header)}\n(.*?)(?:\n\n|\Z)", cfg, re.MULTILINE | re.DOTALL)
    assert match is not None, f"no section {header!r} in:\n{cfg}"
    return match.group(1)


@needs_haproxy
@pytest.mark.parametrize("mode", ["l7", "l4"])
def test_rendered_config_passes_haproxy_check(tmp_path: Path, pki: tuple[Path, Path], mode: str) -> None:
    """The real HAProxy 2.6 accepts both shapes, certificates and all."""
    ca, lb = pki
    path = write_config(settings(tmp_path, mode, ca_file=ca, lb_pem=lb), SERVERS)
    check_config(path)


@needs_haproxy
def test_check_config_reports_haproxy_messages(tmp_path: Path, pki: tuple[Path, Path]) -> None:
    """A configuration HAProxy rejects raises HaproxyConfigError quoting HAProxy's own diagnostic."""
    path = write_config(settings(tmp_path, ca_file=pki[0], lb_pem=tmp_path / "missing.pem"), SERVERS)
    with pytest.raises(HaproxyConfigError, match=r"missing\.pem"):
        check_config(path)


def test_l7_routes_each_vdir_to_its_own_checked_backend(tmp_path: Path) -> None:
    """Each vdir gets a path_beg -i ACL, a backend probing its own healthcheck.htm, and bridged TLS servers."""
    cfg = render_config(settings(tmp_path, inter_ms=300, fall=3, rise=4), SERVERS)
    front = section(cfg, "frontend fe_exchange")
    assert f"bind 127.0.0.10:443 ssl crt {tmp_path / 'lb.pem'}" in front
    assert "default_backend be_owa" in front
    assert backend_names(settings(tmp_path)) == tuple(backend_name(v) for v in DEFAULT_VDIRS)
    for vdir in DEFAULT_VDIRS:
        be = backend_name(vdir)
        assert f"path_beg -i /{vdir.lower()}/" in front
        assert re.search(rf"use_backend {be} if p_\w+$", front, re.MULTILINE)
        body = section(cfg, f"backend {be}")
        assert "balance roundrobin" in body
        assert "option httpchk" in body
        send = f"http-check send meth GET uri /{vdir}/healthcheck.htm ver HTTP/1.1 hdr Host outlook.lab.test"
        assert send in body
        assert "http-check expect status 200" in body
        for srv in SERVERS:
            line = next(x for x in body.splitlines() if x.strip().startswith(f"server {srv.name} "))
            assert f"{srv.address}:{srv.port} ssl verify required ca-file {tmp_path / 'ca.pem'}" in line
            assert f"sni str({srv.fqdn}) check-sni {srv.fqdn}" in line
            assert line.endswith("check inter 300ms fall 3 rise 4")
    assert "be_microsoft_server_activesync" in backend_names(settings(tmp_path))


def test_l7_is_ntlm_safe_and_retries_elsewhere(tmp_path: Path) -> None:
    """L7 keeps server connections private to a client (no reuse always, no server-close, no forwardfor)."""
    cfg = render_config(settings(tmp_path), SERVERS)
    defaults = section(cfg, "defaults")
    assert "option http-keep-alive" in defaults
    assert "http-reuse safe" in defaults
    assert "retries 3" in defaults
    assert "option redispatch 1" in defaults
    for forbidden in ("http-reuse always", "http-server-close", "httpclose", "forwardfor", "balance uri"):
        assert forbidden not in cfg


def test_long_poll_vdirs_get_long_server_timeout(tmp_path: Path) -> None:
    """/mapi/ and /rpc/ backends may hold a request for timeout_long_poll_ms, the others timeout_server_ms."""
    cfg = render_config(settings(tmp_path, timeout_server_ms=1500, timeout_long_poll_ms=400_000), SERVERS)
    for vdir in DEFAULT_VDIRS:
        want = 400_000 if vdir in ("mapi", "rpc") else 1500
        assert f"timeout server {want}ms" in section(cfg, f"backend {backend_name(vdir)}")
    assert "timeout client 360000ms" in section(cfg, "defaults")


def test_global_section_has_log_socket_and_one_thread(tmp_path: Path) -> None:
    """Logs go to stdout with HAProxy's timestamps, the admin socket sits in run_dir, one thread."""
    glob = section(render_config(settings(tmp_path), SERVERS), "global")
    assert "log stdout format iso local0 info" in glob
    assert f"stats socket {tmp_path / 'run' / 'haproxy.sock'} mode 600 level admin" in glob
    assert "nbthread 1" in glob


def test_l4_passes_tls_through_with_one_mapi_probe(tmp_path: Path) -> None:
    """L4 is mode tcp without TLS on the bind, one backend checked over check-ssl on /mapi/healthcheck.htm."""
    l4 = settings(tmp_path, "l4", timeout_client_ms=1000, timeout_server_ms=1500, timeout_long_poll_ms=5000)
    cfg = render_config(l4, SERVERS)
    assert "mode tcp" in section(cfg, "defaults")
    assert "timeout client 5000ms" in section(cfg, "defaults")  # both sides outlast a held MAPI request
    front = section(cfg, "frontend fe_exchange")
    assert [x.strip() for x in front.splitlines()] == ["bind 127.0.0.10:443", f"default_backend {L4_BACKEND}"]
    body = section(cfg, f"backend {L4_BACKEND}")
    assert "uri /mapi/healthcheck.htm" in body
    assert "timeout server 5000ms" in body
    assert body.count(" check-ssl verify required ") == len(SERVERS)
    assert " ssl " not in body.replace("check-ssl", "")
    assert backend_names(settings(tmp_path, "l4")) == (L4_BACKEND,)
    assert "uri /ews/healthcheck.htm" in render_config(settings(tmp_path, "l4", l4_check_vdir="ews"), SERVERS)


@pytest.mark.parametrize(
    ("change", "servers", "message"),
    [
        ({"bind_address": "10.0.0.1"}, SERVERS, "loopback"),
        ({"vdirs": ("/mapi/",)}, SERVERS, "bare name"),
        ({"vdirs": ("mapi", "MAPI")}, SERVERS, "collide"),
        ({"vdirs": ()}, SERVERS, "empty"),
        ({"inter_ms": 0}, SERVERS, "inter_ms"),
        ({"timeout_server_ms": -1}, SERVERS, "timeout_server_ms"),
        ({"port": 70000}, SERVERS, "port"),
        ({"namespace_host": "outlook lab"}, SERVERS, "host name"),
        ({"ca_file": Path("/tmp/a b/ca.pem")}, SERVERS, "whitespace"),
        ({}, (), "at least one"),
        ({}, (*SERVERS, SERVERS[0]), "duplicate"),
        ({}, (LbBackendServer("mb 1", "mb1.lab.test", "127.0.0.11", 443),), "server name"),
        ({}, (LbBackendServer("mb1", "mb1.lab.test", "192.168.1.5", 443),), "loopback"),
        ({}, (LbBackendServer("mb1", "mb1.lab.test", "127.0.0.11", 0),), "port"),
    ],
)
def test_bad_settings_are_rejected(
    tmp_path: Path, change: dict[str, Any], servers: tuple[LbBackendServer, ...], message: str
) -> None:
    """Unsafe or meaningless input raises HaproxyConfigError (a ValueError) before any file is written."""
    with pytest.raises(HaproxyConfigError, match=message) as info:
        render_config(settings(tmp_path, **change), servers)
    assert isinstance(info.value, ValueError)


SHOW_STAT = """\
# pxname,svname,qcur,status,weight,lastchg,check_status,check_code,last_chk,check_desc
fe_exchange,FRONTEND,,OPEN,,,,,,
be_mapi,mb1,0,DOWN,1,3,L7STS,503,Service Unavailable,Layer7 wrong status
be_mapi,mb2,0,UP 1/2,1,40,L4CON,,Connection refused,Layer4 connection problem
be_mapi,mb3,0,MAINT (via be_ews/mb3),1,7,* L7OK,200,OK,Layer7 check passed
be_mapi,mb4,0,DRAIN,0,9,L7OK,200,OK,Layer7 check passed
be_mapi,mb5,0,DOWN 1/2,1,2,L7OK,200,OK,Layer7 check passed
be_mapi,mb6,0,no check,1,2,,,,
be_mapi,BACKEND,0,UP,3,100,,,,
"""


def test_show_stat_is_parsed_into_normalised_states() -> None:
    """show stat rows become UP/DOWN/MAINT/DRAIN states with their check details; proxy rows are skipped."""
    states = parse_show_stat(SHOW_STAT)
    assert sorted(states) == [("be_mapi", f"mb{i}") for i in range(1, 7)]
    assert {k[1]: v.state for k, v in states.items()} == {
        "mb1": "DOWN",
        "mb2": "UP",  # still up, going down
        "mb3": "MAINT",
        "mb4": "DRAIN",
        "mb5": "DOWN",  # still down, going up
        "mb6": "UP",
    }
    mb1 = states[("be_mapi", "mb1")]
    assert (mb1.check_status, mb1.check_code, mb1.check_info, mb1.last_change_s) == (
        "L7STS",
        503,
        "Service Unavailable",
        3,
    )
    assert states[("be_mapi", "mb3")].check_status == "L7OK"
    assert states[("be_mapi", "mb2")].check_code is None


@pytest.mark.parametrize(
    "text",
    ["", "Unknown command.\n", "# pxname,svname\nbe,mb1\n", "# pxname,svname,status,check_status,lastchg\nbe\n"],
)
def test_garbled_show_stat_raises_runtime_api_error(text: str) -> None:
    """An answer that is not show stat CSV raises RuntimeApiError, never IndexError or KeyError."""
    with pytest.raises(RuntimeApiError):
        parse_show_stat(text)
