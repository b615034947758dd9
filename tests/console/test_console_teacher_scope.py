"""The teacher page within the token's scope, at request level: a colleague's override in a
shared group is neither listed nor ended (the API refuses it), an editor is offered every
group and the API's maximum minutes, and each person's list holds only what they started."""

from __future__ import annotations

import re
from datetime import timedelta

from console_client import NOW, ConsoleClient, School, console, school  # noqa: F401 (fixtures)

from edufilter.api.tokens import MAX_OVERRIDE_MINUTES
from edufilter.policy.model import Action
from edufilter.policy.store import PolicyStore


def offered_groups(text: str) -> list[str]:
    return re.findall(r'<option value="([^"]+)"', text.split('id="group"')[1].split("</select>")[0])


def listed_sites(text: str) -> list[str]:
    return re.findall(r"<tr>\s*<td>([^<]+)</td>", text.split('class="overrides"')[1]) if 'class="overrides"' in text \
        else []


def test_a_teacher_neither_sees_nor_ends_a_colleagues_override(console: ConsoleClient, school: School) -> None:
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        theirs = store.add_override("class-5a", "colleague.example", Action.ALLOW, NOW, NOW + timedelta(minutes=40),
                                    "mr-janssens", "their lesson")
    page = console.sign_in(school.secrets["ms-peeters"])
    assert listed_sites(page.text) == [] and "You see and end only the overrides you started." in page.text
    refused = console.post(f"/console/overrides/{theirs.id}/end", {"csrf": page.hidden("csrf"), "etag": "*"})
    assert refused.status == 403 and "a teacher ends only their own" in refused.text
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        assert [override.name for override in store.load().overrides] == ["colleague.example"]


def test_an_editor_is_offered_every_group_and_the_apis_maximum(console: ConsoleClient, school: School) -> None:
    with PolicyStore(school.state_dir / "policy.sqlite") as store:
        store.add_override("class-5a", "teacher.example", Action.ALLOW, NOW, NOW + timedelta(minutes=40),
                           "ms-peeters", "lesson")
    page = console.sign_in(school.secrets["editor"])
    page = console.get("/console/overrides")
    assert offered_groups(page.text) == ["guests", "class-5a", "class-6b"]
    assert f'max="{MAX_OVERRIDE_MINUTES}"' in page.text and listed_sites(page.text) == []
    opened = console.post("/console/overrides", {"csrf": page.hidden("csrf"), "group": "class-6b",
                                                 "site": "maps.example", "minutes": "90"})
    assert listed_sites(opened.text) == ["maps.example"]
