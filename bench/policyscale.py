"""The policy at scale, built once per benchmark session: the category lists of
bench/listsource.py (updated from upstream, the real ones in ../shared/blocklists, or
generated) imported through the ListStore, synthetic names to reach 5 million distinct
names, a policy that blocks every category, and the compiled images.

The synthetic (top-up and unlisted) names come from ../shared/blocklists/synth.py when it is
there, as they always have, so figures stay comparable with earlier runs; else from
bench/listgen.py. listgen's names have UT1's lengths, synth.py's are longer: with listgen's
the categories image is a fifth smaller and the compile-memory ratio (peak / image size) rises
from 1.33 to 1.59.

Generated names are cached under bench/results/raw/cache (ignored by git; elsewhere with
EDUFILTER_BENCH_CACHE), keyed by count and seed; the imports run again every session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from listgen import generate_names
from listsource import SHARED, UPDATED, ListSource, choose_list_source
from mixes import TINY

from edufilter.classify.engine import Engine
from edufilter.policy.compile import compile_categories
from edufilter.policy.liststore import ListStore, register_categories
from edufilter.policy.model import (
    Action,
    Category,
    ClientMatch,
    Group,
    Policy,
    Rule,
    Settings,
    TargetKind,
)
from edufilter.policy.store import PolicyStore
from edufilter.state import StateDir

BENCH = Path(__file__).resolve().parent
BLOCKLISTS = BENCH.parent.parent / "shared" / "blocklists"
SHARED_SYNTH = BLOCKLISTS / "synth.py"
CACHE = Path(os.environ.get("EDUFILTER_BENCH_CACHE") or BENCH / "results" / "raw" / "cache")
SYNTH_SEED = 1
# Enough for any real-name overlap: the output for a smaller count is a prefix of this.
SYNTH_COUNT = 50_000 if TINY else 5_000_000
TARGET_NAMES = 60_000 if TINY else 5_000_000
GENERATED_SCALE = 0.01 if TINY else 1.0  # of UT1's category sizes, when the lists are generated
# The real lists in other formats (README of ../shared/blocklists), category -> file.
OTHER_LISTS = {
    "sw-adult": "shadowwhisperer-adult.txt",
    "sw-malware": "shadowwhisperer-malware.txt",
    "hagezi-light": "hagezi-light.adblock.txt",
    "stevenblack": "stevenblack.domains.txt",
    "blp-redirect": "blocklistproject-redirect.hosts.txt",
}
TINY_OTHER_LISTS = ("sw-malware",)
SYNTHETIC_CATEGORY = "synthetic"
PUPILS_CIDR = "198.18.16.0/20"


def list_source() -> ListSource:
    """Where this session's category lists come from (bench/listsource.py)."""
    return choose_list_source(CACHE, BLOCKLISTS, GENERATED_SCALE)


def synthetic_names_generator() -> str:
    return str(SHARED_SYNTH) if SHARED_SYNTH.is_file() else "bench/listgen.py"


def synthetic_names_file(count: int = SYNTH_COUNT, seed: int = SYNTH_SEED) -> Path:
    """count synthetic names (synthetic_names_generator's), made once and kept in the cache."""
    shared = SHARED_SYNTH.is_file()
    path = CACHE / f"{'synth' if shared else 'listgen'}-{count}-seed{seed}.txt"
    if not path.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".partial-{os.getpid()}")
        with open(partial, "w", encoding="ascii") as out:
            if shared:
                subprocess.run([sys.executable, SHARED_SYNTH, str(count), "--seed", str(seed)],
                               stdout=out, check=True, timeout=900)
            else:
                out.writelines(name + "\n" for name in generate_names(count, seed))
        partial.rename(path)
    return path


def stored_names(store: ListStore) -> Iterator[bytes]:
    """Every stored name of every category (a name may come once per category)."""
    for category in store.categories():
        if category.alias_of is None:
            for chunk in category.name_chunks():
                yield from chunk.split()


@dataclass
class PolicyScale:
    """A state folder holding the imported lists and the compiled images."""

    state_dir: Path
    real_names: int  # distinct names in the category lists (updated, real or generated)
    synthetic_names: int
    import_seconds: float
    lists: ListSource

    @property
    def categories_image(self) -> Path:
        return StateDir(self.state_dir).categories_image

    def store(self) -> ListStore:
        return ListStore.in_state_dir(self.state_dir)

    def engine(self) -> Engine:
        return Engine.open(self.state_dir)

    def listed_set(self) -> set[bytes]:
        """The pure-Python baseline's table: every listed name in a set."""
        return set(stored_names(self.store()))


def suffixes(name: bytes) -> Iterator[bytes]:
    """The name and each parent domain: a.b.c, b.c, c."""
    while True:
        yield name
        dot = name.find(b".")
        if dot < 0:
            return
        name = name[dot + 1:]


def usable_synthetic(line: bytes, taken: set[bytes], reserved: set[bytes]) -> bool:
    """A few synthetic names need leaving out: those with an empty label (synth.py joins real
    labels, and a leading-dot UT1 line gives ".com", which would list a whole top-level
    domain), those already in the category lists, and those that happen to equal a popular
    real domain or one of its parents (google.com): no real list holds them."""
    name = line.rstrip(b"\n")
    return bool(name) and not name.startswith(b".") and not name.endswith(b".") and b".." not in name \
        and name not in taken and name not in reserved


def build_policy_scale(state_dir: Path, lists: ListSource, popular: Collection[bytes] = ()) -> PolicyScale:
    """Import the category lists, top them up with synthetic names to TARGET_NAMES, compile.

    popular: names real traffic asks for most, which the synthetic names must not list."""
    started = time.monotonic()
    if lists.kind == UPDATED:  # imported and registered by `lists update` already
        shutil.copytree(lists.state_dir, state_dir, symlinks=True)  # a category is a link to its live version
    store = ListStore.in_state_dir(state_dir)
    categories: list[Category] = []
    if lists.ut1_tree is not None and (not TINY or lists.kind != SHARED):
        categories += store.import_ut1(lists.ut1_tree).categories
    if (BLOCKLISTS / "other").is_dir():
        for name, file in OTHER_LISTS.items():
            if not TINY or name in TINY_OTHER_LISTS:
                categories += store.import_file(BLOCKLISTS / "other" / file, name).categories
    real = set(stored_names(store))
    wanted = max(0, TARGET_NAMES - len(real))
    reserved = {suffix for name in popular for suffix in suffixes(name)}
    synthetic = state_dir / "synthetic.txt"
    written = 0
    with open(synthetic_names_file(), "rb") as names, open(synthetic, "wb") as out:
        for line in names:
            if written == wanted:
                break
            if usable_synthetic(line, real, reserved):
                out.write(line)
                written += 1
    categories += store.import_file(synthetic, SYNTHETIC_CATEGORY, "plain").categories
    synthetic.unlink()
    with PolicyStore(StateDir(state_dir).policy_db) as policy_store:
        register_categories(policy_store, categories)
        stored = policy_store.load().categories
        policy_store.replace_all(bench_policy(stored))
    import_seconds = time.monotonic() - started
    compile_categories(state_dir)
    return PolicyScale(state_dir, len(real), written, import_seconds, lists)


def bench_policy(categories: tuple[Category, ...]) -> Policy:
    """One group of pupils, allowed by default, every category blocked."""
    return Policy(
        settings=Settings(default_group="pupils"),
        categories=categories,
        groups=(Group("pupils", title="Pupils", default_action=Action.ALLOW),),
        clients=(ClientMatch("pupils", cidr=PUPILS_CIDR),),
        rules=tuple(Rule("pupils", TargetKind.CATEGORY, category.name, Action.BLOCK)
                    for category in categories if category.alias_of is None),
    )

