"""Which names a school's traffic asks about: the lookup mixes of the policy benchmarks.

Real traffic is concentrated: a few popular names get most queries, and most queries are
for names no list holds. The realistic mix draws from two Zipf(1) popularity rankings
(query popularity in DNS traces follows Zipf's law with an exponent near 1: Jung et al.,
"DNS performance and the effectiveness of caching", IEEE/ACM ToN 2002): unlisted names —
the top ranks are the CDN, search, office and school-platform names a school's network is
busy with, the tail synthetic unlisted names — and listed names from the real lists, half
of them asked as a subdomain (www., cdn., m., ...) so the lookup walks suffixes as it does
for real traffic. The uniform mix draws half its names from every listed name (real and
synthetic) and half from unlisted synthetic names, all equally likely: no locality at all.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate

from mixes import TINY
from policyscale import SYNTHETIC_CATEGORY, PolicyScale, suffixes, synthetic_names_file

ZIPF_EXPONENT = 1.0
HIT_SHARE = 0.05  # of the realistic mix's queries; the measured hit rate is reported
UNIVERSE = 2_000 if TINY else 20_000  # distinct names per ranking
QUERIES = 5_000 if TINY else 1_000_000
UNLISTED_SEED = 2  # seed for unlisted names (seed 1 made the listed synthetic names)
UNLISTED_POOL = 20_000 if TINY else 1_000_000
SUBDOMAIN_LABELS = ("www", "cdn", "m", "static", "api", "img", "login", "mail")

# What a school network is busiest with (Flanders and the Netherlands): search and its
# fonts and scripts, office suites, the learning platforms, CDNs, OS updates, news.
POPULAR = (
    "www.google.com", "www.google.be", "www.google.nl", "fonts.googleapis.com", "fonts.gstatic.com",
    "www.gstatic.com", "ssl.gstatic.com", "apis.google.com", "accounts.google.com", "docs.google.com",
    "drive.google.com", "classroom.google.com", "mail.google.com", "play.google.com", "lh3.googleusercontent.com",
    "update.googleapis.com", "safebrowsing.googleapis.com", "clients4.google.com", "www.youtube.com", "i.ytimg.com",
    "login.microsoftonline.com", "outlook.office365.com", "outlook.office.com", "teams.microsoft.com",
    "www.office.com", "graph.microsoft.com", "onedrive.live.com", "login.live.com", "www.bing.com",
    "ctldl.windowsupdate.com", "settings-win.data.microsoft.com", "www.msftconnecttest.com",
    "ajax.googleapis.com", "cdnjs.cloudflare.com", "cdn.jsdelivr.net", "unpkg.com", "www.wikipedia.org",
    "nl.wikipedia.org", "fr.wikipedia.org", "upload.wikimedia.org", "www.smartschool.be",
    "static.smartschool.be", "sint-jozef.smartschool.be", "www.bingel.be", "www.diddit.be",
    "www.scoodle.be", "kahoot.it", "play.kahoot.it", "assets-cdn.kahoot.it", "quizlet.com",
    "www.duolingo.com", "www.khanacademy.org", "scratch.mit.edu", "www.canva.com", "static.canva.com",
    "www.apple.com", "gateway.icloud.com", "gsp-ssl.ls.apple.com", "mesu.apple.com", "www.vrt.be",
    "www.nos.nl", "www.hln.be", "www.standaard.be", "www.bol.com", "www.wiskunde-online.nl",
    "www.schooltv.nl", "www.ketnet.be", "www.knack.be", "www.wikiwijs.nl", "www.magister.net",
    "school.magister.net", "www.somtoday.nl", "www.github.com", "github.githubassets.com",
    "www.mozilla.org", "detectportal.firefox.com", "ocsp.digicert.com", "ocsp.pki.goog",
    "r3.o.lencr.org", "time.cloudflare.com",
)


@dataclass(frozen=True)
class LookupMix:
    name: str
    description: str
    names: list[bytes]


def _zipf_draws(universe: Sequence[bytes], count: int, rng: random.Random) -> list[bytes]:
    weights = list(accumulate(1.0 / (rank + 1) ** ZIPF_EXPONENT for rank in range(len(universe))))
    return rng.choices(universe, cum_weights=weights, k=count)


def unlisted_names(listed: set[bytes], count: int) -> list[bytes]:
    """Synthetic names (another seed) that no list holds, nor any parent domain of."""
    path = synthetic_names_file(max(UNLISTED_POOL, count), UNLISTED_SEED)
    found: list[bytes] = []
    with open(path, "rb") as names:
        for line in names:
            name = line.rstrip(b"\n")
            if name and b".." not in name and not any(suffix in listed for suffix in suffixes(name)):
                found.append(name)
                if len(found) == count:
                    break
    return found


@dataclass(frozen=True)
class Rankings:
    """The realistic mix's two popularity rankings, most popular first."""

    unlisted: list[bytes]
    listed: list[bytes]


def realistic_rankings(scale: PolicyScale, listed: set[bytes], seed: int = 11) -> Rankings:
    rng = random.Random(seed)
    popular = [name.encode() for name in POPULAR]
    unlisted = popular + unlisted_names(listed, UNIVERSE - len(popular))
    real = sorted(_real_names(scale))
    listed_ranking = []
    for name in rng.sample(real, min(UNIVERSE, len(real))):
        if rng.random() < 0.5:
            name = rng.choice(SUBDOMAIN_LABELS).encode() + b"." + name
        listed_ranking.append(name)
    return Rankings(unlisted, listed_ranking)


def _real_names(scale: PolicyScale) -> set[bytes]:
    names: set[bytes] = set()
    for category in scale.store().categories():
        if category.alias_of is None and category.name != SYNTHETIC_CATEGORY:
            for chunk in category.name_chunks():
                names.update(chunk.split())
    return names


def realistic_queries(rankings: Rankings, count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    hits = round(count * HIT_SHARE)
    queries = _zipf_draws(rankings.unlisted, count - hits, rng) + _zipf_draws(rankings.listed, hits, rng)
    rng.shuffle(queries)
    return queries


def lookup_mixes(rankings: Rankings, listed: set[bytes], seed: int = 7) -> dict[str, LookupMix]:
    rng = random.Random(seed)
    everything = list(listed)
    uniform = rng.sample(everything, QUERIES // 2) + unlisted_names(listed, QUERIES - QUERIES // 2)
    rng.shuffle(uniform)
    return {
        "realistic": LookupMix(
            "realistic",
            f"{1 - HIT_SHARE:.0%} of queries Zipf({ZIPF_EXPONENT:g}) over {len(rankings.unlisted):,} names no "
            f"blocklist entry targets ({len(POPULAR)} popular school/CDN/search names first, synthetic ones after; "
            f"UT1 also catalogues popular sites, so some of these are table hits), {HIT_SHARE:.0%} Zipf("
            f"{ZIPF_EXPONENT:g}) over {len(rankings.listed):,} names of the real lists (half as a subdomain)",
            realistic_queries(rankings, QUERIES, seed)),
        "uniform": LookupMix(
            "uniform", f"half uniform over all {len(everything):,} listed names, half uniform over unlisted "
            "synthetic names: no locality", uniform),
        "hits": LookupMix("hits", "the realistic mix's listed ranking alone (Zipf)",
                          _zipf_draws(rankings.listed, QUERIES, rng)),
        "misses": LookupMix("misses", "the realistic mix's unlisted ranking alone (Zipf)",
                            _zipf_draws(rankings.unlisted, QUERIES, rng)),
    }


def count_listed_python(names: list[bytes], listed: set[bytes]) -> int:
    """The pure-Python baseline: the natural loop over each name's suffixes in a set."""
    count = 0
    for name in names:
        while True:
            if name in listed:
                count += 1
                break
            dot = name.find(b".")
            if dot < 0:
                break
            name = name[dot + 1:]
    return count
