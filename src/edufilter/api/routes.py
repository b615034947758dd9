"""Every operation of the admin API, in one table: routes, checks, roles and the OpenAPI
document are all made from it."""

from __future__ import annotations

from aiohttp import web

from edufilter.api import admin, freshness, observe, openapi, preview, resources, reviews, schemas, uploads
from edufilter.api.operations import (
    PAGE_QUERY,
    PATCH_TYPES,
    Operation,
    Response,
    handler_for,
    sort_choices,
)
from edufilter.api.resources import GROUPS, LISTS, SCHEDULES, Named
from edufilter.api.security import OPERATIONS
from edufilter.api.tokens import EVERY_ROLE, Role
from edufilter.api.validation import Schema, boolean, choice, date_time, integer, slug, text
from edufilter.output.stats import DIMENSIONS, WINDOWS
from edufilter.policy.model import Action, EntryKind, QuicMode, TargetKind
from edufilter.policy.sources import ListFormat

READERS = frozenset((Role.ADMIN, Role.EDITOR, Role.VIEWER))
EDITORS = frozenset((Role.ADMIN, Role.EDITOR))
ADMINS = frozenset((Role.ADMIN,))
OVERRIDERS = frozenset((Role.ADMIN, Role.EDITOR, Role.TEACHER))

NO_CONTENT = Response(204, "Done; no body")
APPLY_FAILED = Response(500, "Stored but not applied: the previous policy stays live", schemas.PROBLEM,
                        content_type="application/problem+json")


def ok(schema: Schema, description: str = "OK") -> Response:
    return Response(200, description, schema, headers=("ETag",))


def created(schema: Schema) -> Response:
    return Response(201, "Created", schema, headers=("ETag", "Location"))


def _query(**extra: Schema) -> dict[str, Schema]:
    return {**PAGE_QUERY, **extra}


_ID = integer(1)


def _named(kind: Named, page: Schema, title: str, query: dict[str, Schema]) -> list[Operation]:
    collection = f"/api/v1/{kind.collection}"
    item = f"{collection}/{{{kind.param}}}"
    param = {kind.param: slug(f"{kind.kind} name")}
    representation = kind.resource.representation
    return [
        Operation("GET", collection, f"list_{kind.collection}", f"List the {title}", resources.list_named(kind),
                  READERS, (ok(page),), kind.collection, query=query),
        Operation("POST", collection, f"create_{kind.kind}", f"Create a {kind.kind}", resources.create_named(kind),
                  EDITORS, (created(representation), APPLY_FAILED), kind.collection, body=kind.resource.create),
        Operation("GET", item, f"get_{kind.kind}", f"Read a {kind.kind}", resources.get_named(kind), READERS,
                  (ok(representation),), kind.collection, path_params=param),
        Operation("PUT", item, f"replace_{kind.kind}", f"Replace a {kind.kind}",
                  resources.update_named(kind, patch=False), EDITORS, (ok(representation), APPLY_FAILED),
                  kind.collection, path_params=param, body=kind.resource.replace, if_match=True),
        Operation("PATCH", item, f"patch_{kind.kind}", f"Change some fields of a {kind.kind}",
                  resources.update_named(kind, patch=True), EDITORS, (ok(representation), APPLY_FAILED),
                  kind.collection, path_params=param, body=kind.resource.patch, body_types=PATCH_TYPES,
                  if_match=True),
        Operation("DELETE", item, f"delete_{kind.kind}", f"Remove a {kind.kind}", resources.delete_named(kind),
                  EDITORS, (NO_CONTENT, APPLY_FAILED), kind.collection, path_params=param, if_match=True),
    ]


_GROUP_PARAM = {"group": slug("group name")}
_RULE_PARAMS = {"group": slug("group name"), "position": integer(0, 100_000)}
_LIST_PARAM = {"list": slug("list name")}
_ENTRY_PARAMS = {"list": slug("list name"), "id": _ID}

OPERATIONS_TABLE: list[Operation] = [
    Operation("GET", "/healthz", "healthz", "Liveness: answers without a token", observe.healthz, None,
              (Response(200, "Alive", schemas.HEALTH),), "service"),
    Operation("GET", "/metrics", "metrics", "Prometheus metrics (text format 0.0.4)", observe.metrics, READERS,
              (Response(200, "Metrics", {"type": "string"}, content_type="text/plain"),), "service"),
    Operation("GET", "/api/openapi.json", "openapi", "This OpenAPI document", openapi.serve_openapi,
              EVERY_ROLE, (Response(200, "OpenAPI 3.1 document", {"type": "object"}),), "service"),
    Operation("GET", "/api/v1/whoami", "whoami", "The token making this request", admin.whoami, EVERY_ROLE,
              (ok(schemas.TOKEN.representation),), "tokens"),
    Operation("GET", "/api/v1/status", "status", "Stored and live policy versions, daemon status",
              observe.status, READERS, (ok(schemas.STATUS),), "service"),
    Operation("GET", "/api/v1/stats", "stats", "Counts per verdict, category and group over a window",
              observe.stats, READERS, (ok(schemas.STATS),), "service",
              query={"window": {"type": "string", "enum": list(WINDOWS), "default": "24h"},
                     "by": {"type": "string", "enum": list(DIMENSIONS), "default": "verdict"},
                     "group": slug("group name"), "category": slug("category name"), "verdict": slug("verdict")}),
    Operation("GET", "/api/v1/events", "list_events", "Pseudonymised block events, newest first", observe.events,
              READERS, (ok(schemas.EVENT_PAGE),), "service",
              query={"limit": PAGE_QUERY["limit"], "cursor": text(64, 1), "group": slug("group name"),
                     "category": slug("category name"), "action": slug("action"),
                     "client": text(64, 1, description="a client pseudonym"),
                     "reference": text(8, 8, description="the code on a block page"),
                     "since": date_time(description="inclusive"), "until": date_time(description="exclusive")}),
    Operation("POST", "/api/v1/check", "check", "Explain the decision for a name or URL, client and time",
              observe.check, READERS,
              (ok(schemas.EXPLANATION),
               Response(503, "No decision engine runs here, or too many checks are in progress (Retry-After)",
                        schemas.PROBLEM, "application/problem+json")),
              "service", body=schemas.CHECK_REQUEST),
    Operation("POST", "/api/v1/preview", "preview",
              "What a few names get now and would get after a change to a group's rules, a schedule or a "
              "client match, saving nothing", preview.preview, EDITORS,
              (ok(preview.PREVIEW),
               Response(503, "No decision engine runs here, or too many checks are in progress (Retry-After)",
                        schemas.PROBLEM, "application/problem+json")),
              "service", body=preview.PREVIEW_REQUEST,
              description="The change is validated as the policy model validates a saved one (422 names the "
                          "field); the names are explained before and after as POST /check explains them."),
    Operation("POST", "/api/v1/apply", "apply", "Compile and apply the stored policy again", admin.apply_policy,
              EDITORS, (Response(200, "Applied", schemas.APPLIED), APPLY_FAILED), "service"),
    Operation("GET", "/api/v1/audit", "list_audit", "Audit log of every change, newest first", admin.read_audit,
              READERS, (ok(schemas.AUDIT_PAGE),), "audit",
              query=_query(kind=text(40, 1), object_id=text(200, 1), token=text(200, 1), since=date_time()),
              description="Editors and viewers read the changes of policy objects; the changes of tokens are "
                          "an admin's alone, as GET /tokens is."),
    # General settings
    Operation("GET", "/api/v1/settings", "get_settings", "Read the general settings", resources.get_settings,
              READERS, (ok(schemas.SETTINGS.representation),), "settings"),
    Operation("PUT", "/api/v1/settings", "replace_settings", "Replace the general settings",
              resources.update_settings(patch=False), ADMINS, (ok(schemas.SETTINGS.representation), APPLY_FAILED),
              "settings", body=schemas.SETTINGS.replace, if_match=True),
    Operation("PATCH", "/api/v1/settings", "patch_settings", "Change some general settings",
              resources.update_settings(patch=True), ADMINS, (ok(schemas.SETTINGS.representation), APPLY_FAILED),
              "settings", body=schemas.SETTINGS.patch, body_types=PATCH_TYPES, if_match=True),
    # Groups (safe search and the bypass shield are group fields), lists, schedules
    *_named(GROUPS, schemas.GROUP_PAGE, "groups",
            _query(sort=sort_choices("name", "title", "default_action"), q=text(100, 1),
                   default_action=choice(Action), safe_search=boolean(), bypass_shield=boolean(),
                   quic=choice(QuicMode))),
    *_named(LISTS, schemas.LIST_PAGE, "admin lists",
            _query(sort=sort_choices("name", "entry_count"), q=text(100, 1))),
    *_named(SCHEDULES, schemas.SCHEDULE_PAGE, "schedules", _query(sort=sort_choices("name"), q=text(100, 1))),
    # Rules of a group
    Operation("GET", "/api/v1/groups/{group}/rules", "list_rules", "List a group's rules in order",
              resources.list_rules, READERS, (ok(schemas.RULE_PAGE),), "rules", path_params=_GROUP_PARAM,
              query=_query(sort=sort_choices("position", "target", "action"), q=text(100, 1),
                           target_kind=choice(TargetKind), target=slug("target"), action=choice(Action),
                           schedule=slug("schedule name"))),
    Operation("POST", "/api/v1/groups/{group}/rules", "create_rule", "Add a rule (default: last)",
              resources.create_rule, EDITORS, (created(schemas.RULE.representation), APPLY_FAILED), "rules",
              path_params=_GROUP_PARAM, body=schemas.RULE.create),
    Operation("GET", "/api/v1/groups/{group}/rules/{position}", "get_rule", "Read a rule", resources.get_rule,
              READERS, (ok(schemas.RULE.representation),), "rules", path_params=_RULE_PARAMS),
    Operation("PUT", "/api/v1/groups/{group}/rules/{position}", "replace_rule",
              "Replace a rule; a new position moves it", resources.update_rule(patch=False), EDITORS,
              (ok(schemas.RULE.representation), APPLY_FAILED), "rules", path_params=_RULE_PARAMS,
              body=schemas.RULE.replace, if_match=True),
    Operation("PATCH", "/api/v1/groups/{group}/rules/{position}", "patch_rule", "Change some fields of a rule",
              resources.update_rule(patch=True), EDITORS, (ok(schemas.RULE.representation), APPLY_FAILED),
              "rules", path_params=_RULE_PARAMS, body=schemas.RULE.patch, body_types=PATCH_TYPES, if_match=True),
    Operation("DELETE", "/api/v1/groups/{group}/rules/{position}", "delete_rule",
              "Remove a rule (the later ones move up)", resources.delete_rule, EDITORS, (NO_CONTENT, APPLY_FAILED),
              "rules", path_params=_RULE_PARAMS, if_match=True),
    # Client matches
    Operation("GET", "/api/v1/clients", "list_clients", "List the client matches", resources.list_clients,
              READERS, (ok(schemas.CLIENT_PAGE),), "clients",
              query=_query(sort=sort_choices("id", "group"), q=text(100, 1), group=slug("group name"))),
    Operation("POST", "/api/v1/clients", "create_client",
              "Put clients in a group by exactly one of: cidr, interface (+ vlan), mac", resources.create_client,
              EDITORS, (created(schemas.CLIENT.representation), APPLY_FAILED), "clients",
              body=schemas.CLIENT.create),
    Operation("GET", "/api/v1/clients/{id}", "get_client", "Read a client match", resources.get_client, READERS,
              (ok(schemas.CLIENT.representation),), "clients", path_params={"id": _ID}),
    Operation("PUT", "/api/v1/clients/{id}", "replace_client", "Move a client match to another group",
              resources.update_client(patch=False), EDITORS, (ok(schemas.CLIENT.representation), APPLY_FAILED),
              "clients", path_params={"id": _ID}, body=schemas.CLIENT.replace, if_match=True),
    Operation("PATCH", "/api/v1/clients/{id}", "patch_client", "Move a client match to another group",
              resources.update_client(patch=True), EDITORS, (ok(schemas.CLIENT.representation), APPLY_FAILED),
              "clients", path_params={"id": _ID}, body=schemas.CLIENT.patch, body_types=PATCH_TYPES,
              if_match=True),
    Operation("DELETE", "/api/v1/clients/{id}", "delete_client", "Remove a client match",
              resources.delete_client, EDITORS, (NO_CONTENT, APPLY_FAILED), "clients", path_params={"id": _ID},
              if_match=True),
    # Categories (made by list imports)
    Operation("GET", "/api/v1/categories", "list_categories", "List the imported categories with their titles",
              resources.list_categories, READERS, (ok(schemas.CATEGORY_PAGE),), "categories",
              query=_query(sort=sort_choices("name", "source"), q=text(100, 1), source=text(200, 1),
                           alias_of=slug("category name"))),
    Operation("GET", "/api/v1/freshness", "list_freshness",
              "Each imported category's age and size, and the last `lists update` run", freshness.list_freshness,
              READERS, (ok(freshness.FRESHNESS),), "categories"),
    Operation("GET", "/api/v1/categories/{category}", "get_category", "Read a category", resources.get_category,
              READERS, (ok(schemas.CATEGORY),), "categories", path_params={"category": slug("category name")}),
    # Entries of an admin list, and uploads of whole files
    Operation("GET", "/api/v1/lists/{list}/entries", "list_entries", "List a list's entries",
              resources.list_entries, READERS, (ok(schemas.ENTRY_PAGE),), "lists", path_params=_LIST_PARAM,
              query=_query(sort={**sort_choices("id", "value"), "default": "id"}, q=text(253, 1),
                           kind=choice(EntryKind))),
    Operation("POST", "/api/v1/lists/{list}/entries", "create_entry", "Add one entry", resources.create_entry,
              EDITORS, (created(schemas.ENTRY.representation), APPLY_FAILED), "lists", path_params=_LIST_PARAM,
              body=schemas.ENTRY.create),
    Operation("GET", "/api/v1/lists/{list}/entries/{id}", "get_entry", "Read an entry", resources.get_entry,
              READERS, (ok(schemas.ENTRY.representation),), "lists", path_params=_ENTRY_PARAMS),
    Operation("DELETE", "/api/v1/lists/{list}/entries/{id}", "delete_entry", "Remove an entry",
              resources.delete_entry, EDITORS, (NO_CONTENT, APPLY_FAILED), "lists", path_params=_ENTRY_PARAMS,
              if_match=True),
    Operation("POST", "/api/v1/lists/{list}/uploads", "create_upload",
              "Upload a whole list file (hosts, plain or adblock; gzip or not), read in the background",
              uploads.create_upload, EDITORS,
              (Response(202, "Accepted; poll the Location for progress", schemas.UPLOAD,
                        headers=("ETag", "Location")),
               Response(503, "Too many uploads under way; try again after Retry-After", schemas.PROBLEM,
                        "application/problem+json")),
              "lists", path_params=_LIST_PARAM, upload=True,
              query={"format": choice(ListFormat, default=ListFormat.AUTO.value),
                     "mode": {"type": "string", "enum": list(schemas.UPLOAD_MODES), "default": "append",
                              "description": "append to the list, or replace all its entries"},
                     "allow_empty": boolean(default=False,
                                            description="let a replace with no entries empty the list")},
              description="An empty replacement is refused (422) unless allow_empty is true; at most "
                          "max_concurrent_uploads run at once (503 otherwise)."),
    Operation("GET", "/api/v1/uploads", "list_uploads", "List this process's recent uploads, newest first",
              uploads.list_uploads, READERS, (ok(schemas.UPLOAD_PAGE),), "lists",
              query=_query(list=slug("list name"), state={"type": "string", "enum": list(schemas.UPLOAD_STATES)})),
    Operation("GET", "/api/v1/uploads/{id}", "get_upload", "An upload's state and progress", uploads.get_upload,
              READERS, (ok(schemas.UPLOAD),), "lists", path_params={"id": text(32, 1)}),
    Operation("POST", "/api/v1/uploads/{id}/cancel", "cancel_upload",
              "Cancel an upload under way; the list stays as it was", uploads.cancel_upload, EDITORS,
              (ok(schemas.UPLOAD),), "lists", path_params={"id": text(32, 1)}),
    # Overrides
    Operation("GET", "/api/v1/overrides", "list_overrides", "List overrides (a teacher sees their groups')",
              resources.list_overrides, EVERY_ROLE, (ok(schemas.OVERRIDE_PAGE),), "overrides",
              query=_query(sort=sort_choices("id", "starts_at", "expires_at", "name"), q=text(100, 1),
                           group=slug("group name"), name=text(253, 1), action=choice(Action), active=boolean(),
                           created_by=text(64, 1))),
    Operation("POST", "/api/v1/overrides", "create_override",
              "Allow (or block) a name for a group from now for some minutes", resources.create_override,
              OVERRIDERS, (created(schemas.OVERRIDE), APPLY_FAILED), "overrides", body=schemas.OVERRIDE_CREATE),
    Operation("GET", "/api/v1/overrides/{id}", "get_override", "Read an override", resources.get_override,
              EVERY_ROLE, (ok(schemas.OVERRIDE),), "overrides", path_params={"id": _ID}),
    Operation("DELETE", "/api/v1/overrides/{id}", "delete_override", "End an override now",
              resources.delete_override, OVERRIDERS, (NO_CONTENT, APPLY_FAILED), "overrides",
              path_params={"id": _ID}, if_match=True,
              description="A teacher's token ends only the overrides it started itself (403 otherwise)."),
    # Review requests from the block page
    Operation("GET", "/api/v1/review-requests", "list_review_requests",
              "List the block page's review requests, newest first (a teacher sees their groups')",
              reviews.list_review_requests, OVERRIDERS, (ok(reviews.REVIEW_REQUEST_PAGE),), "reviews",
              query=_query(**reviews.REVIEW_QUERY, sort=sort_choices("id", "created_at"), q=text(100, 1))),
    Operation("GET", "/api/v1/review-requests/{id}", "get_review_request", "Read a review request",
              reviews.get_review_request, OVERRIDERS, (ok(reviews.REVIEW_REQUEST),), "reviews",
              path_params={"id": _ID}),
    Operation("POST", "/api/v1/review-requests/{id}/approve", "approve_review_request",
              "Approve a pending request: an allow override for its group, or an editor's allow-list entry",
              reviews.approve_review_request, OVERRIDERS, (ok(reviews.REVIEW_REQUEST), APPLY_FAILED), "reviews",
              path_params={"id": _ID}, body=reviews.REVIEW_APPROVAL, if_match=True),
    Operation("POST", "/api/v1/review-requests/{id}/decline", "decline_review_request",
              "Decline a pending request", reviews.decline_review_request, OVERRIDERS,
              (ok(reviews.REVIEW_REQUEST),), "reviews", path_params={"id": _ID}, if_match=True),
    # Tokens
    Operation("GET", "/api/v1/tokens", "list_tokens", "List the tokens, revoked ones included",
              admin.list_token_handler, ADMINS, (ok(schemas.TOKEN_PAGE),), "tokens",
              query=_query(sort=sort_choices("name", "created_at", "role"), role=choice(Role))),
    Operation("POST", "/api/v1/tokens", "create_token", "Make a token; its secret is shown only in this answer",
              admin.create_token_handler, ADMINS, (created(schemas.TOKEN_CREATED),), "tokens",
              body=schemas.TOKEN.create),
    Operation("GET", "/api/v1/tokens/{name}", "get_token", "Read a token (never its secret)", admin.get_token,
              ADMINS, (ok(schemas.TOKEN.representation),), "tokens", path_params={"name": slug("token name")}),
    Operation("DELETE", "/api/v1/tokens/{name}", "revoke_token",
              "Revoke a token (it stays listed); the last live admin token cannot be revoked",
              admin.revoke_token_handler, ADMINS, (NO_CONTENT,), "tokens", path_params={"name": slug("token name")},
              if_match=True),
]

def setup_routes(app: web.Application) -> None:
    """Each operation's route; a GET answers HEAD too (RFC 9110), with the same checks and roles."""
    routes = {}
    for operation in OPERATIONS_TABLE:
        handler = handler_for(operation)
        routes[app.router.add_route(operation.method, operation.path, handler)] = operation
        if operation.method == "GET":
            routes[app.router.add_route("HEAD", operation.path, handler)] = operation
    app[OPERATIONS] = routes
