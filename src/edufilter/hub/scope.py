"""The group's one scope rule, for the API's requests and the console's pages alike."""

from __future__ import annotations

from edufilter.api.problems import Problem
from edufilter.api.tokens import Token


def refuse_other_site(token: Token, named: str | None) -> None:
    """403 when a site's token names another site."""
    if token.site is not None and named is not None and named != token.site:
        raise Problem(403, "forbidden", f"a token of site {token.site} may not act on site {named}")
