"""The list-file readers: real UT1 trees and real lists in other formats, then broken files."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from edufilter.errors import PolicyError
from edufilter.policy.sources import (
    BadLines,
    Entries,
    ListFormat,
    extract_ut1_archive,
    find_ut1_root,
    read_line_blocks,
    read_list,
    read_urls,
    read_ut1_catalogue,
    read_ut1_category,
    scan_ut1,
    sniff_format,
)

BLOCKLISTS = Path(__file__).resolve().parents[3] / "shared" / "blocklists"
UT1 = BLOCKLISTS / "ut1"
OTHER = BLOCKLISTS / "other"

needs_ut1 = pytest.mark.skipif(
    not (UT1 / "global_usage").is_file(),
    reason=f"real UT1 snapshot not found at {UT1} (see shared/blocklists/README.md)",
)
needs_other = pytest.mark.skipif(not OTHER.is_dir(), reason=f"real lists not found at {OTHER}")


def read_all(entries: object) -> Entries:
    total = Entries()
    for block in entries:  # type: ignore[attr-defined]
        total.names += block.names
        total.cidrs += block.cidrs
        total.urls += block.urls
    return total


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- the real UT1 snapshot


@needs_ut1
def test_real_ut1_tree_categories_aliases_and_folders_without_domains() -> None:
    root = find_ut1_root(UT1)
    tree = scan_ut1(root)
    aliases = {name: category.alias_of for name, category in tree.items() if category.alias_of}
    assert aliases == {
        "ads": "publicite", "aggressive": "agressif", "drugs": "drogue", "mail": "forums",
        "porn": "adult", "proxy": "redirector", "violence": "agressif",
    }
    # The snapshot lacks the largest domains files: those folders hold urls and usage only.
    for name in ("adult", "malware", "phishing"):
        assert tree[name].domain_files == () and tree[name].url_files
    assert tree["adult"].usage[0] == "black"
    assert set(tree["adult"].ignored_files) == {"expressions", "very_restrictive_expression"}
    assert len(tree) > 60


@needs_ut1
def test_real_ut1_lists_read_without_bad_lines_and_yield_networks() -> None:
    tree = scan_ut1(UT1)
    bad = BadLines()
    agressif = read_all(read_ut1_category(tree["agressif"], bad))
    redirector = read_all(read_ut1_category(tree["redirector"], bad))
    assert bad.count == 0
    assert len(redirector.names) > 50_000
    assert agressif.cidrs and all("/" in network for network in agressif.cidrs)  # bare IPs in domains
    assert agressif.urls and all("/" in url and "://" not in url for url in agressif.urls)
    names = set(redirector.names)
    assert all(name == name.lower() and not name.endswith(".") for name in names)


@needs_ut1
def test_real_ut1_catalogue_has_dutch_and_french_titles() -> None:
    catalogue = read_ut1_catalogue(UT1 / "global_usage")
    adult = catalogue["adult"]
    assert adult.titles["fr"] == "Adulte (X)"
    assert adult.titles["nl"] == "18+ (X)"
    assert adult.descriptions["fr"].startswith("Des sites adultes")
    assert adult.source == "ut1"
    assert all("fr" in category.titles for category in catalogue.values())
    assert sum("nl" in category.titles for category in catalogue.values()) >= len(catalogue) - 2  # download lacks NL


# ---------------------------------------------------------------- UT1 trees built here


def test_split_domains_parts_join_across_a_line_cut_by_size(tmp_path: Path) -> None:
    names = [f"site{index}.example.org" for index in range(3000)]
    whole = ("\n".join(names) + "\n").encode()
    folder = tmp_path / "adult"
    # `split -b` cuts lines in the middle; the mirror then gzips the parts (not always all).
    cuts = [0, 20_001, 41_337, len(whole)]
    for number, (start, end) in enumerate(zip(cuts, cuts[1:])):
        part = whole[start:end]
        if number < 2:
            write(folder / f"domains.{number}.gz", gzip.compress(part))
        else:
            write(folder / f"domains.{number}", part)
    write(folder / "usage", b"black\n")
    bad = BadLines()
    entries = read_all(read_ut1_category(scan_ut1(tmp_path)["adult"], bad))
    assert entries.names == names
    assert bad.count == 0


def test_a_missing_part_fails_the_category_only(tmp_path: Path) -> None:
    write(tmp_path / "adult" / "domains.0.gz", gzip.compress(b"a.example\n"))
    write(tmp_path / "adult" / "domains.2.gz", gzip.compress(b"c.example\n"))
    write(tmp_path / "games" / "domains", b"game.example\n")
    tree = scan_ut1(tmp_path)
    with pytest.raises(PolicyError, match="part 1 is missing"):
        read_all(read_ut1_category(tree["adult"], BadLines()))
    assert read_all(read_ut1_category(tree["games"], BadLines())).names == ["game.example"]


def test_aliases_from_symlinks_and_from_the_text_file_a_checkout_leaves(tmp_path: Path) -> None:
    write(tmp_path / "adult" / "domains", b"x.example\n")
    write(tmp_path / "agressif" / "urls", b"hate.example/page\n")
    os.symlink("adult", tmp_path / "porn")
    write(tmp_path / "violence", b"agressif\n")
    os.symlink("/etc", tmp_path / "outside")  # not a sibling: ignored
    write(tmp_path / "dangling", b"nothing\n")
    tree = scan_ut1(tmp_path)
    assert {name: category.alias_of for name, category in tree.items()} == {
        "adult": None, "agressif": None, "porn": "adult", "violence": "agressif",
    }
    assert tree["agressif"].domain_files == ()


def test_catalogue_latin1_entities_and_languages(tmp_path: Path) -> None:
    text = (
        "# comment NAME: ignored\n"
        "NAME:\tgames\nDEFAULT_TYPE: black\n"
        "DESC EN: Game sites.\nDESC FR: Jeux &eacute;lectroniques.\n"
        "NAME EN: Games\nNAME FR: Jeux\nNAME NL: Spelletjes\n\n"
        "NAME:  Not A Slug\nNAME EN: skipped\n"
    )
    catalogue = read_ut1_catalogue(write(tmp_path / "global_usage", text.encode("latin-1")))
    assert list(catalogue) == ["games"]
    assert catalogue["games"].titles == {"en": "Games", "fr": "Jeux", "nl": "Spelletjes"}
    assert catalogue["games"].descriptions["fr"] == "Jeux électroniques."


def test_find_root_accepts_the_folder_above_blacklists(tmp_path: Path) -> None:
    write(tmp_path / "blacklists" / "games" / "domains", b"game.example\n")
    assert find_ut1_root(tmp_path) == tmp_path / "blacklists"
    with pytest.raises(PolicyError, match="not a UT1 folder"):
        find_ut1_root(tmp_path / "nothing")


# ---------------------------------------------------------------- other formats, real files


@needs_other
@pytest.mark.parametrize(
    ("file", "fmt", "names"),
    [
        ("blocklistproject-redirect.hosts.txt", ListFormat.HOSTS, 108_685),
        ("hagezi-light.adblock.txt", ListFormat.ADBLOCK, 122_680),
        ("shadowwhisperer-adult.txt", ListFormat.PLAIN, 219_522),
        ("stevenblack.domains.txt", ListFormat.PLAIN, 140_626),
    ],
)
def test_real_lists_sniffed_and_read_with_their_announced_counts(file: str, fmt: ListFormat, names: int) -> None:
    path = OTHER / file
    assert sniff_format(path) is fmt
    bad = BadLines()
    entries = read_all(read_list(path, ListFormat.AUTO, bad))
    assert len(entries.names) == names  # the count each file's header announces
    assert bad.count == 0


# ---------------------------------------------------------------- formats and broken files


def test_plain_lines_comments_crlf_bom_idn_and_addresses(tmp_path: Path) -> None:
    text = (
        "\ufeffFirst.Example.ORG.\r\n"
        "# a comment\r\n"
        "second.example  # trailing comment\r\n"
        "*.wild.example\r\n"
        ".squid.example\r\n"
        "bücher.de\r\n"
        "192.0.2.7\r\n"
        "2001:db8::/32\r\n"
        "198.51.100.0/24\r\n"
        "two names.example\r\n"
        "bad..name\r\n"
        "\r\n"
    )
    bad = BadLines()
    path = write(tmp_path / "list.txt", text.encode("utf-8"))
    entries = read_all(read_list(path, ListFormat.PLAIN, bad))
    assert entries.names == ["first.example.org", "second.example", "wild.example", "squid.example", "xn--bcher-kva.de"]
    assert entries.cidrs == ["192.0.2.7/32", "2001:db8::/32", "198.51.100.0/24"]
    assert bad.count == 2
    assert [(line.line_number, line.reason) for line in bad.first] == [
        (10, "more than one field"), (11, "not a valid host name or IP address"),
    ]
    assert str(bad.first[0]).startswith(f"{path}:10: more than one field")


def test_hosts_lines(tmp_path: Path) -> None:
    text = (
        "127.0.0.1 localhost\n"
        "::1 ip6-localhost ip6-loopback\n"
        "0.0.0.0 0.0.0.0\n"
        "0.0.0.0 ads.example tracker.example # two names\n"
        "0.0.0.0\tTabbed.Example\n"
        "bare.example\n"
        "0.0.0.0\n"
        "ads.example 0.0.0.0\n"
    )
    bad = BadLines()
    entries = read_all(read_list(write(tmp_path / "hosts", text.encode()), ListFormat.HOSTS, bad))
    assert entries.names == ["ads.example", "tracker.example", "tabbed.example", "bare.example"]
    assert dict(bad.reasons) == {"address without a name": 1, "first field is not an IP address": 1}


def test_adblock_subset_and_the_rules_outside_it(tmp_path: Path) -> None:
    text = (
        "[Adblock Plus 2.0]\n! comment\n"
        "||ads.example^\n||important.example^$important\n||pipe.example^|\n"
        "@@||allowed.example^\n||path.example/banner^\n||*.wild.example^\nexample.com##.banner\n"
        "||opt.example^$third-party\n/regex/\n"
    )
    path = write(tmp_path / "adblock.txt", text.encode())
    assert sniff_format(path) is ListFormat.ADBLOCK
    bad = BadLines()
    entries = read_all(read_list(path, ListFormat.AUTO, bad))
    assert entries.names == ["ads.example", "important.example", "pipe.example"]
    assert bad.count == 6
    assert any("exception" in reason for reason in bad.reasons)
    assert any("$third-party" in reason for reason in bad.reasons)


def test_binary_junk_is_counted_never_fatal(tmp_path: Path) -> None:
    junk = bytes(range(256)) * 200 + b"\nok.example\n" + os.urandom(5000)
    bad = BadLines()
    entries = read_all(read_list(write(tmp_path / "junk.bin", junk), ListFormat.AUTO, bad))
    assert "ok.example" in entries.names
    assert bad.count > 0 and len(bad.first) <= bad.keep


def test_utf16_file_is_reported_as_such(tmp_path: Path) -> None:
    path = write(tmp_path / "utf16.txt", "one.example\ntwo.example\n".encode("utf-16"))
    bad = BadLines()
    assert read_all(read_list(path, ListFormat.PLAIN, bad)).names == []
    assert any("UTF-16" in reason for reason in bad.reasons)


def test_overlong_lines_are_bad_lines_and_blocks_stay_bounded(tmp_path: Path) -> None:
    path = write(tmp_path / "long.txt", b"a" * 5000 + b".example\nfine.example\n" + b"x" * 3000 + b"\nlast.example")
    lines = [line for _, _, block in read_line_blocks(path, block_bytes=1024) for line in block]
    assert b"fine.example" in lines and lines[-1] == b"last.example"
    assert max(len(line) for line in lines) <= 2048
    bad = BadLines()
    assert read_all(read_list(path, ListFormat.PLAIN, bad)).names == ["fine.example", "last.example"]
    assert bad.count == 2


def test_gzip_lists_damaged_and_truncated(tmp_path: Path) -> None:
    names = "".join(f"n{index}.example\n" for index in range(20000)).encode()
    good = write(tmp_path / "good.gz", gzip.compress(names))
    assert len(read_all(read_list(good, ListFormat.AUTO, BadLines())).names) == 20000
    truncated = write(tmp_path / "truncated.gz", good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(PolicyError, match="truncated.gz: cannot read"):
        read_all(read_list(truncated, ListFormat.PLAIN, BadLines()))
    damaged = write(tmp_path / "damaged.gz", b"\x1f\x8b" + os.urandom(4000))
    with pytest.raises(PolicyError, match="damaged.gz"):
        read_all(read_list(damaged, ListFormat.AUTO, BadLines()))


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        read_all(read_list(tmp_path / "absent", ListFormat.PLAIN, BadLines()))
    with pytest.raises(PolicyError, match="unknown list format 'csv'"):
        read_all(read_list(write(tmp_path / "a", b"a.example\n"), "csv", BadLines()))


def test_urls_hosts_normalised_paths_kept(tmp_path: Path) -> None:
    text = (
        b"WWW.Example.COM/Path/Page.html\nhttp://plain.example/x?y=1\n192.0.2.1/admin\n"
        b"bad..host/x\nspace.example/a b\n"
    )
    bad = BadLines()
    entries = read_all(read_urls(write(tmp_path / "urls", text), bad))
    assert entries.urls == ["www.example.com/Path/Page.html", "plain.example/x?y=1", "192.0.2.1/admin"]
    assert bad.count == 2


def test_progress_counts_the_bytes_on_disk(tmp_path: Path) -> None:
    path = write(tmp_path / "list.gz", gzip.compress("".join(f"n{i}.example\n" for i in range(50000)).encode()))
    seen: list[int] = []
    read_all(read_list(path, ListFormat.PLAIN, BadLines(), seen.append))
    assert sum(seen) == path.stat().st_size


# ---------------------------------------------------------------- archives


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def test_whole_and_single_category_archives(tmp_path: Path) -> None:
    whole = write(tmp_path / "blacklists.tar.gz", tar_bytes([
        file_member("blacklists/global_usage", b"NAME:\tadult\nNAME FR: Adulte\n"),
        file_member("blacklists/adult/domains", b"a.example\n"),
        file_member("./blacklists/adult/usage", b"black\n"),
        link_member("blacklists/porn", "adult"),
    ]))
    assert extract_ut1_archive(whole, tmp_path / "whole") == []
    tree = scan_ut1(tmp_path / "whole")
    assert tree["porn"].alias_of == "adult" and tree["adult"].usage == ("black",)
    single = write(tmp_path / "adult.tar.gz", tar_bytes([file_member("adult/domains", b"a.example\n")]))
    extract_ut1_archive(single, tmp_path / "single")
    assert (tmp_path / "single" / "adult" / "domains").read_bytes() == b"a.example\n"


def test_hostile_archive_writes_nothing_outside_and_nothing_else(tmp_path: Path) -> None:
    destination = tmp_path / "out"
    archive = write(tmp_path / "hostile.tar.gz", tar_bytes([
        file_member("../escape", b"x"),
        file_member("blacklists/../../escape2", b"x"),
        file_member("/etc/absolute", b"x"),
        file_member("adult/../../escape3", b"x"),
        file_member("adult/domains/../../../escape4", b"x"),
        file_member("adult/notes.sh", b"#!/bin/sh\n"),
        link_member("porn", "/etc"),
        link_member("up", "../.."),
        link_member("adult/domains", "/etc/passwd"),
        link_member("hard", "adult/domains", tarfile.LNKTYPE),
        link_member("ads", "gambling"),
        file_member("ads/domains", b"through.a.symlink\n"),
        file_member("gambling/domains", b"bet.example\n"),
    ]))
    skipped = extract_ut1_archive(archive, destination)
    assert not any(path.name.startswith("escape") for path in tmp_path.rglob("*"))
    written = sorted(str(path.relative_to(destination)) for path in destination.rglob("*"))
    assert written == ["ads", "gambling", "gambling/domains"]
    assert (destination / "gambling" / "domains").read_bytes() == b"bet.example\n"
    assert "ads/domains" in skipped and "porn" in skipped and "../escape" in skipped


def test_damaged_truncated_and_oversized_archives(tmp_path: Path) -> None:
    good = tar_bytes([file_member("adult/domains", os.urandom(200_000).hex().encode())])
    truncated = write(tmp_path / "truncated.tar.gz", good[: len(good) // 2])
    with pytest.raises(PolicyError, match="cannot unpack"):
        extract_ut1_archive(truncated, tmp_path / "a")
    junk = write(tmp_path / "junk.tar.gz", b"<html>not found</html>\n")
    with pytest.raises(PolicyError, match="cannot unpack"):
        extract_ut1_archive(junk, tmp_path / "b")
    with pytest.raises(PolicyError, match="more than 0 MiB"):
        extract_ut1_archive(write(tmp_path / "big.tar.gz", good), tmp_path / "c", max_bytes=1000)
    with pytest.raises(PolicyError, match="no such file"):
        extract_ut1_archive(tmp_path / "absent.tar.gz", tmp_path / "d")
