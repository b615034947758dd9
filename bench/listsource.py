"""Where the policy benchmarks get their category lists, as a school would, first found first:

1. updated — `edufilter lists update` (policy/update.py) into a cache state folder, only when
   EDUFILTER_BENCH_LISTS_URL names the folder to fetch from (the UT1 site is
   https://dsi.ut-capitole.fr/blacklists/download/): a benchmark never reaches out unasked,
   and nothing but that URL is ever fetched (its host name looked up), with a short timeout
   so an unreachable one fails fast;
2. shared — the real lists in ../shared/blocklists, when that folder is there;
3. generated — bench/listgen.py's category set, made once and kept in the cache.

The results (bench/results/latest.json, key "lists") say which one was used, and why an
asked-for update did not happen.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from listgen import write_ut1_tree

LISTS_URL_VARIABLE = "EDUFILTER_BENCH_LISTS_URL"
UPDATE_TIMEOUT_SECONDS = 10.0
GENERATED_SEED = 3  # policyscale.py draws its top-up names with seed 1 and the unlisted ones with 2
UPDATED, SHARED, GENERATED = "updated", "shared", "generated"


@dataclass(frozen=True)
class ListSource:
    kind: str  # UPDATED, SHARED or GENERATED
    detail: str  # the URL, the folder, or the generator's seed and scale
    ut1_tree: Path | None = None  # a UT1 tree to import (shared, generated)
    state_dir: Path | None = None  # a state folder holding the updated lists and their policy
    update_failure: str | None = None  # why the asked-for update did not happen

    def as_report(self) -> dict[str, str | None]:
        """What the results carry: the source, its detail, and a failed update's reason."""
        report = asdict(self)
        return {key: (str(value) if isinstance(value, Path) else value) for key, value in report.items()}


def choose_list_source(cache: Path, shared: Path, generated_scale: float,
                       environ: Mapping[str, str] = os.environ) -> ListSource:
    """The first usable source of the three; the generated set is written into cache when needed."""
    update_failure = None
    url = environ.get(LISTS_URL_VARIABLE, "").strip()
    if url:
        state_dir = cache / "updated-state"
        update_failure = update_into(state_dir, url)
        if update_failure is None:
            return ListSource(UPDATED, url, state_dir=state_dir)
    if (shared / "ut1").is_dir():
        return ListSource(SHARED, str(shared), ut1_tree=shared / "ut1", update_failure=update_failure)
    tree = cache / f"generated-seed{GENERATED_SEED}-scale{generated_scale:g}"
    if not tree.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        write_ut1_tree(tree, GENERATED_SEED, generated_scale)
    return ListSource(GENERATED, f"bench/listgen.py, seed {GENERATED_SEED}, scale {generated_scale:g} of UT1's sizes",
                      ut1_tree=tree, update_failure=update_failure)


def update_into(state_dir: Path, url: str) -> str | None:
    """Run `edufilter lists update` from url into state_dir; None when it holds UT1 lists
    afterwards, else why not. An unchanged archive costs one small request (its MD5)."""
    from edufilter.errors import EdufilterError
    from edufilter.policy.liststore import UT1_SOURCE, ListStore
    from edufilter.policy.update import update_lists

    try:
        update_lists(state_dir, base_url=url, timeout=UPDATE_TIMEOUT_SECONDS)
    except EdufilterError as error:
        return str(error)
    if not any(category.source == UT1_SOURCE for category in ListStore.in_state_dir(state_dir).categories()):
        return f"{url}: the update imported no UT1 category"
    return None
