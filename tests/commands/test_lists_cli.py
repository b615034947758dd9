"""`edufilter lists ...` end to end through the command line's main()."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edufilter.cli import main
from edufilter.policy.store import PolicyStore

UT1 = Path(__file__).resolve().parents[3] / "shared" / "blocklists" / "ut1"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def ut1_tree(root: Path) -> Path:
    write(root / "adult" / "domains", "".join(f"site{i}.example\n" for i in range(200)).encode() + b"bad..line\n")
    write(root / "gambling" / "domains", b"bet.example\n192.0.2.1\n")
    os.symlink("adult", root / "porn")
    write(root / "global_usage", b"NAME:\tadult\nNAME NL: 18+\nNAME FR: Adulte\n")
    return root


def lists(state: Path, *args: str) -> int:
    return main(["lists", *args, "--state-dir", str(state)])


def registered(state: Path) -> dict[str, object]:
    with PolicyStore(state / "policy.sqlite") as policy:
        return {category.name: category for category in policy.load().categories}


def test_import_show_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    assert lists(state, "import", "ut1", str(ut1_tree(tmp_path / "ut1")), "--only", "adult,porn") == 0
    out, err = capsys.readouterr()
    assert "imported 2 categories (1 alias): 200 names, 0 networks, 0 URLs; 1 bad line" in out
    assert "changed: adult, porn" in out
    assert "bad line:" in err and "adult/domains:201" in err
    assert set(registered(state)) == {"adult", "porn"}

    hosts = write(tmp_path / "hosts.txt", b"0.0.0.0 ads.example\n0.0.0.0 track.example\n")
    assert lists(state, "import", "hosts", str(hosts), "--category", "ads") == 0
    assert "imported 1 category: 2 names" in capsys.readouterr().out

    assert lists(state, "show") == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["CATEGORY", "SOURCE", "NAMES", "NETWORKS", "URLS", "BAD", "AGE", "ALIAS", "OF"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert rows["adult"][1:7] == ["ut1", "200", "0", "0", "1", "now"]
    assert rows["ads"][1:3] == ["hosts.txt", "2"]
    assert rows["porn"][-1] == "adult"

    assert lists(state, "remove", "adult") == 2
    assert "target of aliases porn" in capsys.readouterr().err
    assert lists(state, "remove", "porn") == 0
    assert lists(state, "remove", "adult") == 0
    assert set(registered(state)) == {"ads"}
    assert lists(state, "remove", "adult") == 2
    assert "no category 'adult'" in capsys.readouterr().err


def test_import_errors_exit_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    assert lists(state, "import", "ut1", str(tmp_path / "absent")) == 2
    assert "edufilter lists: error:" in capsys.readouterr().err
    junk = write(tmp_path / "junk.bin", bytes(range(1, 10)) * 100)
    assert lists(state, "import", "plain", str(junk), "--category", "junk") == 2
    assert "no valid entries" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lists(state, "import", "hosts", str(junk))  # --category is required


def test_a_damaged_category_exits_1_and_keeps_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = ut1_tree(tmp_path / "ut1")
    write(tree / "games" / "domains.1.gz", b"")  # part 0 missing
    assert lists(tmp_path / "state", "import", "ut1", str(tree)) == 1
    out, err = capsys.readouterr()
    assert "games kept its stored list" in err and "part 0 is missing" in err
    assert "imported 3 categories" in out


@pytest.mark.skipif(not (UT1 / "global_usage").is_file(), reason=f"real UT1 snapshot not found at {UT1}")
def test_import_the_real_ut1_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    assert lists(state, "import", "ut1", str(UT1)) == 0
    out = capsys.readouterr().out
    assert "0 bad lines" in out
    categories = registered(state)
    assert categories["violence"].alias_of == "agressif"  # type: ignore[attr-defined]
    assert categories["adult"].titles["nl"] == "18+ (X)"  # type: ignore[attr-defined]


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain HTTP folder on 127.0.0.1 serving what the test puts in it."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(folder)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", folder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def publish(folder: Path, names: int) -> None:
    buffer = io.BytesIO()
    data = "".join(f"n{i}.adult.example\n" for i in range(names)).encode()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("blacklists/adult/domains")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    archive = buffer.getvalue()
    (folder / "blacklists.tar.gz").write_bytes(archive)
    (folder / "MD5SUM.LST").write_text(f"{hashlib.md5(archive).hexdigest()}  blacklists.tar.gz\n")


def test_update_through_the_command_line(
    tmp_path: Path, mirror: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    url, folder = mirror
    state = tmp_path / "state"
    publish(folder, 300)
    assert lists(state, "update", "--url", url) == 0
    out, err = capsys.readouterr()
    assert "imported 1 category: 300 names" in out
    assert "download blacklists.tar.gz: 100%" in err  # a plain progress line: stderr is no terminal
    assert lists(state, "update", "--url", url) == 0
    assert capsys.readouterr().out == f"unchanged: {url}blacklists.tar.gz\n"

    publish(folder, 10)
    assert lists(state, "update", "--url", url) == 2
    assert "adult: the new list has 10 entries, the stored one 300" in capsys.readouterr().err
    assert lists(state, "update", "--url", url, "--force") == 0
    assert "changed: adult" in capsys.readouterr().out

    (folder / "MD5SUM.LST").unlink()
    assert lists(state, "update", "--url", url, "--category", "adult") == 2
    assert "no MD5 published" in capsys.readouterr().err
