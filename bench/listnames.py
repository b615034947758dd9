"""Synthetic admin-list names for the change-cost benchmark: deterministic for a count and
seed, every name distinct, with a mix of labels, depths and top-level domains like a blocklist.
Faster than ../shared/blocklists/synth.py (which models the UT1 lists closely), because what
this benchmark needs is many distinct valid names, not their exact distribution."""

from __future__ import annotations

import random
from collections.abc import Iterator

SYLLABLES = ("ka", "lo", "mi", "ne", "ra", "to", "shi", "vo", "ber", "dan", "tec", "ply", "net", "web", "cast",
             "zo", "qua", "fin", "bet", "pix", "ad", "trk", "cdn", "img", "go", "my", "best", "top")
SUBDOMAINS = ("www", "m", "cdn", "ads", "shop", "mail", "static", "api", "img", "login")
TLDS = ("com",) * 9 + ("net",) * 3 + ("org",) * 2 + ("de", "fr", "nl", "be", "ru", "info", "io", "co.uk", "xyz",
                                                     "online", "pl", "it", "es", "br", "cn", "jp")


def synthetic_names(count: int, seed: int = 1) -> Iterator[str]:
    """`count` distinct names: the running number in base 36, after a hyphen, keeps each apart."""
    chooser = random.Random(seed)
    for number in range(count):
        word = "".join(chooser.choices(SYLLABLES, k=chooser.randint(1, 3)))
        name = f"{word}-{_base36(number)}.{chooser.choice(TLDS)}"
        depth = chooser.random()
        if depth < 0.3:
            name = f"{chooser.choice(SUBDOMAINS)}.{name}"
        elif depth < 0.4:
            name = f"{chooser.choice(SUBDOMAINS)}.{chooser.choice(SYLLABLES)}.{name}"
        yield name


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
        if not number:
            return text
