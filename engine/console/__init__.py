"""`pulse console`: the read-only CS web console over the Redis data `pulse run` writes.

`store` reads Redis (engine.serving's keys) into plain dicts, `app` serves them as server-rendered HTML and
JSON (Starlette, Jinja2 templates in `templates/`, charts as inline SVG from `charts`), `server` runs it
with uvicorn for the CLI.
"""
