"""Editing the policy from the console with a preview: the `check` explanation of a few names
now and what the change makes of them, then the save through the API's operations."""

from __future__ import annotations

import re

from console_client import ConsoleClient, School, console, school  # noqa: F401 (fixtures)

from edufilter.policy.store import PolicyStore


def foreseen(text: str) -> list[list[str]]:
    table = re.search(r'<table class="foreseen">.*?<tbody>(.*?)</tbody>', text, re.S)
    assert table, "no preview table"
    return [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in re.findall(r"<tr>(.*?)</tr>", table[1], re.S)]


def test_an_entry_is_previewed_with_check_then_saved(console: ConsoleClient, school: School) -> None:
    page = console.sign_in(school.secrets["editor"])
    policy = console.get("/console/policy")
    assert 'class="change add-entry"' in policy.text
    preview = console.post("/console/policy/entries", {"csrf": page.hidden("csrf"), "step": "preview",
                                                      "list": "blocked", "kind": "domain", "value": "chat.example",
                                                      "names": "chat.example, www.chat.example"})
    assert preview.status == 200, preview.text
    rows = foreseen(preview.text)
    # class-5a's only network client: its rule 0 blocks the list; nothing is stored yet
    assert ["chat.example", "class-5a", "allow (group default)", "block", "the list&#39;s rule decides"] in rows
    assert ["www.chat.example", "class-5a", "allow (group default)", "block",
            "the list&#39;s rule decides"] in rows
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        [blocked] = store.load().lists
        assert "chat.example" not in [entry.value for entry in blocked.entries]
    saved = console.post("/console/policy/entries", {"csrf": page.hidden("csrf"), "step": "save",
                                                    "list": "blocked", "kind": "domain", "value": "chat.example"})
    assert "chat.example is now in the list blocked." in saved.text
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        [blocked] = store.load().lists
        assert "chat.example" in [entry.value for entry in blocked.entries]
    again = console.post("/console/policy/entries", {"csrf": page.hidden("csrf"), "step": "preview",
                                                    "list": "blocked", "kind": "domain", "value": "chat.example"})
    assert ["chat.example", "class-5a", "block (admin list: blocked)", "block",
            "the list&#39;s rule decides"] in foreseen(again.text)
    bad = console.post("/console/policy/entries", {"csrf": page.hidden("csrf"), "step": "save", "list": "blocked",
                                                  "kind": "domain", "value": "not a name"})
    assert bad.status == 422 and 'role="alert"' in bad.text


def test_a_group_change_is_previewed_then_saved_with_its_etag(console: ConsoleClient, school: School) -> None:
    page = console.sign_in(school.secrets["editor"])
    policy = console.get("/console/policy")
    etag = re.search(r'action="/console/policy/groups/class-5a" class="change group-settings"[^>]*>\s*'
                     r'<input type="hidden" name="csrf" value="[^"]+">\s*<input type="hidden" name="step" '
                     r'value="preview">\s*<input type="hidden" name="etag" value="([^"]+)">', policy.text)
    assert etag
    form = {"csrf": page.hidden("csrf"), "default_action": "block", "quic": "inspect", "safe_search": "on",
            "etag": etag[1].replace("&#34;", '"'), "names": "news.example games.example"}
    preview = console.post("/console/policy/groups/class-5a", {**form, "step": "preview"})
    assert preview.status == 200, preview.text
    assert foreseen(preview.text) == [
        ["news.example", "class-5a", "allow (group default)", "block", "the group&#39;s default action decides"],
        ["games.example", "class-5a", "block (admin list: blocked)", "block",
         "something other than the default action decides"]]
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        assert next(g for g in store.load().groups if g.name == "class-5a").default_action == "allow"
    stale = console.post("/console/policy/groups/class-5a", {**form, "step": "save", "etag": '"stale"'})
    assert stale.status == 412
    saved = console.post("/console/policy/groups/class-5a", {**form, "step": "save"})
    assert "The settings of class-5a are saved." in saved.text, saved.text
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        group = next(g for g in store.load().groups if g.name == "class-5a")
    assert (group.default_action, group.safe_search, group.bypass_shield) == ("block", True, False)


def test_a_viewer_has_no_policy_forms_and_a_forged_change_is_refused(console: ConsoleClient,
                                                                    school: School) -> None:
    page = console.sign_in(school.secrets["viewer"])
    policy = console.get("/console/policy")
    assert "class=\"change" not in policy.text
    refused = console.post("/console/policy/entries", {"csrf": page.hidden("csrf"), "step": "save",
                                                      "list": "blocked", "kind": "domain", "value": "x.example"})
    assert refused.status == 403
    refused = console.post("/console/policy/entries", {"csrf": page.hidden("csrf"), "step": "preview",
                                                      "list": "blocked", "kind": "domain", "value": "x.example"})
    assert refused.status == 403


def test_a_preview_with_a_bad_list_or_name_says_what_is_wrong(console: ConsoleClient, school: School) -> None:
    csrf = console.sign_in(school.secrets["editor"]).hidden("csrf")
    bad_list = console.post("/console/policy/entries", {"csrf": csrf, "step": "preview", "list": "No List!",
                                                       "kind": "domain", "value": "chat.example"})
    assert bad_list.status == 422 and 'role="alert"' in bad_list.text and "The policy" in bad_list.text
    bad_name = console.post("/console/policy/entries", {"csrf": csrf, "step": "preview", "list": "blocked",
                                                       "kind": "domain", "value": "not a name"})
    assert bad_name.status == 422 and 'role="alert"' in bad_name.text
