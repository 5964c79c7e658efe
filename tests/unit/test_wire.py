"""WireClient (casprobe.net.wire) against hostile loopback servers: framing, limits, deadlines, keep-alive, auth.

Answers are written byte by byte from RFC 9112 (status line §4, fields §5, message body length §6.3, chunked
§7.1 with extensions and trailers) so that each test proves what the client does with exactly those bytes; the
server side counts TCP connections, so reuse and reconnection are seen from the server, not assumed.
"""

from __future__ import annotations

import base64
import gzip
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import spnego
import spnego.exceptions

from casprobe.lab.ntlmcreds import channel_bindings_for, format_user_file_line
from casprobe.model import ErrorClass, Target
from casprobe.net.auth import BasicAuth, SpnegoAuth
from casprobe.net.authreport import AuthFailure
from casprobe.net.credentials import Credentials, Secret
from casprobe.net.resolve import Pin
from casprobe.net.tls import TlsOptions
from casprobe.net.transport import (
    BodyTooLarge,
    DeadlineExceeded,
    Exchange,
    MalformedHttp,
    TransportOptions,
    classify,
)
from casprobe.net.wire import MAX_HEADER_BYTES, MAX_HEADERS, WireClient
from tests.hostile_servers import (
    CertKind,
    CertKit,
    Handler,
    HostileServer,
    LoopbackResolver,
    Reply,
    Request,
    always,
    bad_ntlm_challenge,
    close,
    fixed,
    raw,
    sequence,
    silent,
    trickle,
)

NAME = "wire.example.test"
OK = fixed(200, b"ok")


# --------------------------------------------------------------------------- the kit


def raw_keep(data: bytes) -> Reply:
    """These bytes as the whole answer, and the connection stays open for another request (unlike ``raw``)."""
    return Reply(body=data, mode="raw", size=1)


def raw_slow(data: bytes, interval_s: float) -> Reply:
    """These bytes one at a time, ``interval_s`` apart (a trickling status line and header block)."""
    return Reply(body=data, mode="raw", interval_s=interval_s)


def then_drop(reply: Reply) -> Reply:
    """A keep-alive answer (no ``Connection: close``) after which the server closes the connection anyway."""
    return Reply(reply.status, reply.headers, reply.body, keep_alive=True, size=-1)


class CountingServer(HostileServer):
    """A HostileServer that counts the TCP connections it accepted and knows the ``raw_keep`` / ``raw_slow`` /
    ``then_drop`` replies."""

    def __init__(self, handler: Handler, certs: CertKit, cert: CertKind) -> None:
        self.connections = 0
        self._count_lock = threading.Lock()
        super().__init__(handler, certs, cert=cert, names=[NAME])

    def _serve(self, sock: socket.socket) -> None:
        with self._count_lock:
            self.connections += 1
        super()._serve(sock)

    def _write(self, conn: Any, reply: Reply) -> bool:
        sock = conn.sock
        if reply.mode == "raw" and reply.size == 1:
            sock.sendall(reply.body)
            return True
        if reply.mode == "raw" and reply.interval_s:
            for i in range(len(reply.body)):
                if self._stop.is_set():
                    return False
                sock.sendall(reply.body[i : i + 1])
                time.sleep(reply.interval_s)
            return False
        if reply.mode == "fixed" and reply.size == -1:
            super()._write(conn, Reply(reply.status, reply.headers, reply.body))
            return False
        return super()._write(conn, reply)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> CertKit:
    return CertKit(tmp_path_factory.mktemp("wire-certs"))


@pytest.fixture
def serve(kit: CertKit) -> Iterator[Callable[..., CountingServer]]:
    """Start CountingServers (closed after the test)."""
    started: list[CountingServer] = []

    def start(handler: Handler | Reply, cert: CertKind = "trusted") -> CountingServer:
        server = CountingServer(handler if callable(handler) else always(handler), kit, cert)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def wire(
    kit: CertKit,
    server: CountingServer,
    *,
    deadline: float = float("inf"),
    timeout_s: float = 3.0,
    max_body: int = 8 * 1024 * 1024,
) -> WireClient:
    """A WireClient for NAME, pinned to ``server``, trusting the kit's CA."""
    options = TransportOptions(tls=TlsOptions(ca_file=kit.ca_file), timeout_s=timeout_s, max_body=max_body)
    target = Target(NAME, port=server.port)
    return WireClient(target, resolver=LoopbackResolver([server.pin(NAME)]), options=options, deadline=deadline)


def failure(client: WireClient, method: str = "GET", **kwargs: Any) -> BaseException:
    try:
        client.request(method, "/", **kwargs)
    except Exception as exc:
        return exc
    raise AssertionError("the request should have failed")


def head(status: str = "200 OK", *fields: str) -> bytes:
    return ("\r\n".join([f"HTTP/1.1 {status}", *fields]) + "\r\n\r\n").encode("latin-1")


# --------------------------------------------------------------------------- bodies


def test_content_length_body_and_exchange_fields(kit: CertKit, serve: Callable[..., CountingServer]) -> None:
    """A Content-Length body is read exactly; the Exchange carries URL, headers, address, TLS facts and timings."""
    server = serve(fixed(200, b"hello world", [("X-FEServer", "MB1"), ("X-CalculatedBETarget", "mb2.x")]))
    with wire(kit, server) as client:
        exchange = client.request("POST", "/mapi/emsmdb/?x=1", content=b"body", headers={"X-A": "b"})
    assert (exchange.status, exchange.body) == (200, b"hello world")
    assert exchange.url == f"https://{NAME}:{server.port}/mapi/emsmdb/?x=1"
    assert (exchange.fe_server, exchange.be_server) == ("MB1", "mb2.x")
    assert exchange.address == server.address
    assert exchange.tls is not None
    assert exchange.timings.connect is not None
    assert exchange.timings.tls is not None
    first_byte, total = exchange.timings.first_byte, exchange.timings.total
    assert first_byte is not None
    assert total is not None
    assert total >= first_byte > 0
    sent = server.requests[0]
    assert (sent.method, sent.target, sent.body) == ("POST", "/mapi/emsmdb/?x=1", b"body")
    assert sent.header("host") == f"{NAME}:{server.port}"
    assert sent.header("x-a") == "b"
    assert sent.header("content-length") == "4"
    assert sent.header("expect") is None


def test_chunked_body_with_extensions_and_trailers_keeps_the_connection(
    kit: CertKit, serve: Callable[..., CountingServer]
) -> None:
    """Chunk extensions are ignored, trailers consumed exactly: the next answer on the same connection reads fine."""
    answer = (
        head("200 OK", "Transfer-Encoding: chunked")
        + b'5;name=value;q="x;y"\r\nhello\r\n'
        + b"6 ; ext\r\n world\r\n"
        + b"A\r\n0123456789\r\n"
        + b"0;last\r\nX-Trailer: one\r\nX-Other: two\r\n\r\n"
    )
    server = serve(sequence(raw_keep(answer), then=OK))
    pieces: list[bytes] = []
    with wire(kit, server) as client:
        first = client.request("GET", "/", on_chunk=pieces.append)
        second = client.request("GET", "/")
    assert first.body == b"hello world0123456789"
    assert b"".join(pieces) == first.body
    assert len(pieces) == 3
    assert second.body == b"ok"
    assert server.connections == 1


def test_body_read_to_close_then_a_new_connection(kit: CertKit, serve: Callable[..., CountingServer]) -> None:
    """Without Content-Length or chunked the body runs to the end of the connection, and the next request
    opens a new connection."""
    server = serve(sequence(raw(head("200 OK", "Content-Type: text/plain") + b"x" * 100_000), then=OK))
    with wire(kit, server) as client:
        first = client.request("GET", "/")
        second = client.request("GET", "/")
    assert first.body == b"x" * 100_000
    assert second.body == b"ok"
    assert server.connections == 2


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("HEAD", head("200 OK", "Content-Length: 1000")),
        ("GET", head("204 No Content", "Content-Length: 1000")),
        ("GET", head("304 Not Modified", "Transfer-Encoding: chunked")),
        ("HEAD", head("200 OK", "Content-Encoding: gzip", "Content-Length: 1000")),
        ("GET", head("304 Not Modified", "Content-Encoding: br")),
    ],
    ids=["head", "204", "304-chunked", "head-gzip", "304-br"],
)
def test_head_204_304_have_no_body(
    kit: CertKit, serve: Callable[..., CountingServer], method: str, answer: bytes
) -> None:
    """HEAD, 204 and 304 end at their header block whatever framing or coding it declares; the connection carries
    the next request."""
    server = serve(sequence(raw_keep(answer), then=OK))
    with wire(kit, server) as client:
        first = client.request(method, "/")
        second = client.request("GET", "/")
    assert first.body == b""
    assert second.body == b"ok"
    assert server.connections == 1


def test_informational_answers_are_skipped(kit: CertKit, serve: Callable[..., CountingServer]) -> None:
    """100 Continue and 103 Early Hints before the final answer are read and dropped."""
    answer = head("100 Continue") + head("103 Early Hints", "Link: </a>") + head("201 Created", "Content-Length: 2")
    server = serve(raw_keep(answer + b"ok"))
    with wire(kit, server) as client:
        exchange = client.request("POST", "/", content=b"x")
    assert (exchange.status, exchange.body) == (201, b"ok")
    assert "link" not in exchange.headers


@pytest.mark.parametrize(
    ("encoding", "packed"),
    [
        ("gzip", gzip.compress(b"<xml>" * 1000)),
        ("x-gzip", gzip.compress(b"<xml>" * 1000)),
        ("deflate", zlib.compress(b"<xml>" * 1000)),
        ("identity", b"<xml>" * 1000),
    ],
)
def test_content_encoding_is_undone(
    kit: CertKit, serve: Callable[..., CountingServer], encoding: str, packed: bytes
) -> None:
    """gzip and deflate bodies are decoded (on_chunk sees the encoded bytes); identity is left as is."""
    server = serve(fixed(200, packed, [("Content-Encoding", encoding)]))
    pieces: list[bytes] = []
    with wire(kit, server) as client:
        exchange = client.request("GET", "/", on_chunk=pieces.append)
    assert exchange.body == b"<xml>" * 1000
    assert b"".join(pieces) == packed


def test_a_gzip_bomb_is_body_too_large(kit: CertKit, serve: Callable[..., CountingServer]) -> None:
    """A small gzip body that inflates past max_body is BodyTooLarge (class content), not memory exhaustion."""
    bomb = gzip.compress(b"\0" * (20 * 1024 * 1024))
    server = serve(fixed(200, bomb, [("Content-Encoding", "gzip")]))
    with wire(kit, server, max_body=1024 * 1024) as client:
        exc = failure(client)
    assert len(bomb) < 1024 * 1024
    assert isinstance(exc, BodyTooLarge)
    assert classify(exc)[0] is ErrorClass.CONTENT


@pytest.mark.parametrize(
    "answer",
    [
        head("200 OK", "Content-Length: 2000000"),
        head("200 OK", "Transfer-Encoding: chunked") + b"100001\r\n",
        head("200 OK") + b"y" * 1_200_000,
    ],
    ids=["content-length", "chunked", "to-close"],
)
def test_bodies_past_the_limit_are_refused(kit: CertKit, serve: Callable[..., CountingServer], answer: bytes) -> None:
    """A body declared or sent past max_body is BodyTooLarge, whatever its framing."""
    server = serve(raw(answer))
    with wire(kit, server, max_body=1024 * 1024) as client:
        exc = failure(client)
    assert isinstance(exc, BodyTooLarge), exc


@pytest.mark.parametrize(
    "fields",
    [
        ("Content-Encoding: br", "Content-Length: 2"),
        ("Content-Encoding: gzip, gzip", "Content-Length: 2"),
        ("Transfer-Encoding: gzip, chunked",),
        ("Transfer-Encoding: identity", "Content-Length: 2"),
    ],
)
def test_unknown_codings_are_malformed(
    kit: CertKit, serve: Callable[..., CountingServer], fields: tuple[str, ...]
) -> None:
    """A Content-Encoding or Transfer-Encoding the client cannot undo is MalformedHttp (class protocol)."""
    server = serve(raw_keep(head("200 OK", *fields) + b"ok"))
    with wire(kit, server) as client:
        exc = failure(client)
    assert isinstance(exc, MalformedHttp), exc
    assert classify(exc)[0] is ErrorClass.PROTOCOL


# --------------------------------------------------------------------------- malformed answers


MALFORMED = {
    "not-http": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    "http2-status": b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
    "four-digit-status": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "letters-status": b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
    "no-colon": head("200 OK", "Content-Length: 0", "this line has no colon"),
    "space-before-colon": head("200 OK", "Content-Length : 0"),
    "obs-fold": head("200 OK", "X-A: one", " folded", "Content-Length: 0"),
    "bad-content-length": head("200 OK", "Content-Length: 12abc"),
    "negative-content-length": head("200 OK", "Content-Length: -1"),
    "huge-block": head("200 OK", "X-Big: " + "a" * (MAX_HEADER_BYTES + 10), "Content-Length: 0"),
    "endless-block": b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"b" * (3 * MAX_HEADER_BYTES),
    "too-many-lines": head("200 OK", *(f"X-H{i}: v" for i in range(MAX_HEADERS)), "Content-Length: 0"),
    "bad-chunk-size": head("200 OK", "Transfer-Encoding: chunked") + b"zz\r\nhello\r\n0\r\n\r\n",
    "hex-prefix-chunk-size": head("200 OK", "Transfer-Encoding: chunked") + b"0x5\r\nhello\r\n0\r\n\r\n",
    "signed-chunk-size": head("200 OK", "Transfer-Encoding: chunked") + b"+5\r\nhello\r\n0\r\n\r\n",
    "underscore-chunk-size": head("200 OK", "Transfer-Encoding: chunked") + b"1_0\r\n" + b"h" * 16 + b"\r\n0\r\n\r\n",
    "empty-chunk-size": head("200 OK", "Transfer-Encoding: chunked") + b"\r\nhello\r\n0\r\n\r\n",
    "no-crlf-after-chunk": head("200 OK", "Transfer-Encoding: chunked") + b"5\r\nhelloXY\r\n0\r\n\r\n",
    "endless-chunk-line": head("200 OK", "Transfer-Encoding: chunked") + b"5" + b";e" * 5000,
    "too-many-trailers": head("200 OK", "Transfer-Encoding: chunked")
    + b"0\r\n"
    + b"".join(b"T%d: v\r\n" % i for i in range(MAX_HEADERS + 1))
    + b"\r\n",
    "bad-gzip": head("200 OK", "Content-Encoding: gzip", "Content-Length: 5") + b"hello",
    "truncated-gzip": head("200 OK", "Content-Encoding: gzip", "Content-Length: 30")
    + gzip.compress(b"abc" * 1000)[:30],
    "switching-protocols": head("101 Switching Protocols", "Upgrade: h2c"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_answers_are_protocol_errors_and_the_connection_is_dropped(
    kit: CertKit, serve: Callable[..., CountingServer], name: str
) -> None:
    """Broken status lines, header lines, header blocks, chunk framing or codings raise MalformedHttp (class
    protocol); the connection is not reused even though the server keeps it open: the next request reconnects."""
    server = serve(sequence(raw_keep(MALFORMED[name]), then=OK))
    with wire(kit, server) as client:
        exc = failure(client)
        assert isinstance(exc, MalformedHttp), repr(exc)
        assert classify(exc)[0] is ErrorClass.PROTOCOL
        assert client.request("GET", "/").body == b"ok"
    assert server.connections == 2


def test_exactly_the_header_limits_are_accepted(kit: CertKit, serve: Callable[..., CountingServer]) -> None:
    """MAX_HEADERS header lines (the limit itself) are read: the limits refuse only what is past them."""
    fields = [f"X-H{i}: v" for i in range(MAX_HEADERS - 1)]
    server = serve(raw_keep(head("200 OK", *fields, "Content-Length: 2") + b"ok"))
    with wire(kit, server) as client:
        exchange = client.request("GET", "/")
    assert exchange.body == b"ok"
    assert exchange.headers["x-h0"] == "v"


# --------------------------------------------------------------------------- deadlines and failures


@pytest.mark.parametrize(
    "reply",
    [trickle(interval_s=0.05, size=100_000), raw_slow(head("200 OK", "X-Pad: " + "p" * 400), 0.05), silent()],
    ids=["trickling-body", "trickling-head", "silent"],
)
def test_the_deadline_ends_slow_servers_on_time(
    kit: CertKit, serve: Callable[..., CountingServer], reply: Reply
) -> None:
    """A server trickling its body or head faster than the read timeout, or saying nothing, is cut at the deadline
    (DeadlineExceeded, class timeout), not at the end of its trickle."""
    server = serve(reply)
    started = time.monotonic()
    with wire(kit, server, timeout_s=5.0, deadline=started + 0.6) as client:
        exc = failure(client)
    elapsed = time.monotonic() - started
    assert isinstance(exc, DeadlineExceeded), repr(exc)
    assert classify(exc)[0] is ErrorClass.TIMEOUT
    assert 0.55 <= elapsed < 0.85


def test_the_request_deadline_is_the_earlier_of_the_two(kit: CertKit, serve: Callable[..., CountingServer]) -> None:
    """``deadline`` of one request ends it before the client's own deadline (and the client stays usable)."""
    server = serve(silent())
    started = time.monotonic()
    with wire(kit, server, timeout_s=5.0, deadline=started + 30) as client:
        exc = failure(client, deadline=started + 0.3)
    assert isinstance(exc, DeadlineExceeded)
    assert time.monotonic() - started < 0.6


@pytest.mark.parametrize("where", ["options", "request"])
def test_the_per_operation_timeout_is_a_timeout(kit: CertKit, serve: Callable[..., CountingServer], where: str) -> None:
    """A read longer than the per-operation timeout (options or the request's ``timeout_s``) fails as timeout,
    after that timeout and long before the deadline."""
    server = serve(silent())
    started = time.monotonic()
    if where == "options":
        with wire(kit, server, timeout_s=0.3, deadline=started + 30) as client:
            exc = failure(client)
    else:
        with wire(kit, server, timeout_s=5.0, deadline=started + 30) as client:
            exc = failure(client, timeout_s=0.3)
    elapsed = time.monotonic() - started
    assert classify(exc)[0] is ErrorClass.TIMEOUT
    assert not isinstance(exc, DeadlineExceeded)
    assert 0.25 <= elapsed < 0.8


def test_a_refused_connection_is_connect(kit: CertKit) -> None:
    """Nothing listening on the pinned address: class connect, at once, and nothing retried."""
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]
    options = TransportOptions(tls=TlsOptions(ca_file=kit.ca_file), timeout_s=2.0)
    resolver = LoopbackResolver([Pin(NAME, "127.0.0.1", port)])
    started = time.monotonic()
    with WireClient(Target(NAME, port=port), resolver=resolver, options=options) as client:
        error_class, detail = classify(failure(client))
    assert error_class is ErrorClass.CONNECT
    assert "refused" in detail
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("cert", ["self_signed", "wrong_name", "expired"])
def test_an_untrusted_certificate_is_tls(kit: CertKit, serve: Callable[..., CountingServer], cert: CertKind) -> None:
    """A self-signed, wrong-name or expired certificate fails as tls before any request is sent."""
    server = serve(OK, cert=cert)
    with wire(kit, server) as client:
        error_class, _ = classify(failure(client))
    assert error_class is ErrorClass.TLS
    assert server.requests == []


def test_an_unknown_name_is_dns(kit: CertKit) -> None:
    """A name the resolver cannot resolve fails as dns (LoopbackResolver: no query leaves the machine)."""
    options = TransportOptions(tls=TlsOptions(ca_file=kit.ca_file), timeout_s=2.0)
    with WireClient(Target("nowhere.example.test"), resolver=LoopbackResolver(), options=options) as client:
        assert classify(failure(client))[0] is ErrorClass.DNS


def test_the_target_address_is_used_like_probeclient(kit: CertKit, serve: Callable[..., CountingServer]) -> None:
    """A Target with an address connects there without asking the resolver, as ProbeClient does."""
    server = serve(OK)
    options = TransportOptions(tls=TlsOptions(ca_file=kit.ca_file), timeout_s=2.0)
    target = Target(NAME, port=server.port, address=server.address)
    with WireClient(target, resolver=LoopbackResolver(), options=options) as client:
        assert client.request("GET", "/").body == b"ok"


# --------------------------------------------------------------------------- keep-alive


def test_two_requests_share_one_connection(kit: CertKit, serve: Callable[..., CountingServer]) -> None:
    """Keep-alive: the second request goes on the first's connection (the server accepted one), without new
    connect or TLS phases."""
    server = serve(OK)
    with wire(kit, server) as client:
        first = client.request("GET", "/a")
        second = client.request("POST", "/b", content=b"x")
    assert (first.body, second.body) == (b"ok", b"ok")
    assert [r.target for r in server.requests] == ["/a", "/b"]
    assert server.connections == 1
    assert second.timings.connect is None
    assert second.timings.tls is None


def test_connection_close_makes_the_next_request_reconnect(kit: CertKit, serve: Callable[..., CountingServer]) -> None:
    """An answer with Connection: close ends that connection: the next request opens a new one."""
    server = serve(sequence(fixed(200, b"bye", keep_alive=False), then=OK))
    with wire(kit, server) as client:
        assert client.request("GET", "/").body == b"bye"
        second = client.request("GET", "/")
    assert second.body == b"ok"
    assert second.timings.connect is not None
    assert server.connections == 2


def test_connection_close_is_obeyed_even_if_the_server_keeps_the_socket(
    kit: CertKit, serve: Callable[..., CountingServer]
) -> None:
    """RFC 9112 §9.6: after Connection: close the client sends nothing more on that connection, even when the
    server leaves it open (the next request would otherwise wait for an answer that never comes)."""
    answer = head("200 OK", "Connection: close", "Content-Length: 3") + b"bye"
    server = serve(sequence(raw_keep(answer), then=OK))
    with wire(kit, server, timeout_s=1.0) as client:
        assert client.request("GET", "/").body == b"bye"
        assert client.request("GET", "/").body == b"ok"
    assert server.connections == 2


@pytest.mark.parametrize("pause_s", [0.0, 0.1])
def test_a_closed_idle_connection_is_retried_once_transparently(
    kit: CertKit, serve: Callable[..., CountingServer], pause_s: float
) -> None:
    """The server closes a keep-alive connection after its answer: the next request, finding it closed before
    any answer byte, is sent again on a new connection and succeeds; the server saw each request once."""
    server = serve(sequence(then_drop(fixed(200, b"one")), then_drop(fixed(200, b"two")), then=OK))
    with wire(kit, server) as client:
        assert client.request("GET", "/1").body == b"one"
        time.sleep(pause_s)
        assert client.request("POST", "/2", content=b"x").body == b"two"
        time.sleep(pause_s)
        assert client.request("GET", "/3").body == b"ok"
    assert [r.target for r in server.requests] == ["/1", "/2", "/3"]
    assert server.connections == 3


def test_a_large_post_on_a_closed_idle_connection_is_retried(
    kit: CertKit, serve: Callable[..., CountingServer]
) -> None:
    """A request body too big for the socket buffers, written to a connection the server has closed (the write
    itself fails), is sent again on a new connection and arrives whole."""
    server = serve(sequence(then_drop(fixed(200, b"one")), then=OK))
    body = b"m" * (2 * 1024 * 1024)
    with wire(kit, server) as client:
        client.request("GET", "/1")
        time.sleep(0.1)
        assert client.request("POST", "/2", content=body).body == b"ok"
    assert server.requests[-1].body == body
    assert server.connections == 2


def test_both_transfer_encoding_and_content_length_end_the_connection(
    kit: CertKit, serve: Callable[..., CountingServer]
) -> None:
    """RFC 9112 §6.3: chunked wins over a Content-Length beside it, and the connection is not reused after such an
    ambiguous answer (a smuggling shape)."""
    answer = head("200 OK", "Content-Length: 3", "Transfer-Encoding: chunked") + b"5\r\nhello\r\n0\r\n\r\n"
    server = serve(sequence(raw_keep(answer), then=OK))
    with wire(kit, server) as client:
        assert client.request("GET", "/").body == b"hello"
        assert client.request("GET", "/").body == b"ok"
    assert server.connections == 2


def test_a_401_with_connection_close_moves_the_next_leg_to_a_new_connection(
    kit: CertKit, serve: Callable[..., CountingServer]
) -> None:
    """An authentication leg answered with Connection: close sends the next leg on a new connection, even when
    the server leaves the old one open."""

    def handler(request: Request) -> Reply:
        if request.header("authorization") is None:
            return raw_keep(
                head("401 Unauthorized", 'WWW-Authenticate: Basic realm="x"', "Connection: close", "Content-Length: 0")
            )
        return OK

    server = serve(handler)
    auth = BasicAuth(Credentials("alice", Secret("pw")), preemptive=False)
    with wire(kit, server, timeout_s=1.0) as client:
        assert client.request("GET", "/", auth=auth).status == 200
    assert server.connections == 2


def test_a_failure_on_a_fresh_connection_is_not_retried(kit: CertKit, serve: Callable[..., CountingServer]) -> None:
    """A new connection closed without an answer fails at once (class connect): the request was sent once."""
    server = serve(close())
    with wire(kit, server) as client:
        exc = failure(client)
    assert classify(exc)[0] is ErrorClass.CONNECT
    assert len(server.requests) == 1
    assert server.connections == 1


def test_a_reused_connection_is_retried_only_once(kit: CertKit, serve: Callable[..., CountingServer]) -> None:
    """A reused connection closed without an answer is retried once on a new connection; when that one is closed
    too the request fails (class connect): the server saw the request twice, not more."""
    server = serve(sequence(OK, then=close()))
    with wire(kit, server) as client:
        client.request("GET", "/")
        exc = failure(client)
    assert classify(exc)[0] is ErrorClass.CONNECT
    assert len(server.requests) == 3
    assert server.connections == 2


def test_a_reused_connection_that_answers_garbage_is_not_retried(
    kit: CertKit, serve: Callable[..., CountingServer]
) -> None:
    """Only a connection closed before any answer byte is retried: garbage on a reused connection is an error."""
    server = serve(sequence(OK, raw(b"garbage\r\n\r\n"), then=OK))
    with wire(kit, server) as client:
        client.request("GET", "/")
        exc = failure(client)
    assert isinstance(exc, MalformedHttp)
    assert len(server.requests) == 2


# --------------------------------------------------------------------------- authentication and on_chunk


def test_on_chunk_sees_the_final_body_and_never_a_401_body(kit: CertKit, serve: Callable[..., CountingServer]) -> None:
    """A Basic flow answered 401 (with a body) then 200: on_chunk gets only the 200's body; the auth legs are
    timed."""

    def handler(request: Request) -> Reply:
        if request.header("authorization") is None:
            return fixed(401, b"DENIED-BODY", [("WWW-Authenticate", 'Basic realm="x"')])
        return fixed(200, b"final body")

    server = serve(handler)
    auth = BasicAuth(Credentials("alice", Secret("pw")), preemptive=False)
    pieces: list[bytes] = []
    with wire(kit, server) as client:
        exchange = client.request("GET", "/", auth=auth, on_chunk=pieces.append)
    assert exchange.status == 200
    assert b"".join(pieces) == b"final body"
    assert len(exchange.timings.auth) == 2
    assert server.connections == 1


def test_a_final_401_is_returned_without_feeding_on_chunk(kit: CertKit, serve: Callable[..., CountingServer]) -> None:
    """NTLM against a server whose challenge is garbage: the flow ends, the 401 is the Exchange (not an
    exception), on_chunk saw nothing, and the report says why."""
    server = serve(bad_ntlm_challenge())
    auth = SpnegoAuth(Credentials("LAB\\alice", Secret("pw")), "ntlm")
    pieces: list[bytes] = []
    with wire(kit, server) as client:
        exchange: Exchange = client.request("POST", "/", content=b"x", auth=auth, on_chunk=pieces.append)
    assert exchange.status == 401
    assert pieces == []
    assert auth.last_report is not None
    assert auth.last_report.failure is not None


def test_basic_is_sent_on_every_request(kit: CertKit, serve: Callable[..., CountingServer]) -> None:
    """Basic (preemptive or after a first 401) is repeated on each later request of the connection."""

    def handler(request: Request) -> Reply:
        if request.header("authorization") is None:
            return fixed(401, b"", [("WWW-Authenticate", 'Basic realm="x"')])
        return OK

    server = serve(handler)
    lazy = BasicAuth(Credentials("alice", Secret("pw")), preemptive=False)
    with wire(kit, server) as client:
        statuses = [client.request("GET", "/", auth=lazy).status for _ in range(3)]
    assert statuses == [200, 200, 200]
    sent = [r.header("authorization") for r in server.requests]
    assert sent[0] is None
    assert sent[1:] == ["Basic YWxpY2U6cHc="] * 3


def test_a_secret_is_not_in_the_exchange_or_errors(kit: CertKit, serve: Callable[..., CountingServer]) -> None:
    """The password reaches the server's Authorization header and nowhere in what the client returns or raises."""
    server = serve(sequence(OK, raw(b"junk\r\n\r\n")))
    auth = BasicAuth(Credentials("alice", Secret("s3cret-pass")))
    with wire(kit, server) as client:
        exchange = client.request("GET", "/", auth=auth)
        exc = failure(client, auth=auth)
    shown = repr(exchange) + repr(exc) + str(exc) + repr(client)
    assert "s3cret" not in shown
    assert "YWxpY2U6czNjcmV0LXBhc3M=" not in shown  # base64 of alice:s3cret-pass


# --------------------------------------------------------------------------- NTLM, one handshake per connection


class FakeIis:
    """NTLM as IIS does it, per TCP connection (each connection is served by its own thread), with pyspnego's
    acceptor demanding the channel binding of the served certificate (Extended Protection)."""

    def __init__(self) -> None:
        self.bindings: Any = None  # set once the server (and so its certificate) exists
        self.state = threading.local()
        self.forget = threading.Event()  # set: the next anonymous request on an authenticated connection is 401

    def __call__(self, request: Request) -> Reply:
        state = self.state
        value = request.header("authorization")
        if value is None:
            if getattr(state, "principal", None) and not self.forget.is_set():
                return fixed(200, b"authenticated as " + state.principal.encode())
            self.forget.clear()
            state.principal = None
            return fixed(401, b"please log in", [("WWW-Authenticate", "NTLM")])
        token = base64.b64decode(value.partition(" ")[2])
        if token.startswith(b"NTLMSSP\x00\x01"):
            state.context = spnego.server(
                protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm, channel_bindings=self.bindings
            )
        context = getattr(state, "context", None)
        if context is None:
            return fixed(401, b"", [("WWW-Authenticate", "NTLM")])
        try:
            out = context.step(token)
        except spnego.exceptions.SpnegoError:
            state.context = None
            return fixed(401, b"", [("WWW-Authenticate", "NTLM")])
        if not context.complete:
            return fixed(401, b"challenge body", [("WWW-Authenticate", "NTLM " + base64.b64encode(out).decode())])
        state.principal, state.context = context.client_principal, None
        return fixed(200, b"authenticated as " + state.principal.encode())


def served_certificate(server: CountingServer, kit: CertKit) -> bytes:
    """The DER certificate ``server`` presents (fetched over a connection of its own)."""
    context = ssl.create_default_context(cafile=str(kit.ca_file))
    with (
        socket.create_connection((server.address, server.port), timeout=2) as raw_sock,
        context.wrap_socket(raw_sock, server_hostname=NAME) as tls,
    ):
        der = tls.getpeercert(True)
    assert der is not None
    return der


@pytest.fixture
def ntlm_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyspnego's acceptor knows LAB\\alice with password PASSWORD."""
    path = tmp_path / "ntlm_users"
    path.write_text(format_user_file_line("LAB", "alice", "PASSWORD") + "\n")
    monkeypatch.setenv("NTLM_USER_FILE", str(path))


@pytest.mark.usefixtures("ntlm_users")
def test_ntlm_authenticates_the_connection_once_and_again_on_a_401(
    kit: CertKit, serve: Callable[..., CountingServer]
) -> None:
    """NTLM with the channel binding of this connection's certificate passes Extended Protection; later requests
    on the connection go without Authorization; a 401 on it runs a new handshake; a new connection (after
    Connection: close) is authenticated afresh."""
    iis = FakeIis()
    server = serve(iis)
    iis.bindings = channel_bindings_for(served_certificate(server, kit))
    connections_before = server.connections
    auth = SpnegoAuth(Credentials("LAB\\alice", Secret("PASSWORD")), "ntlm", channel_binding=True)
    pieces: list[bytes] = []
    with wire(kit, server) as client:
        first = client.request("POST", "/mapi", content=b"one", auth=auth, on_chunk=pieces.append)
        report = auth.last_report
        later = [client.request("POST", "/mapi", content=b"n", auth=auth) for _ in range(3)]
        iis.forget.set()
        renewed = client.request("POST", "/mapi", content=b"again", auth=auth)
    assert first.status == 200
    assert b"".join(pieces) == b"authenticated as LAB\\alice"
    assert report is not None
    assert report.method == "NTLM"
    assert report.channel_binding
    assert [leg.status for leg in report.legs] == [401, 401, 200]
    assert len(first.timings.auth) == 3
    assert [e.status for e in later] == [200, 200, 200]
    assert all(e.timings.auth == () for e in later)
    assert renewed.status == 200
    assert len(renewed.timings.auth) == 3
    assert auth.last_report is not report
    sent = [r.header("authorization") for r in server.requests]
    schemes = [None if v is None else v.split()[0] for v in sent]
    assert schemes == [None, "NTLM", "NTLM", None, None, None, None, "NTLM", "NTLM"]
    assert server.connections - connections_before == 1


@pytest.mark.usefixtures("ntlm_users")
def test_ntlm_with_a_wrong_password_is_a_401_exchange(kit: CertKit, serve: Callable[..., CountingServer]) -> None:
    """A refused NTLM handshake ends with the final 401 as the Exchange, the report saying rejected."""
    iis = FakeIis()
    server = serve(iis)
    iis.bindings = channel_bindings_for(served_certificate(server, kit))
    auth = SpnegoAuth(Credentials("LAB\\alice", Secret("wrong")), "ntlm")
    with wire(kit, server) as client:
        exchange = client.request("POST", "/mapi", content=b"x", auth=auth)
    assert exchange.status == 401
    assert auth.last_report is not None
    assert auth.last_report.failure is AuthFailure.REJECTED
