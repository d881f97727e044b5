"""Where a sweep's study lives, and the lock its workers share.

By default a journal file in the sweep's folder, which any number of worker processes on one
machine share safely (SQLite would answer "database is locked"). Any SQLAlchemy URL works too,
PostgreSQL for workers on many machines. A worker takes the lock to count the study's trials and
start the next one, so `--trials N` is the study's total however many workers there are.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from pathlib import Path

from fmnist.errors import FmnistError

CONNECT_TIMEOUT = 5  # seconds to reach a database before saying it cannot be reached


def sqlalchemy_url(url: str) -> str:
    """PostgreSQL through psycopg 3, the driver fmnist installs (SQLAlchemy's default is psycopg2)."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def open_storage(url: str | None, folder: Path):
    """The Optuna storage: the journal file `folder/journal.log`, or the database at `url` (refused in
    one line, within a few seconds, when it cannot be reached)."""
    import optuna

    if url is None:
        folder.mkdir(parents=True, exist_ok=True)
        return optuna.storages.journal.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(folder / "journal.log"))
        )
    url = sqlalchemy_url(url)
    kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}} if url.startswith("postgresql") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs={**kwargs, "pool_pre_ping": True})
    except Exception as e:  # SQLAlchemy and the driver raise many types; the first line says why
        raise FmnistError(f"cannot use storage {redact(url)}: {str(e).strip().splitlines()[0]}") from None


def redact(url: str) -> str:
    """A URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


@contextlib.contextmanager
def study_lock(url: str | None, folder: Path, name: str) -> Iterator[None]:
    """Held while a worker counts trials and starts one: a file lock beside a journal or SQLite
    file, an advisory lock in PostgreSQL; other databases go without (a race may run a trial more)."""
    if url is None or url.startswith("sqlite"):
        path = folder / ".sweep.lock" if url is None else Path(url.split(":///", 1)[-1] + ".sweep-lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return
    if not sqlalchemy_url(url).startswith("postgresql"):
        yield
        return
    import sqlalchemy

    key = int.from_bytes(hashlib.sha256(f"fmnist-sweep:{name}".encode()).digest()[:8], "big", signed=True)
    engine = sqlalchemy.create_engine(
        sqlalchemy_url(url), connect_args={"connect_timeout": CONNECT_TIMEOUT}, poolclass=sqlalchemy.pool.NullPool
    )
    try:
        try:
            conn = engine.connect()
        except sqlalchemy.exc.SQLAlchemyError as e:
            raise FmnistError(
                f"cannot use storage {redact(sqlalchemy_url(url))}: "
                f"{str(e.orig if hasattr(e, 'orig') else e).strip().splitlines()[0]}"
            ) from None
        with conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        engine.dispose()
