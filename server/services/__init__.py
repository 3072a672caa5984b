"""Services: the layer between views and the engines (models, licensing, store).

One convention: a service function takes what it works on as arguments, `db` (a sqlite-utils Database) first and
`settings` when it reads them, so a script, the CLI or a test calls it without an app. Views pass `get_db()` and
`get_settings()`; entry points (job handlers, the licensing purge hook, CLI commands) read them once at the top and
pass them down."""
