"""Services: the layer between views and the engines (models, licensing, store).

One convention, the catalog's: a service function takes what it works on as arguments, `db` (a sqlite-utils
Database) first and `settings` when it reads them, so a script, the CLI or a test calls it without an app. Views
pass `get_db()` and `get_settings()`. The recognition services still read both from the app context themselves
(they predate the convention); move them over when they are next reworked."""
