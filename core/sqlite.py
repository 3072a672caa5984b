"""SQLite write transactions: the write lock up front, a savepoint when nested, work to do once they commit."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import sqlite_utils

_local = threading.local()


@contextlib.contextmanager
def write_txn(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """BEGIN IMMEDIATE ... COMMIT, so the busy timeout applies and a check and its update agree across processes.

    Nested inside a transaction it takes a savepoint: an error undoes the inner block's writes only. after_commit
    callbacks registered inside run once the outermost one commits."""
    if db.conn.in_transaction:
        with db.atomic():
            yield db
        return
    callbacks: list[Callable[[], None]] = []
    _after_commit_lists()[id(db.conn)] = callbacks
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.rollback()
            raise
        else:
            db.conn.execute("COMMIT")
    finally:
        _after_commit_lists().pop(id(db.conn), None)
    for callback in callbacks:
        callback()


def _after_commit_lists() -> dict[int, list[Callable[[], None]]]:
    lists: dict[int, list[Callable[[], None]]] | None = getattr(_local, "after_commit", None)
    if lists is None:
        lists = _local.after_commit = {}
    return lists


def after_commit(db: sqlite_utils.Database, callback: Callable[[], None]) -> None:
    """Run callback once this thread's open write_txn on db commits (dropped on rollback); at once without one
    (e.g. sending a queue message only when the job it names is visible to other processes)."""
    pending = _after_commit_lists().get(id(db.conn))
    if pending is None:
        callback()
    else:
        pending.append(callback)
