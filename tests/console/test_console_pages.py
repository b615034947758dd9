"""What each console page shows and does, per role, in each language."""

from __future__ import annotations

import html
import re
import sqlite3

import pytest
from console_client import ConsoleClient, School, console, school  # noqa: F401 (fixtures)

from edufilter.api.tokens import Role
from edufilter.console.i18n import _TEXTS
from edufilter.console.invoke import OPERATIONS_BY_ID
from edufilter.policy.store import PolicyStore


def nav_links(text: str) -> list[str]:
    menu = re.search(r'<nav aria-label="[^"]+">(.*?)</nav>', text, re.S)
    return re.findall(r'<a href="([^"]+)"', menu[1]) if menu else []


def change_forms(text: str) -> list[str]:
    return re.findall(r'<form method="post" action="([^"]+)" class="change', text)


# Each page and the API operation it needs; the menu follows the API's role table.
PAGES = {"/console/overview": "status", "/console/overrides": "create_override",
         "/console/reviews": "list_review_requests", "/console/policy": "list_groups",
         "/console/uploads": "create_upload", "/console/check": "check", "/console/audit": "list_audit", "/console/tokens": "list_tokens"}


@pytest.mark.parametrize(("role", "never"), [
    ("coordinator", []),
    ("editor", ["/console/tokens"]),
    ("viewer", ["/console/overrides", "/console/reviews", "/console/uploads", "/console/tokens"]),
    ("ms-peeters", ["/console/overview", "/console/policy", "/console/uploads", "/console/check", "/console/audit",
                    "/console/tokens"]),
])
def test_each_role_sees_only_the_pages_its_token_may_use(console: ConsoleClient, school: School, role: str,
                                                         never: list[str]) -> None:
    token_role = Role(school.roles[role])
    menu = [path for path, operation in PAGES.items() if token_role in OPERATIONS_BY_ID[operation].roles]
    assert not set(never) & set(menu)
    start = console.sign_in(school.secrets[role])
    assert nav_links(start.text) == menu
    for path in PAGES:
        answer = console.get(path)
        if path in menu:
            assert answer.status == 200 and answer.url.endswith(path), path
        elif path == "/console/overview":  # a teacher's start page is the teacher page
            assert answer.url.endswith("/console/overrides")
        else:
            assert answer.status == 403 and "Your token may not use this page." in answer.text, path


def test_a_viewer_sees_no_change_form_anywhere(console: ConsoleClient, school: School) -> None:
    console.sign_in(school.secrets["viewer"])
    for path in ("/console/overview", "/console/check", "/console/audit"):
        assert change_forms(console.get(path).text) == []


def test_a_teacher_opens_a_site_for_a_group_sees_it_and_ends_it(console: ConsoleClient, school: School) -> None:
    page = console.sign_in(school.secrets["ms-peeters"])
    group_choice = page.text.split('id="group"')[1].split("</select>")[0]
    assert re.findall(r'<option value="([^"]+)"', group_choice) == ["class-5a"]
    assert 'max="45"' in page.text and "At most 45 minutes." in page.text
    opened = console.post("/console/overrides", {"csrf": page.hidden("csrf"), "group": "class-5a",
                                                 "site": "YouTube.com", "minutes": "45", "reason": "lesson"})
    assert opened.url.endswith("/console/overrides")
    assert re.search(r"youtube\.com is open for class-5a until \d{4}-\d\d-\d\d \d\d:\d\d\.", opened.text)
    assert "<td>youtube.com</td><td>class-5a</td><td>allow</td>" in opened.text and "<td>active</td>" in opened.text
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        [override] = store.load().overrides
        assert (override.expires_at - override.starts_at).total_seconds() == 45 * 60
    with sqlite3.connect(school.state_dir / "policy.sqlite") as db:  # audited as the API would audit it
        assert db.execute("SELECT token, role, method, path, kind FROM audit_log ORDER BY id DESC LIMIT 1").fetchone() \
            == ("ms-peeters", "teacher", "POST", "/api/v1/overrides", "override")
    end = re.search(r'action="(/console/overrides/\d+/end)"', opened.text)[1]  # type: ignore[index]
    ended = console.post(end, {"csrf": opened.hidden("csrf"), "etag": opened.hidden("etag")})
    assert "The override has ended." in ended.text and "None yet." in ended.text
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        assert store.load().overrides == ()


def test_the_teacher_page_keeps_the_tokens_limits(console: ConsoleClient, school: School) -> None:
    csrf = console.sign_in(school.secrets["ms-peeters"]).hidden("csrf")
    too_long = console.post("/console/overrides", {"csrf": csrf, "group": "class-5a", "site": "youtube.com",
                                                   "minutes": "46"})
    assert too_long.status == 422 and "more than this token&#39;s maximum of 45 minutes" in too_long.text
    assert 'value="youtube.com"' in too_long.text  # the form keeps what was typed
    other_group = console.post("/console/overrides", {"csrf": csrf, "group": "class-6b", "site": "youtube.com",
                                                      "minutes": "10"})
    assert other_group.status == 403 and "may not override for group" in other_group.text
    bad_site = console.post("/console/overrides", {"csrf": csrf, "group": "class-5a", "site": "not a name!",
                                                   "minutes": "10"})
    assert bad_site.status == 422 and 'role="alert"' in bad_site.text
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        assert store.load().overrides == ()


def test_numbers_in_forms_and_paths_that_are_not_numbers_are_refused_by_name(console: ConsoleClient,
                                                                            school: School) -> None:
    csrf = console.sign_in(school.secrets["coordinator"]).hidden("csrf")
    for path in ("/console/overrides/%C2%B2/end", "/console/overrides/0/end", "/console/overrides/x/end"):
        assert console.post(path, {"csrf": csrf, "etag": "*"}).status == 404, path
    superscript = console.post("/console/overrides", {"csrf": csrf, "group": "class-5a", "site": "a.example",
                                                      "minutes": "\u00b2"})
    assert superscript.status == 422 and "minutes" in superscript.text
    vlan = console.post("/console/check", {"csrf": csrf, "target": "a.example", "address": "198.18.5.7",
                                           "vlan": "\u0663"})  # an Arabic-Indic three
    assert vlan.status == 422 and "client.vlan" in vlan.text
    assert console.get("/console/audit?cursor=%C2%B2").status == 200


def test_a_teacher_cannot_end_an_override_of_another_group(console: ConsoleClient, school: School) -> None:
    admin = ConsoleClient(school.app())  # another person, another process
    try:
        page = admin.sign_in(school.secrets["coordinator"])
        admin.post("/console/overrides", {"csrf": page.hidden("csrf"), "group": "class-6b", "site": "maps.example",
                                          "minutes": "30"})
    finally:
        admin.close()
    csrf = console.sign_in(school.secrets["ms-peeters"]).hidden("csrf")
    assert "maps.example" not in console.get("/console/overrides").text  # only the overrides one started
    refused = console.post("/console/overrides/1/end", {"csrf": csrf, "etag": "*"})
    assert refused.status == 403
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        assert [override.name for override in store.load().overrides] == ["maps.example"]


def test_the_overview_shows_status_charts_from_the_stats_and_latest_events(console: ConsoleClient,
                                                                           school: School) -> None:
    console.sign_in(school.secrets["viewer"])
    page = console.get("/console/overview?window=1h")
    assert "<dt>Stored version</dt><dd>" in page.text
    assert '<td class="warning">restarting</td><td>4</td><td>0</td><td>13</td>' in page.text  # restarts, drops
    assert "<dt>Passed uninspected (fail-open)</dt><dd>17</dd>" in page.text
    # blocks (block and drop verdicts) per category and group; the 500 allowed flows in no chart
    assert '<desc id="chart-category-desc">games: 9; (group default): 3</desc>' in page.text
    assert '<desc id="chart-group-desc">class-5a: 7; class-6b: 5</desc>' in page.text
    assert ">500<" not in page.text
    assert page.text.count("<rect class=\"bar\"") == 4
    assert all(f"site{minutes}.example" in page.text for minutes in (1, 2, 3))
    assert "198.18.5.7" not in page.text  # pseudonyms only
    assert re.search(r"<code>c-[0-9a-f]+</code>", page.text)
    assert 'aria-current="true">last hour<' in page.text


def test_the_policy_page_shows_groups_rules_clients_lists_and_schedules(console: ConsoleClient,
                                                                         school: School) -> None:
    console.sign_in(school.secrets["viewer"])
    page = console.get("/console/policy?lang=nl")
    assert change_forms(page.text) == []  # read only
    assert re.search(r'<td><a href="#rules-class-5a">class-5a</a></td><td>Class 5A</td><td>allow</td><td>uit</td>',
                     page.text)
    assert '<tr><td>0</td><td>list blocked</td><td class="action-block">block</td><td>altijd</td></tr>' in page.text
    assert '<td>category games</td><td class="action-block">block</td><td>lessons</td>' in page.text
    assert "Geen regels: de standaardactie beslist." in page.text  # the guests group
    assert "<tr><td>class-5a</td><td>198.18.5.0/24</td></tr>" in page.text
    assert "<tr><td>blocked</td><td>blocked by the school</td><td>1</td></tr>" in page.text
    assert "ma 08:30–15:30, di 08:30–15:30, wo 08:30–15:30, do 08:30–15:30, vr 08:30–15:30" in page.text


def test_the_check_page_explains_a_decision(console: ConsoleClient, school: School) -> None:
    csrf = console.sign_in(school.secrets["viewer"]).hidden("csrf")
    page = console.post("/console/check", {"csrf": csrf, "target": "https://www.games.example/play",
                                           "address": "198.18.5.7"})
    assert page.status == 200
    assert 'Decision: <span class="action-block">block</span>' in page.text
    assert "<dt>Group</dt><dd>class-5a</dd>" in page.text and "<dt>Group found by</dt><dd>cidr</dd>" in page.text
    assert "<dt>Decided by</dt><dd>admin list</dd>" in page.text and "<dd>blocked" in page.text
    elsewhere = console.post("/console/check", {"csrf": csrf, "target": "games.example", "address": "198.18.9.9"})
    assert "<dt>Group</dt><dd>guests</dd>" in elsewhere.text and "action-allow" in elsewhere.text
    invalid = console.post("/console/check", {"csrf": csrf, "target": "games.example", "address": "not-an-ip"})
    assert invalid.status == 422 and "client.address" in invalid.text


def test_the_audit_page_lists_changes_newest_first(console: ConsoleClient, school: School) -> None:
    teacher = ConsoleClient(school.app())
    try:
        page = teacher.sign_in(school.secrets["ms-peeters"])
        teacher.post("/console/overrides", {"csrf": page.hidden("csrf"), "group": "class-5a", "site": "a.example",
                                            "minutes": "5"})
    finally:
        teacher.close()
    console.sign_in(school.secrets["coordinator"])
    audit = console.get("/console/audit").text
    rows = re.findall(r"<td>([^<]+) \((admin|teacher|editor|viewer)\)</td>", audit)
    assert rows[0] == ("ms-peeters", "teacher") and ("cli:test", "admin") in rows
    assert "<code>POST /api/v1/overrides</code>" in audit and '"name": "a.example"' in audit


@pytest.mark.parametrize("language", ["nl", "fr", "de", "en"])
def test_pages_follow_the_browser_language(console: ConsoleClient, school: School, language: str) -> None:
    header = {"Accept-Language": f"{language}-BE;q=0.9, ja;q=0.1"}
    sign_in = console.get("/console/sign-in", headers=header)
    index = ("nl", "fr", "en", "de").index(language)
    assert f'<html lang="{language}">' in sign_in.text
    assert f"<h1>{_TEXTS['sign_in'][index]}</h1>" in sign_in.text
    console.sign_in(school.secrets["ms-peeters"])
    teacher = console.get("/console/overrides", headers=header)
    assert f"<h1>{_TEXTS['overrides_title'][index].replace(chr(39), '&#39;')}</h1>" in teacher.text


def test_a_chosen_language_sticks_over_the_browser_preference(console: ConsoleClient, school: School) -> None:
    console.sign_in(school.secrets["viewer"])
    german = console.get("/console/check?lang=de", headers={"Accept-Language": "nl"})
    assert '<html lang="de">' in german.text and "Prüfen" in german.text
    assert '<html lang="de">' in console.get("/console/overview", headers={"Accept-Language": "nl"}).text
    assert '<html lang="de">' in console.get("/console/overview?lang=xx", headers={"Accept-Language": "nl"}).text
    assert '<html lang="fr">' in console.get("/console/overview?lang=fr", headers={"Accept-Language": "nl"}).text


def test_every_text_has_all_four_languages() -> None:
    for key, texts in _TEXTS.items():
        assert len(texts) == 4 and all(text.strip() for text in texts), key
        placeholders = {frozenset(re.findall(r"\{(\w+)\}", text)) for text in texts}
        assert len(placeholders) == 1, key


def test_an_admin_makes_a_teacher_token_seen_once_and_revokes_it(console: ConsoleClient, school: School) -> None:
    csrf = console.sign_in(school.secrets["coordinator"]).hidden("csrf")
    refused = console.post("/console/tokens", {"csrf": csrf, "name": "mr-janssens", "role": "teacher"})
    assert refused.status == 422 and "a teacher token needs the groups" in refused.text
    made = console.request("POST", "/console/tokens", data=[
        ("csrf", csrf), ("name", "mr-janssens"), ("role", "teacher"), ("groups", "class-5a"), ("groups", "class-6b"),
        ("max_minutes", "30")])
    assert made.status == 201
    shown = re.search(r'id="made-secret" type="text" readonly value="(eft_[^"]+)"', made.text)
    assert shown
    secret = shown[1]
    assert secret not in console.get("/console/tokens").text  # shown once, in the answer to the form only
    row = re.search(r"<td>mr-janssens</td><td>teacher</td><td>([^<]*)</td><td>(\d+)</td>",
                    console.get("/console/tokens").text)
    assert row and row.groups() == ("class-5a, class-6b", "30")
    teacher = ConsoleClient(school.app())
    try:
        page = teacher.sign_in(secret)
        assert page.url.endswith("/console/overrides") and "Signed in as mr-janssens (teacher)" in page.text
        listing = console.get("/console/tokens")
        revoke = re.search(r'action="(/console/tokens/mr-janssens/revoke)"[^>]*>\s*<input type="hidden" name="csrf" '
                           r'value="[^"]*">\s*<input type="hidden" name="etag" value="([^"]*)"', listing.text)
        assert revoke
        done = console.post(revoke[1], {"csrf": csrf, "etag": html.unescape(revoke[2])})
        assert "Token mr-janssens is revoked." in done.text
        assert teacher.get("/console/overrides").url.endswith("/console/sign-in?ended=1")
    finally:
        teacher.close()
    with sqlite3.connect(school.state_dir / "policy.sqlite") as db:
        rows = db.execute("SELECT token, method, path FROM audit_log WHERE object_id = 'mr-janssens' ORDER BY id")
        assert rows.fetchall() == [("coordinator", "POST", "/api/v1/tokens"),
                                   ("coordinator", "DELETE", "/api/v1/tokens/mr-janssens")]
