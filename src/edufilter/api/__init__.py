"""The admin API: an aiohttp service that manages the policy live, securely and audited.

`app.make_app(state_dir, applier, ...)` builds it and `app.start_api(app)` listens, as
`settings.ApiSettings` says. Routes, request checks, roles and the OpenAPI document all
come from the operation table in routes.py. (Nothing is imported here, so that the command
line can read tokens without loading aiohttp.)
"""
