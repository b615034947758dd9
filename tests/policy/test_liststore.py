"""The list store: sorted unique data, atomic replacement, aliases, registration, scale."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edufilter.errors import PolicyError
from edufilter.policy import liststore
from edufilter.policy.liststore import ListCounts, ListStore, register_categories
from edufilter.policy.model import Category
from edufilter.policy.store import PolicyStore

BLOCKLISTS = Path(__file__).resolve().parents[3] / "shared" / "blocklists"
UT1 = BLOCKLISTS / "ut1"
SYNTH = BLOCKLISTS / "synth.py"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def ut1_tree(root: Path, adult: int = 500, gambling: int = 300) -> Path:
    """A small UT1 tree: two categories (one with bare IPs and URLs), an alias, a catalogue."""
    write(root / "adult" / "domains", "".join(f"Site{i}.Adult.example\n" for i in range(adult)).encode())
    write(root / "adult" / "urls", b"www.example.org/adult/page\n")
    bets = "".join(f"bet{i}.example\n" for i in range(gambling)).encode()
    write(root / "gambling" / "domains", bets + b"192.0.2.9\n")
    os.symlink("adult", root / "porn")
    write(root / "global_usage", b"NAME:\tadult\nNAME NL: 18+\nNAME FR: Adulte\nDESC FR: Sites adultes.\n")
    return root


def store_files(store: ListStore) -> set[str]:
    return {str(path.relative_to(store.root)) for path in store.root.rglob("*")}


def test_plain_import_is_sorted_unique_with_counts_and_meta(tmp_path: Path) -> None:
    source = write(tmp_path / "list.txt", b"b.example\na.example\nB.EXAMPLE.\n192.0.2.1\nbad..name\nc.example\n")
    store = ListStore(tmp_path / "lists")
    report = store.import_file(source, "mine", "plain")
    stored = store.get("mine")
    assert stored is not None
    assert b"".join(stored.name_chunks()) == b"a.example\nb.example\nc.example\n"
    assert list(stored.cidrs()) == ["192.0.2.1/32"]
    assert stored.counts == ListCounts(names=3, cidrs=1, urls=0, bad_lines=1)
    assert stored.source == "list.txt" and stored.origin == str(source) and stored.alias_of is None
    assert report.imported[0].changed and report.bad.count == 1
    assert report.categories == [Category(name="mine", source="list.txt")]
    meta = json.loads((tmp_path / "lists" / "mine" / "meta.json").read_text())
    assert meta["counts"] == {"names": 3, "cidrs": 1, "urls": 0, "bad_lines": 1}
    assert meta["imported_at"].endswith("+00:00") and meta["md5"] is None
    assert [stored.name for stored in store.categories()] == ["mine"]
    assert not store.import_file(source, "mine", "plain").imported[0].changed


def test_name_chunks_are_blocks_of_whole_lines(tmp_path: Path) -> None:
    names = sorted(f"host{i:05d}.example.net" for i in range(20000))
    store = ListStore(tmp_path / "lists")
    store.import_file(write(tmp_path / "l", "\n".join(names).encode()), "big", "plain")
    stored = store.get("big")
    assert stored is not None
    chunks = list(stored.name_chunks(block_bytes=4096))
    assert len(chunks) > 50 and all(chunk.endswith(b"\n") for chunk in chunks)
    assert b"".join(chunks).decode().split() == names


def test_spilled_runs_merge_to_the_same_sorted_unique_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(liststore, "RUN_LINES", 1000)
    names = [f"n{(i * 7919) % 6000}.example" for i in range(15000)]  # every name 2-3 times, shuffled
    store = ListStore(tmp_path / "lists")
    store.import_file(write(tmp_path / "l", "\n".join(names).encode()), "spilled", "plain")
    stored = store.get("spilled")
    assert stored is not None
    assert b"".join(stored.name_chunks()).decode().split() == sorted(set(names))
    assert stored.counts.names == 6000
    assert not any(".run" in name for name in store_files(store))


def test_a_failing_import_leaves_the_old_data_live(tmp_path: Path) -> None:
    store = ListStore(tmp_path / "lists")
    store.import_file(write(tmp_path / "good.txt", b"old.example\n"), "cat", "plain")
    before = store.get("cat")
    # Large enough for several read blocks: the damage shows after names were already read.
    data = gzip.compress("".join(f"n{i}.example\n" for i in range(1_000_000)).encode(), compresslevel=1)
    broken = write(tmp_path / "broken.gz", data[: len(data) * 3 // 4])
    read_before_failing: list[int] = []
    with pytest.raises(PolicyError, match="broken.gz: cannot read"):
        store.import_file(broken, "cat", "plain", progress=lambda done, total: read_before_failing.append(done))
    assert read_before_failing  # whole blocks of names were read before the damage showed
    after = store.get("cat")
    assert after == before and after is not None
    assert b"".join(after.name_chunks()) == b"old.example\n"
    assert os.listdir(store.root / ".versions") == [after.folder.name]  # the partial version is gone


def test_a_crash_leaves_the_old_data_and_the_next_writer_cleans_up(tmp_path: Path) -> None:
    store = ListStore(tmp_path / "lists")
    store.import_file(write(tmp_path / "good.txt", b"old.example\n"), "cat", "plain")
    live = store.get("cat")
    assert live is not None
    # What a writer killed at each step leaves behind.
    (store.root / ".versions" / "cat@dead.partial").mkdir()
    (store.root / ".versions" / "cat@unlinked").mkdir()
    os.symlink(".versions/cat@unlinked", store.root / ".cat.link")
    (store.root / ".work-dead").mkdir()
    assert store.get("cat") == live
    store.import_file(write(tmp_path / "other.txt", b"x.example\n"), "other", "plain")
    other = store.get("other")
    assert other is not None
    assert sorted(os.listdir(store.root / ".versions")) == sorted([live.folder.name, other.folder.name])
    assert sorted(os.listdir(store.root)) == [".lock", ".versions", "cat", "other"]


def test_a_reader_of_a_replaced_version_gets_a_clear_error(tmp_path: Path) -> None:
    store = ListStore(tmp_path / "lists")
    store.import_file(write(tmp_path / "a.txt", b"a.example\n"), "cat", "plain")
    old = store.get("cat")
    store.import_file(write(tmp_path / "b.txt", b"b.example\n"), "cat", "plain")
    assert old is not None
    with pytest.raises(PolicyError, match="replaced or removed while being read"):
        list(old.name_chunks())


def test_ut1_import_aliases_catalogue_and_registration(tmp_path: Path) -> None:
    tree = ut1_tree(tmp_path / "ut1")
    store = ListStore(tmp_path / "lists")
    seen: list[tuple[int, int]] = []
    report = store.import_ut1(tree, progress=lambda done, total: seen.append((done, total)))
    assert [category.name for category in report.imported] == ["adult", "gambling", "porn"]
    assert report.failed == {} and report.changed == ["adult", "gambling", "porn"]
    adult, gambling, porn = (store.get(name) for name in ("adult", "gambling", "porn"))
    assert adult and gambling and porn
    assert adult.counts == ListCounts(names=500, cidrs=0, urls=1)
    assert list(adult.urls()) == ["www.example.org/adult/page"]
    assert gambling.counts.cidrs == 1 and list(gambling.cidrs()) == ["192.0.2.9/32"]
    assert porn.alias_of == "adult" and list(porn.name_chunks()) == [] and porn.counts.entries == 0
    assert seen[-1][0] == seen[-1][1] == sum(p.stat().st_size for p in tree.rglob("*") if p.name in ("domains", "urls"))
    by_name = {category.name: category for category in report.categories}
    assert by_name["adult"].titles == {"nl": "18+", "fr": "Adulte"} and by_name["porn"].alias_of == "adult"

    with PolicyStore(tmp_path / "policy.sqlite") as policy:
        assert register_categories(policy, reversed(report.categories)) == ["gambling", "adult", "porn"]
        version = policy.version
        assert register_categories(policy, report.categories) == []  # nothing new: no version bump
        assert policy.version == version
        # A single-category import carries no titles: the stored ones stay.
        assert register_categories(policy, [Category(name="adult", source="ut1")]) == []
        stored = {category.name: category for category in policy.load().categories}
        assert stored["adult"].titles["nl"] == "18+" and stored["porn"].alias_of == "adult"

    again = store.import_ut1(tree, only=["gambling"])
    assert again.changed == [] and [category.name for category in again.imported] == ["gambling"]


def test_ut1_archive_and_only(tmp_path: Path) -> None:
    ut1_tree(tmp_path / "ut1")
    archive = tmp_path / "blacklists.tar.gz"
    subprocess.run(["tar", "-czf", archive, "-C", tmp_path, "--transform", "s,^ut1,blacklists,", "ut1"], check=True)
    store = ListStore(tmp_path / "lists")
    with pytest.raises(PolicyError, match="porn is an alias of adult: import adult too"):
        store.import_ut1(archive, only=["porn"])
    with pytest.raises(PolicyError, match="has no category nothing"):
        store.import_ut1(archive, only=["nothing"])
    report = store.import_ut1(archive, only=["porn", "adult"])
    assert sorted(category.name for category in report.imported) == ["adult", "porn"]
    assert store.get("adult").origin == str(archive)  # type: ignore[union-attr]
    assert not any(name.startswith(".work-") for name in os.listdir(store.root))
    with pytest.raises(PolicyError, match="no such file or folder"):
        store.import_ut1(tmp_path / "absent.tar.gz")
    with pytest.raises(PolicyError, match="no UT1 categories"):
        store.import_ut1(write(tmp_path / "empty" / "README", b"").parent)


def test_damaged_category_and_shrinking_category_keep_their_data(tmp_path: Path) -> None:
    tree = ut1_tree(tmp_path / "ut1")
    store = ListStore(tmp_path / "lists")
    store.import_ut1(tree)
    adult_before = store.get("adult")
    write(tree / "adult" / "domains", b"")
    write(tree / "gambling" / "domains.gz", b"\x1f\x8b not gzip")
    (tree / "gambling" / "domains").unlink()
    report = store.import_ut1(tree, min_ratio=0.5)
    assert set(report.failed) == {"adult", "gambling"}
    assert "the new list has 1 entries, the stored one 501" in report.failed["adult"]
    assert "domains.gz" in report.failed["gambling"]
    assert store.get("adult") == adult_before and store.get("gambling").counts.names == 300  # type: ignore[union-attr]
    assert [category.name for category in report.imported] == ["porn"]  # its target is still stored
    forced = store.import_ut1(tree, only=["adult"])
    assert adult_before is not None
    assert forced.imported[0].counts.names == 0 and forced.imported[0].previous == adult_before.counts


def test_file_with_no_valid_entry_is_refused(tmp_path: Path) -> None:
    store = ListStore(tmp_path / "lists")
    store.import_file(write(tmp_path / "good.txt", b"good.example\n"), "cat", "plain")
    with pytest.raises(PolicyError, match="no valid entries"):
        store.import_file(write(tmp_path / "junk.bin", bytes(b for b in range(256) if b not in b"\r\n") * 20), "cat")
    assert store.get("cat").counts.names == 1  # type: ignore[union-attr]
    with pytest.raises(PolicyError, match="category 'Bad Name'"):
        store.import_file(tmp_path / "good.txt", "Bad Name")


def test_remove_and_its_refusals(tmp_path: Path) -> None:
    store = ListStore(tmp_path / "lists")
    store.import_ut1(ut1_tree(tmp_path / "ut1"))
    with pytest.raises(PolicyError, match="target of aliases porn"):
        store.remove("adult")
    store.remove("porn")
    store.remove("adult")
    assert [category.name for category in store.categories()] == ["gambling"]
    assert len(os.listdir(store.root / ".versions")) == 1
    with pytest.raises(PolicyError, match="no imported category 'adult'"):
        store.remove("adult")


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    first = ListStore(tmp_path / "lists")
    second = ListStore(tmp_path / "lists")
    with first.locked():
        with first.locked():  # re-entrant for the same store object
            pass
        with pytest.raises(PolicyError, match="another list import or update is running"):
            second.import_file(write(tmp_path / "a", b"a.example\n"), "cat")
    second.import_file(tmp_path / "a", "cat")


def test_damaged_meta_is_a_clear_error(tmp_path: Path) -> None:
    store = ListStore(tmp_path / "lists")
    store.import_file(write(tmp_path / "a", b"a.example\n"), "cat")
    (store.root / "cat" / "meta.json").write_text("{")
    with pytest.raises(PolicyError, match="damaged list store entry"):
        store.get("cat")
    assert ListStore(tmp_path / "nothing").categories() == []


@pytest.mark.skipif(not SYNTH.is_file(), reason=f"{SYNTH} not found (see shared/blocklists/README.md)")
def test_five_million_names_import_in_bounded_memory(tmp_path: Path) -> None:
    """5 M names shaped like the real lists: synth.py's names (50 k: it takes minutes for 5 M)
    under 100 distinct prefixes of their first label. Imported in a child process, to measure
    its own peak memory (its time is printed, not gated: that is the compile benchmark's)."""
    seed = subprocess.run([sys.executable, SYNTH, "50000"], check=True, capture_output=True).stdout.split()
    source = tmp_path / "five-million.txt"
    with open(source, "wb") as out:
        for prefix in range(100):
            out.write(b"\n".join(b"p%02d" % prefix + name for name in seed) + b"\n")
    script = (
        "import sys, time\n"
        "from edufilter.policy.liststore import ListStore\n"
        "started = time.monotonic()\n"
        "report = ListStore(sys.argv[1]).import_file(sys.argv[2], 'synthetic', 'plain')\n"
        # VmHWM is this process's own peak; ru_maxrss would carry the forking test process's
        # peak across the exec.
        "peak = next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:'))\n"
        "print(report.imported[0].counts.names, time.monotonic() - started, peak // 1024)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, tmp_path / "lists", source], check=True, capture_output=True, text=True
    )
    names, seconds, peak_mib = result.stdout.split()
    print(f"\n5 M names: {names} stored in {float(seconds):.1f} s, peak {peak_mib} MiB")
    assert int(names) > 4_990_000
    assert int(peak_mib) < 400
    stored = ListStore(tmp_path / "lists").get("synthetic")
    assert stored is not None
    previous = b""
    for chunk in stored.name_chunks():
        first_line = chunk[: chunk.index(b"\n")]
        assert previous < first_line
        previous = chunk[chunk.rindex(b"\n", 0, len(chunk) - 1) + 1: -1]
