"""`lists update` against a local HTTP server serving archives built here, broken ones too."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edufilter.errors import PolicyError
from edufilter.policy.liststore import ListStore
from edufilter.policy.store import PolicyStore
from edufilter.policy.update import CHECKSUM_LIST, UpdateError, parse_checksums, update_lists

STALL_SECONDS = 5.0  # how long a stalling response waits; tests time out after 0.5 s


@dataclass
class Response:
    body: bytes = b""
    status: int = 200
    declared_length: int | None = None  # a Content-Length beyond the body: the download is cut
    stall: str | None = None  # "headers" (nothing at all) or "body" (headers, then nothing)


@dataclass
class Upstream:
    url: str
    files: dict[str, Response] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def publish(self, name: str, archive: bytes, *, md5: str | None = None, checksum_list: bool = True) -> None:
        """Serve an archive and its MD5 (in MD5SUM.LST, or as <name>.md5)."""
        self.files[name] = Response(archive)
        checksum = md5 or hashlib.md5(archive).hexdigest()
        if checksum_list:
            listing = self.files.get(CHECKSUM_LIST, Response()).body
            lines = [line for line in listing.decode().splitlines() if not line.endswith(f" {name}")]
            self.files[CHECKSUM_LIST] = Response("\n".join([*lines, f"{checksum}  {name}"]).encode() + b"\n")
        else:
            self.files[f"{name}.md5"] = Response(f"{checksum}\n".encode())

    def archive_requests(self) -> list[str]:
        return [path for path in self.requests if path.endswith(".tar.gz")]


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    released = threading.Event()
    served = Upstream(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.rsplit("/", 1)[-1]
            served.requests.append(name)
            response = served.files.get(name, Response(b"not found", 404))
            if response.stall == "headers":
                released.wait(STALL_SECONDS)
                return
            self.send_response(response.status)
            self.send_header("Content-Length", str(response.declared_length or len(response.body)))
            self.end_headers()
            if response.stall == "body":
                self.wfile.write(response.body[:100])
                self.wfile.flush()
                released.wait(STALL_SECONDS)
                return
            self.wfile.write(response.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}/blacklists/download/"
    try:
        yield served
    finally:
        released.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def ut1_archive(adult: int = 400, gambling: int = 300, top: str = "blacklists/", alias: bool = True) -> bytes:
    files = {
        "global_usage": b"NAME:\tadult\nNAME NL: 18+\nNAME FR: Adulte\n",
        "adult/domains": "".join(f"site{i}.adult.example\n" for i in range(adult)).encode(),
        "adult/urls": b"www.example.org/adult/\n",
        "gambling/domains": "".join(f"bet{i}.example\n" for i in range(gambling)).encode(),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(top + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if alias:
            link = tarfile.TarInfo(top + "porn")
            link.type = tarfile.SYMTYPE
            link.linkname = "adult"
            tar.addfile(link)
    return buffer.getvalue()


def single_category_archive(category: str, names: int) -> bytes:
    data = "".join(f"n{i}.{category}.example\n" for i in range(names)).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"{category}/domains")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def digests(state: Path) -> dict[str, str]:
    return {category.name: category.digest for category in ListStore.in_state_dir(state).categories()}


@pytest.fixture
def state(tmp_path: Path, upstream: Upstream) -> Path:
    """A state folder holding a first good update."""
    upstream.publish("blacklists.tar.gz", ut1_archive())
    update_lists(tmp_path, base_url=upstream.url)
    upstream.requests.clear()
    return tmp_path


def test_first_update_imports_registers_and_recompiles(tmp_path: Path, upstream: Upstream) -> None:
    upstream.publish("blacklists.tar.gz", ut1_archive())
    compiled: list[Path] = []
    steps: list[str] = []
    report = update_lists(
        tmp_path, base_url=upstream.url, recompile=compiled.append,
        progress=lambda label: steps.append(label) or (lambda done, total: None),
    )
    assert sorted(report.changed) == ["adult", "gambling", "porn"]
    assert report.downloaded == [upstream.url + "blacklists.tar.gz"] and report.failed == {}
    assert compiled == [tmp_path]
    assert steps == ["download blacklists.tar.gz", "import blacklists.tar.gz"]
    adult = ListStore.in_state_dir(tmp_path).get("adult")
    assert adult is not None and adult.counts.names == 400
    assert adult.md5 == hashlib.md5(upstream.files["blacklists.tar.gz"].body).hexdigest()
    assert adult.origin == upstream.url + "blacklists.tar.gz"
    with PolicyStore(tmp_path / "policy.sqlite") as policy:
        categories = {category.name: category for category in policy.load().categories}
    assert categories["adult"].titles["nl"] == "18+" and categories["porn"].alias_of == "adult"
    assert sorted(report.registered) == ["adult", "gambling", "porn"]


def test_unchanged_md5_fetches_only_the_checksum_list(state: Path, upstream: Upstream) -> None:
    compiled: list[Path] = []
    report = update_lists(state, base_url=upstream.url, recompile=compiled.append)
    assert upstream.requests == [CHECKSUM_LIST]
    assert report.unchanged == [upstream.url + "blacklists.tar.gz"] and report.changed == [] and compiled == []
    forced = update_lists(state, base_url=upstream.url, force=True)
    assert upstream.archive_requests() == ["blacklists.tar.gz"] and forced.changed == []


def test_a_new_release_updates_only_the_imported_categories(tmp_path: Path, upstream: Upstream) -> None:
    upstream.publish("gambling.tar.gz", single_category_archive("gambling", 300))
    update_lists(tmp_path, ["gambling"], base_url=upstream.url)
    upstream.publish("blacklists.tar.gz", ut1_archive(gambling=320))
    report = update_lists(tmp_path, base_url=upstream.url)
    assert report.changed == ["gambling"]
    assert [category.name for category in ListStore.in_state_dir(tmp_path).categories()] == ["gambling"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("bad md5", "differs from the published"),
        ("truncated", "cut short"),
        ("not gzip", "cannot unpack"),
        ("no md5", "no MD5 published"),
        ("archive 404", "not found .HTTP 404"),
        ("checksums 500", "HTTP 500"),
        ("stalled body", "server stalled"),
        ("stalled headers", "no answer within|timed out"),
        ("too large", "more than the 0 MiB allowed"),
    ],
)
def test_every_failure_keeps_the_stored_lists(state: Path, upstream: Upstream, damage: str, message: str) -> None:
    before = digests(state)
    archive = ut1_archive(adult=450)
    max_bytes = 1 << 30
    if damage == "bad md5":
        upstream.publish("blacklists.tar.gz", archive, md5="0" * 32)
    elif damage == "truncated":
        upstream.publish("blacklists.tar.gz", archive)
        upstream.files["blacklists.tar.gz"] = Response(archive[:-200], declared_length=len(archive))
    elif damage == "not gzip":
        upstream.publish("blacklists.tar.gz", b"<html>maintenance</html>\n")
    elif damage == "no md5":
        upstream.files = {"blacklists.tar.gz": Response(archive)}
    elif damage == "archive 404":
        upstream.publish("blacklists.tar.gz", archive)
        del upstream.files["blacklists.tar.gz"]
    elif damage == "checksums 500":
        upstream.files[CHECKSUM_LIST] = Response(b"oops", 500)
    elif damage == "stalled body":
        upstream.publish("blacklists.tar.gz", archive)
        upstream.files["blacklists.tar.gz"].stall = "body"
    elif damage == "stalled headers":
        upstream.publish("blacklists.tar.gz", archive)
        upstream.files["blacklists.tar.gz"].stall = "headers"
    elif damage == "too large":
        upstream.publish("blacklists.tar.gz", archive)
        max_bytes = 1000
    compiled: list[Path] = []
    with pytest.raises(UpdateError, match=message) as failure:
        update_lists(state, base_url=upstream.url, timeout=0.5, max_bytes=max_bytes, recompile=compiled.append)
    assert isinstance(failure.value, PolicyError)
    assert "nothing was updated" in str(failure.value)
    assert digests(state) == before and compiled == []
    assert not [name for name in (state / "lists").iterdir() if name.name.startswith(".work-")]


def test_a_much_smaller_list_is_refused_unless_forced(state: Path, upstream: Upstream) -> None:
    before = digests(state)
    upstream.publish("blacklists.tar.gz", ut1_archive(adult=20, gambling=310))
    compiled: list[Path] = []
    with pytest.raises(UpdateError, match=r"adult: the new list has 21 entries, the stored one 401") as failure:
        update_lists(state, base_url=upstream.url, recompile=compiled.append)
    assert failure.value.report.changed == ["gambling"] and "updated: gambling" in str(failure.value)
    after = digests(state)
    assert after["adult"] == before["adult"] and after["gambling"] != before["gambling"]
    assert compiled == [state]  # gambling did change
    report = update_lists(state, base_url=upstream.url, force=True)
    assert report.changed == ["adult"]
    assert ListStore.in_state_dir(state).get("adult").counts.names == 20  # type: ignore[union-attr]


def test_per_category_archives_md5_files_and_alias_archives(tmp_path: Path, upstream: Upstream) -> None:
    # An alias's archive upstream is a copy of its target's: porn.tar.gz holds adult/.
    upstream.publish("adult.tar.gz", single_category_archive("adult", 50), checksum_list=False)
    upstream.publish("porn.tar.gz", single_category_archive("adult", 50), checksum_list=False)
    report = update_lists(tmp_path, ["porn", "adult"], base_url=upstream.url)
    assert report.failed == {}
    store = ListStore.in_state_dir(tmp_path)
    assert store.get("porn").alias_of == "adult"  # type: ignore[union-attr]
    assert store.get("adult").counts.names == 50  # type: ignore[union-attr]
    assert upstream.requests[0] == CHECKSUM_LIST and "adult.tar.gz.md5" in upstream.requests
    with pytest.raises(UpdateError, match="games.tar.gz: no MD5 published") as failure:
        update_lists(tmp_path, ["games", "adult"], base_url=upstream.url)
    assert failure.value.report.unchanged == [upstream.url + "adult.tar.gz"]
    with pytest.raises(PolicyError, match="category 'Bad'"):
        update_lists(tmp_path, ["Bad"], base_url=upstream.url)


def test_file_urls_work_for_a_local_mirror(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    archive = ut1_archive()
    (mirror / "blacklists.tar.gz").write_bytes(archive)
    (mirror / "MD5SUM.LST").write_text(f"{hashlib.md5(archive).hexdigest()}  blacklists.tar.gz\n")
    report = update_lists(tmp_path / "state", base_url=mirror.as_uri())
    assert sorted(report.changed) == ["adult", "gambling", "porn"]


def test_checksum_formats() -> None:
    md5 = "d41d8cd98f00b204e9800998ecf8427e"
    listing = f"{md5}  blacklists.tar.gz\n{md5.upper()} *adult.tar.gz\nMD5 (porn.tar.gz) = {md5}\njunk\n".encode()
    assert parse_checksums(listing) == {"blacklists.tar.gz": md5, "adult.tar.gz": md5, "porn.tar.gz": md5}
    assert parse_checksums(f"{md5}\n".encode(), "games.tar.gz") == {"games.tar.gz": md5}
