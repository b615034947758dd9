"""One normalised form for every name a pupil's client can write (issue 13, item 7), and
every authority of an HTTP request head read (item 4): IDN, case, trailing dots, NUL,
over-long names, several SNI entries, several Host headers, absolute and authority forms."""

from __future__ import annotations

import struct

import pytest
from packets import client_hello_message, extension, sni_extension

from edufilter._fastpath import parse_client_hello_names, parse_request_head


def head(*lines: str | bytes, target: bytes = b"/") -> bytes:
    raw = [line.encode() if isinstance(line, str) else line for line in lines]
    return b"GET " + target + b" HTTP/1.1\r\n" + b"".join(line + b"\r\n" for line in raw) + b"\r\n"


@pytest.mark.parametrize(("host", "name"), [
    (b"Host: WWW.Example.ORG", "www.example.org"),
    (b"host:www.example.org.", "www.example.org"),
    (b"HOST:\twww.example.org\t", "www.example.org"),
    (b"Host: www.example.org:8080", "www.example.org"),
    (b"Host: xn--bcher-kva.example", "xn--bcher-kva.example"),
])
def test_oddly_spelled_host_headers_give_one_name(host: bytes, name: str) -> None:
    found = parse_request_head(head(host))
    assert (found["name"], found["alt_name"], found["invalid"]) == (name, None, False)


@pytest.mark.parametrize("host", [
    "Host: bücher.example".encode(),            # UTF-8, not its punycode (A-label) form
    b"Host: www.exa\x00mple.org",
    b"Host: " + b"a" * 64 + b".example",        # a label over 63 bytes
    b"Host: " + b"abcdefghi." * 26 + b"org",    # over 253 bytes
    b"Host: www.example.org:80x",
])
def test_unreadable_host_names_are_flagged_not_dropped(host: bytes) -> None:
    found = parse_request_head(head(host))
    assert (found["name"], found["invalid"]) == (None, True)


def test_an_address_is_no_name_and_not_unreadable() -> None:
    for host in (b"Host: 198.18.0.7", b"Host: 198.18.0.7.", b"Host: [2001:2::7]:80"):
        found = parse_request_head(head(host))
        assert (found["kind"], found["invalid"]) == (None, False)


def test_two_different_host_headers_are_a_conflict() -> None:
    found = parse_request_head(head("Host: allowed.example", "Host: Blocked.Example."))
    assert (found["name"], found["alt_name"]) == ("allowed.example", "blocked.example")
    same = parse_request_head(head("Host: allowed.example", "host: ALLOWED.example."))
    assert (same["name"], same["alt_name"]) == ("allowed.example", None)


def test_an_absolute_form_target_naming_another_host_is_a_conflict() -> None:
    for scheme in (b"http", b"HTTPS"):
        found = parse_request_head(head("Host: allowed.example", target=scheme + b"://blocked.example:81/page?q"))
        assert (found["name"], found["alt_name"], found["path"]) == ("blocked.example", "allowed.example", "/page?q")


def test_connect_names_its_tunnel_target() -> None:
    found = parse_request_head(b"CONNECT blocked.example:443 HTTP/1.1\r\nHost: blocked.example:443\r\n\r\n")
    assert (found["name"], found["alt_name"]) == ("blocked.example", None)


def test_whitespace_before_the_colon_of_host_is_unreadable() -> None:
    found = parse_request_head(head("Host : blocked.example"))
    assert found["invalid"]


def test_the_head_length_ends_at_the_blank_line() -> None:
    first = head("Host: a.example")
    found = parse_request_head(first + b"GET /next HTTP/1.1\r\n")
    assert found["head_len"] == len(first)
    bare_lf = b"GET / HTTP/1.1\nHost: a.example\n\nrest"
    assert parse_request_head(bare_lf)["head_len"] == len(bare_lf) - 4


def sni_list(*names: bytes) -> bytes:
    entries = b"".join(b"\x00" + struct.pack("!H", len(name)) + name for name in names)
    return extension(0, struct.pack("!H", len(entries)) + entries)


def test_client_hello_names_are_normalised() -> None:
    found = parse_client_hello_names(client_hello_message([sni_extension(b"WWW.Example.ORG.")]))
    assert (found["kind"], found["name"], found["invalid"]) == ("sni", "www.example.org", False)


def test_several_sni_entries_or_extensions_are_a_conflict() -> None:
    for extensions in ([sni_list(b"allowed.example", b"blocked.example")],
                       [sni_extension(b"allowed.example"), extension(16, b"\x00\x03\x02h2"),
                        sni_extension(b"blocked.example")]):
        found = parse_client_hello_names(client_hello_message(extensions))
        assert (found["name"], found["alt_name"]) == ("allowed.example", "blocked.example")
    same = parse_client_hello_names(client_hello_message([sni_list(b"a.example", b"A.EXAMPLE.")]))
    assert same["alt_name"] is None


@pytest.mark.parametrize("name", ["bücher.example".encode(), b"a\x00.example", b"a" * 300, b""])
def test_unreadable_sni_is_flagged(name: bytes) -> None:
    found = parse_client_hello_names(client_hello_message([sni_extension(name)]))
    assert (found["name"], found["invalid"]) == (None, True)


def test_a_server_name_list_that_does_not_add_up_is_unreadable() -> None:
    bad = extension(0, struct.pack("!H", 40) + b"\x00\x00\x05abcde")
    assert parse_client_hello_names(client_hello_message([bad]))["invalid"]

