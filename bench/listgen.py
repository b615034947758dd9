"""A realistic category list set, generated: what the benchmarks use when neither
`edufilter lists update` nor the real lists in ../shared/blocklists are at hand.

    python bench/listgen.py tree OUT [--seed S] [--scale F]   # UT1 layout: OUT/<category>/domains
    python bench/listgen.py names N [--seed S]                # N unique names, one per line

Names come in groups under one registrable domain (most alone, a few with thousands of
subdomains, as a hosting or redirector domain has), with registrable-label lengths,
public suffixes, subdomain depths and subdomain labels drawn from tables fitted to the
UT1 snapshot of 2026-08-17 (every `domains` file, 345,553 distinct names);
tests/test_bench_listgen.py measures how close it stays. The same seed gives the same
lists.
"""

from __future__ import annotations

import argparse
import bisect
import math
import os
import random
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate, islice
from pathlib import Path

# UT1's categories and their upstream sizes (domains lines; adult from the upstream tarball).
CATEGORY_SIZES = {
    "adult": 4_600_000, "redirector": 132_323, "jobsearch": 60_740, "shopping": 36_968, "games": 33_741,
    "gambling": 32_247, "cryptojacking": 11_491, "bank": 6_646, "dating": 6_504, "vpn": 6_039, "press": 4_644,
    "shortener": 4_558, "publicite": 4_344, "download": 4_020, "audio-video": 3_710, "doh": 3_015,
    "sports": 2_362, "dynamic-dns": 2_077, "warez": 1_546, "blog": 1_497, "bitcoin": 1_419, "fakenews": 1_118,
    "filehosting": 941, "social_networks": 715, "manga": 652, "celebrity": 635, "drogue": 603, "radio": 567,
    "stalkerware": 525, "financial": 472, "ddos": 421, "webmail": 404, "agressif": 360, "hacking": 274,
    "chat": 268, "forums": 205,
}

# Fitted tables: value -> how often UT1 has it.
# Names per registrable domain (exact up to 10; beyond, log-spaced bins drawn log-uniformly).
GROUP_SIZES = {1: 312_805, 2: 1906, 3: 488, 4: 205, 5: 123, 6: 104, 7: 60, 8: 52, 9: 44, 10: 28}
GROUP_SIZE_BINS = {(11, 30): 173, (31, 100): 84, (101, 1000): 19, (1001, 7000): 2}
# Length of the label left of the public suffix.
REGISTRABLE_LABEL_LENGTHS = {
    1: 43, 2: 688, 3: 3983, 4: 7886, 5: 10137, 6: 15074, 7: 20485, 8: 27451, 9: 29085, 10: 31856, 11: 28496,
    12: 27579, 13: 22851, 14: 20613, 15: 16347, 16: 13238, 17: 10239, 18: 8349, 19: 5880, 20: 4298, 21: 3088,
    22: 2218, 23: 1508, 24: 1041, 25: 701, 26: 493, 27: 681, 28: 245, 29: 193, 30: 145, 31: 73, 32: 77,
    33: 52, 34: 39, 35: 35, 36: 25, 37: 29, 38: 17, 39: 10, 40: 28, 42: 21, 46: 25, 52: 8, 59: 191,
}
# Public suffixes by names under them; the rest of UT1's 1,529 suffixes share OTHER_SUFFIX_WEIGHT.
SUFFIXES = {
    "com": 127_941, "tk": 37_076, "info": 32_777, "net": 13_795, "org": 8876, "fr": 8710, "top": 8526,
    "cc": 7654, "ru": 5600, "co.uk": 4853, "de": 4294, "ninja": 4001, "xyz": 3994, "shop": 3033, "cn": 2540,
    "ml": 1911, "bid": 1898, "ga": 1865, "cf": 1784, "online": 1526, "nl": 1502, "gq": 1465, "biz": 1407,
    "site": 1321, "us": 1285, "win": 1282, "io": 1281, "pl": 1275, "pro": 1221, "me": 1106, "sbs": 1082,
    "eu": 1077, "ca": 978, "xin": 963, "in": 956, "club": 951, "click": 937, "it": 899, "co": 851,
    "live": 817, "com.au": 802, "buzz": 780, "com.br": 769, "rest": 717, "ch": 706, "webflow.io": 651,
    "cz": 639, "be": 625, "dk": 619, "fun": 609, "tv": 602, "se": 577, "icu": 545, "digital": 526,
    "life": 519, "es": 503, "space": 486, "cfd": 468, "jp": 452, "pw": 438,
}
OTHER_SUFFIX_WEIGHT = 345_553 - sum(SUFFIXES.values())
OTHER_SUFFIXES = (
    "at", "au", "br", "hu", "ro", "gr", "pt", "fi", "no", "sk", "ua", "ir", "tw", "kr", "hk", "mx", "ar", "cl",
    "vn", "id", "co.jp", "co.in", "com.tr", "com.ar", "com.mx", "org.uk", "net.au", "app", "dev", "link",
    "store", "vip", "today", "world", "website", "casino", "bet", "games", "news", "blog", "tech", "one",
    "ly", "to", "ws", "su", "lt", "lv", "ee", "si", "hr", "rs", "bg", "blogspot.com", "github.io",
    "netlify.app", "herokuapp.com", "wixsite.com", "weebly.com", "000webhostapp.com",
)
# Subdomain labels under a registrable domain, for a name alone in its group and for a name
# in a larger group (0: the registrable domain itself is listed).
SINGLE_DEPTHS = {0: 298_491, 1: 13_833, 2: 397, 3: 53, 4: 25, 5: 5}
GROUP_DEPTHS = {0: 786, 1: 26_929, 2: 898, 3: 4102, 4: 15, 5: 7, 6: 4, 7: 5, 8: 2}
SUBDOMAIN_LABEL_LENGTHS = {
    1: 427, 2: 1303, 3: 3754, 4: 4260, 5: 8906, 6: 6617, 7: 5692, 8: 3358, 9: 3721, 10: 2617, 11: 2101,
    12: 1971, 13: 1779, 14: 1992, 15: 1603, 16: 1002, 17: 1432, 18: 836, 19: 381, 20: 336, 21: 680, 22: 286,
    23: 225, 25: 178, 26: 111, 29: 79, 32: 142, 37: 86,
}
# Frequent subdomain labels (about a third of UT1's subdomain labels are one of these).
COMMON_SUBDOMAIN_LABELS = (
    "nodes", "proxy", "dns", "ads", "go", "blog", "translate", "surf", "unblock", "ad", "doh", "games",
    "mask", "auto", "fr", "mail", "www", "m", "cdn", "api", "app", "shop", "store", "en", "de", "home",
    "play", "news", "login", "secure", "static", "img", "free", "web", "my",
)
COMMON_SUBDOMAIN_SHARE = 0.33
NUMBERED_SUBDOMAIN_SHARE = 0.15  # blade12, node7: a label and a counter
DIGIT_SHARE = 0.14  # of registrable labels holding a digit
HYPHEN_SHARE = 0.16  # of registrable labels holding a hyphen
# Syllables labels are cut from: pronounceable, as most listed names are.
ONSETS = ("", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
          "ch", "sh", "st", "tr", "pl", "br", "gr", "cr", "th", "sp", "x", "y", "qu")
NUCLEI = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ou", "ea", "y", "ie", "oo")
CODAS = ("", "", "", "n", "r", "s", "t", "x", "l", "m", "ck", "ng", "rd", "st")
TEXT_POOL_CHARS = 1 << 20
BATCH = 4096
MAX_NAME_LENGTH = 253


class _Table:
    """Draws values with the given weights (a cumulative table and a bisection: fast enough
    for millions of draws without numpy)."""

    def __init__(self, weights: dict) -> None:
        self.values = list(weights)
        self.cumulative = list(accumulate(weights.values()))
        self.total = self.cumulative[-1]

    def draw(self, rng: random.Random):
        return self.values[bisect.bisect_right(self.cumulative, rng.random() * self.total)]

    def draw_many(self, rng: random.Random, count: int) -> list:
        return rng.choices(self.values, cum_weights=self.cumulative, k=count)


_GROUP_SIZES = _Table({**GROUP_SIZES, **GROUP_SIZE_BINS})
_REGISTRABLE_LENGTHS = _Table(REGISTRABLE_LABEL_LENGTHS)
_SUFFIXES = _Table({**SUFFIXES, None: OTHER_SUFFIX_WEIGHT})
_SINGLE_DEPTHS = _Table(SINGLE_DEPTHS)
_GROUP_DEPTHS = _Table(GROUP_DEPTHS)
_SUBDOMAIN_LENGTHS = _Table(SUBDOMAIN_LABEL_LENGTHS)


class _Labels:
    """Label text cut from one long pronounceable string made from the seed."""

    def __init__(self, rng: random.Random) -> None:
        syllables = TEXT_POOL_CHARS // 2  # each at least one character: the text is long enough
        text = "".join(map("".join, zip(rng.choices(ONSETS, k=syllables), rng.choices(NUCLEI, k=syllables),
                                        rng.choices(CODAS, k=syllables))))
        self.text = text[:TEXT_POOL_CHARS]
        self.rng = rng
        self.random = rng.random

    def cut(self, length: int) -> str:
        start = int(self.random() * (TEXT_POOL_CHARS - length))
        return self.text[start:start + length]

    def registrable(self, length: int) -> str:
        rng = self.rng
        label = self.cut(length)
        if length < 4:
            return label
        if self.random() < DIGIT_SHARE:
            digits = str(rng.randrange(10 ** rng.randint(1, min(4, length - 2))))
            label = label[:length - len(digits)] + digits
        if length >= 5 and self.random() < HYPHEN_SHARE:
            at = rng.randrange(2, length - 2)
            label = label[:at] + "-" + label[at + 1:]
        return label

    def subdomain(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < COMMON_SUBDOMAIN_SHARE:
            return rng.choice(COMMON_SUBDOMAIN_LABELS)
        if roll < COMMON_SUBDOMAIN_SHARE + NUMBERED_SUBDOMAIN_SHARE:
            return self.cut(rng.randint(3, 6)) + str(rng.randrange(1, 100))
        return self.cut(_SUBDOMAIN_LENGTHS.draw(rng))


def _group_size(rng: random.Random, drawn: int | tuple[int, int], at_most: int) -> int:
    if isinstance(drawn, tuple):
        low, high = drawn
        drawn = int(math.exp(rng.uniform(math.log(low), math.log(high + 1))))
    return min(drawn, at_most)


def _group(labels: _Labels, registrable: str, size: int) -> list[str]:
    """size (2 or more) distinct names under registrable, sometimes itself among them."""
    rng = labels.rng
    names: set[str] = set()
    # A large group shares a few second-level labels (blade1..blade24.nodes.example.com).
    branches = [labels.subdomain() for _ in range(max(1, size // 50))]
    attempts = 0
    while len(names) < size and attempts < size * 4:
        attempts += 1
        depth = _GROUP_DEPTHS.draw(rng)
        if depth == 0:
            names.add(registrable)
        elif depth == 1:
            names.add(f"{labels.subdomain()}.{registrable}")
        else:
            chain = [labels.subdomain() for _ in range(depth - 2)] + [labels.subdomain(), rng.choice(branches)]
            names.add(".".join(chain + [registrable]))
    return [name for name in names if len(name) <= MAX_NAME_LENGTH]


def generate_names(count: int, seed: int | str = 1) -> Iterator[str]:
    """count distinct names, in groups under distinct registrable domains; a smaller count
    gives a prefix of a larger one's names (but for its last group)."""
    rng = random.Random(f"listgen:{seed}")
    labels = _Labels(rng)
    registrables: set[str] = set()
    made = 0
    while made < count:
        # Drawn a batch at a time: random.choices with k is several times faster than k calls.
        lengths = _REGISTRABLE_LENGTHS.draw_many(rng, BATCH)
        suffixes = _SUFFIXES.draw_many(rng, BATCH)
        sizes = _GROUP_SIZES.draw_many(rng, BATCH)
        depths = _SINGLE_DEPTHS.draw_many(rng, BATCH)
        for length, suffix, size, depth in zip(lengths, suffixes, sizes, depths):
            if made == count:
                break
            registrable = f"{labels.registrable(length)}.{suffix or rng.choice(OTHER_SUFFIXES)}"
            if registrable in registrables:
                continue
            registrables.add(registrable)
            if size == 1:
                made += 1
                yield ".".join([labels.subdomain() for _ in range(depth)] + [registrable]) if depth else registrable
                continue
            for name in _group(labels, registrable, _group_size(rng, size, count - made))[:count - made]:
                made += 1
                yield name


@dataclass(frozen=True)
class GeneratedTree:
    root: Path
    seed: int
    scale: float
    sizes: dict[str, int]  # category -> names written


def category_sizes(scale: float) -> dict[str, int]:
    return {category: max(1, round(size * scale)) for category, size in CATEGORY_SIZES.items()}


def write_ut1_tree(root: Path, seed: int = 1, scale: float = 1.0) -> GeneratedTree:
    """Every category of CATEGORY_SIZES (times scale) as root/<category>/domains, written
    beside root and renamed into place, so a cut-short run leaves no partial tree. The
    categories take turns from one stream of names: one pool of label text for all."""
    sizes = category_sizes(scale)
    building = root.with_name(f"{root.name}.partial-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    names = generate_names(sum(sizes.values()), seed)
    for category, size in sizes.items():
        (building / category).mkdir(parents=True)
        with open(building / category / "domains", "w", encoding="ascii") as out:
            out.writelines(name + "\n" for name in islice(names, size))
    building.rename(root)
    return GeneratedTree(root, seed, scale, sizes)


# ---- profile: the distributions the fidelity test compares -----------------------------------

@dataclass(frozen=True)
class Profile:
    names: int
    name_lengths: Counter[int]
    label_counts: Counter[int]
    suffixes: Counter[str]
    group_sizes: Counter[int]  # per name: how many names share its registrable domain
    registrable_label_lengths: Counter[int]


def profile(names: Iterable[str]) -> Profile:
    """The distributions of a list (with the Public Suffix List, as the project reads it)."""
    from publicsuffixlist import PublicSuffixList

    suffix_list = PublicSuffixList()
    groups: Counter[str] = Counter()
    name_lengths: Counter[int] = Counter()
    label_counts: Counter[int] = Counter()
    suffixes: Counter[str] = Counter()
    count = 0
    for name in names:
        count += 1
        name_lengths[len(name)] += 1
        label_counts[name.count(".") + 1] += 1
        suffix = suffix_list.publicsuffix(name) or name.rpartition(".")[2]
        suffixes[suffix] += 1
        groups[suffix_list.privatesuffix(name) or name] += 1
    group_sizes: Counter[int] = Counter()
    for size in groups.values():
        group_sizes[size] += size
    registrable_lengths = Counter(len(registrable.partition(".")[0]) for registrable in groups)
    return Profile(count, name_lengths, label_counts, suffixes, group_sizes, registrable_lengths)


def ks_statistic(first: Counter[int], second: Counter[int]) -> float:
    """Two-sample Kolmogorov–Smirnov statistic of two histograms: the largest gap between
    their cumulative shares."""
    first_total, second_total = sum(first.values()), sum(second.values())
    gap = first_share = second_share = 0.0
    for value in sorted(set(first) | set(second)):
        first_share += first[value] / first_total
        second_share += second[value] / second_total
        gap = max(gap, abs(first_share - second_share))
    return gap


def total_variation(first: Counter, second: Counter, keep: int = 30) -> float:
    """Half the summed share differences over first's `keep` most common values and the rest
    pooled: 0 is the same mix, 1 disjoint."""
    kept = [value for value, _ in first.most_common(keep)]
    first_total, second_total = sum(first.values()), sum(second.values())
    distance = sum(abs(first[value] / first_total - second[value] / second_total) for value in kept)
    first_rest = 1 - sum(first[value] for value in kept) / first_total
    second_rest = 1 - sum(second[value] for value in kept) / second_total
    return (distance + abs(first_rest - second_rest)) / 2


def shared_share(group_sizes: Counter[int]) -> float:
    """Share of names that have another name under the same registrable domain."""
    return 1 - group_sizes[1] / sum(group_sizes.values())


def read_ut1_names(root: Path) -> set[str]:
    """The distinct host names of a UT1 tree's `domains` files (addresses and junk left out)."""
    names: set[str] = set()
    for folder in sorted(root.iterdir()):
        if folder.is_symlink() or not (folder / "domains").is_file():
            continue
        with open(folder / "domains", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                name = line.strip().lower().rstrip(".")
                if "." in name and not name.startswith(".") and not name.replace(".", "").isdigit():
                    names.add(name)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    actions = parser.add_subparsers(dest="action", required=True)
    tree = actions.add_parser("tree", help="a UT1-layout folder of every category")
    tree.add_argument("out", type=Path)
    tree.add_argument("--scale", type=float, default=1.0, help="times the upstream category sizes")
    names = actions.add_parser("names", help="N unique names on standard output")
    names.add_argument("count", type=int)
    for action in (tree, names):
        action.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.action == "tree":
        made = write_ut1_tree(args.out, args.seed, args.scale)
        print(f"{sum(made.sizes.values()):,} names in {len(made.sizes)} categories under {made.root}")
    else:
        sys.stdout.writelines(name + "\n" for name in generate_names(args.count, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
