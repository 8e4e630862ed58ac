"""The results store: one SQLite file (stdlib ``sqlite3``), one row per result.

A row is keyed by ``(experiment, config_hash, seed)``:

* ``experiment`` names what was run (``"kunit"``, ``"bench"``, ``"attack"``,
  a sweep's experiment, ...);
* ``config_hash`` is the SHA-256 of the canonical JSON (:func:`canonical_json`:
  sorted keys, no whitespace, UTF-8, no NaN) of the *resolved* configuration
  of the row — every kernel knob plus the experiment's parameters, with the
  seed taken out (the seed is the third part of the key, so the same
  configuration run under several seeds shares one hash);
* ``seed`` is the seed of every random choice the row's run made.

Each row also holds the project version that wrote it, its status (``ok`` or
``failed``), the resolved configuration, the event counters, the results
(JSON) and, for a failed row, the error.  Store-wide facts (what the main job
ran, which parts of the model were not available) live in a small key/value
``meta`` table as JSON.

The file is recognised by ``PRAGMA application_id`` (``0x6B706B73``, "kpks")
and versioned by ``PRAGMA user_version`` (:data:`SCHEMA_VERSION`).  Opening a
file that is not an SQLite database, a database of another application, a
store of a newer schema, or a store whose rows do not parse raises
:class:`~kpkeys_sim.errors.ToolError` naming the file and the problem; a
store is validated read-only before anything is written to it.

Everything the report shows comes from the store, so ``kpkeys-sim report
DB --html OUT`` regenerates the report of a run byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from kpkeys_sim import __version__
from kpkeys_sim.errors import ToolError

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "STATUSES",
    "ResultRow",
    "ResultStore",
    "canonical_json",
    "config_hash",
]

#: ``PRAGMA application_id`` of a kpkeys-sim store: ASCII "kpks".
APPLICATION_ID = 0x6B706B73
#: ``PRAGMA user_version``: bump when the table layout changes.
SCHEMA_VERSION = 1
#: The statuses a row may have.
STATUSES: tuple[str, ...] = ("ok", "failed")

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
CREATE TABLE results (
    experiment      TEXT NOT NULL,
    config_hash     TEXT NOT NULL,
    seed            INTEGER NOT NULL,
    project_version TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    config          TEXT NOT NULL,
    counters        TEXT NOT NULL,
    results         TEXT NOT NULL,
    error           TEXT NOT NULL,
    PRIMARY KEY (experiment, config_hash, seed)
);
"""

_TABLES: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "results": (
        "experiment",
        "config_hash",
        "seed",
        "project_version",
        "status",
        "config",
        "counters",
        "results",
        "error",
    ),
}


def _check_finite(obj: Any, where: str) -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"{where}: non-finite number {obj!r} cannot be stored")
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            _check_finite(v, f"{where}[{i}]")


def canonical_json(obj: Any) -> str:
    """The canonical JSON text of ``obj``: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``config`` without its ``seed`` key."""
    body = {k: v for k, v in config.items() if k != "seed"}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One result: what ran (``experiment``, ``config``, ``seed``) and what it gave."""

    experiment: str
    config: Mapping[str, Any]
    seed: int
    counters: Mapping[str, int] = field(default_factory=dict)
    results: Mapping[str, Any] = field(default_factory=dict)
    status: str = "ok"
    error: str = ""
    project_version: str = __version__

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"bad status {self.status!r}: must be one of {STATUSES}")
        if not self.experiment:
            raise ValueError("a result row needs a non-empty experiment name")
        for name, value in self.counters.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"counter {name!r}: {value!r} is not an integer")
        _check_finite(dict(self.results), "results")
        _check_finite(dict(self.config), "config")

    @property
    def config_hash(self) -> str:
        """The row's configuration hash (see :func:`config_hash`)."""
        return config_hash(self.config)

    @property
    def key(self) -> tuple[str, str, int]:
        """``(experiment, config_hash, seed)``: the row's identity in the store."""
        return (self.experiment, self.config_hash, self.seed)

    def to_json(self) -> dict[str, Any]:
        """The row as a JSON object (the shape of ``results.json``'s ``rows``)."""
        return {
            "experiment": self.experiment,
            "config_hash": self.config_hash,
            "seed": self.seed,
            "project_version": self.project_version,
            "status": self.status,
            "config": _plain(self.config),
            "counters": dict(sorted(self.counters.items())),
            "results": _plain(self.results),
            "error": self.error,
        }


def _plain(obj: Any) -> Any:
    """``obj`` through a JSON round trip (tuples become lists, keys become strings)."""
    return json.loads(canonical_json(obj))


class ResultStore:
    """An open results store.  Use as a context manager, or call :meth:`close`.

    ``ResultStore.open(path)`` opens an existing store (``ToolError`` if it is
    missing or not a valid store); ``ResultStore.create_or_open(path)``
    creates the file when it does not exist.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    # --- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, *, writable: bool = False) -> ResultStore:
        """Open the existing store at ``path`` (validated first, read-only)."""
        p = Path(path)
        if not p.exists():
            raise ToolError(f"{p}: no such results store")
        if not p.is_file():
            raise ToolError(f"{p}: not a results store: not a regular file")
        validate_store(p)
        conn = _connect(p, readonly=not writable)
        return cls(p, conn)

    @classmethod
    def create_or_open(cls, path: str | Path) -> ResultStore:
        """Open ``path`` for writing, creating an empty store if it does not exist."""
        p = Path(path)
        if p.exists():
            return cls.open(p, writable=True)
        if not p.parent.is_dir():
            raise ToolError(f"{p}: cannot create results store: no directory {p.parent}")
        # Built under a temporary name and renamed: the store appears complete or not at all.
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        try:
            conn = sqlite3.connect(str(tmp), isolation_level=None)
            try:
                conn.executescript(
                    "BEGIN;\n"
                    f"PRAGMA application_id = {APPLICATION_ID};\n"
                    f"PRAGMA user_version = {SCHEMA_VERSION};\n"
                    f"{_SCHEMA}\n"
                    "COMMIT;\n"
                )
            finally:
                conn.close()
            os.replace(tmp, p)
        except (sqlite3.Error, OSError) as exc:
            tmp.unlink(missing_ok=True)
            raise ToolError(f"{p}: cannot create results store: {exc}") from None
        conn = _connect(p, readonly=False)
        return cls(p, conn)

    def close(self) -> None:
        """Close the database connection."""
        self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- writing ---------------------------------------------------------------------------

    def put(self, row: ResultRow) -> None:
        """Store ``row`` (replacing a row with the same key) and commit at once."""
        self.put_many([row])

    def put_many(self, rows: Iterable[ResultRow]) -> None:
        """Store ``rows`` in one transaction."""
        values = [
            (
                r.experiment,
                r.config_hash,
                r.seed,
                r.project_version,
                r.status,
                canonical_json(r.config),
                canonical_json(dict(r.counters)),
                canonical_json(r.results),
                r.error,
            )
            for r in rows
        ]
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.executemany(
                "INSERT OR REPLACE INTO results (experiment, config_hash, seed, project_version,"
                " status, config, counters, results, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )

    def set_meta(self, key: str, value: Any) -> None:
        """Set store-wide fact ``key`` to the JSON value ``value``."""
        with self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                (key, canonical_json(value)),
            )

    # --- reading ---------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        """All store-wide facts, by key."""
        out: dict[str, Any] = {}
        for key, value in self._conn.execute("SELECT key, value FROM meta ORDER BY key"):
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                raise ToolError(
                    f"{self.path}: malformed results store: meta key {key!r} is not valid JSON"
                ) from None
        return out

    def keys(self, status: str | None = None) -> set[tuple[str, str, int]]:
        """The keys of the stored rows (only those with ``status`` when given)."""
        sql = "SELECT experiment, config_hash, seed FROM results"
        args: tuple[str, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            args = (status,)
        return {(e, h, int(s)) for e, h, s in self._conn.execute(sql, args)}

    def rows(self, experiment: str | None = None) -> list[ResultRow]:
        """The stored rows, ordered by key (only ``experiment``'s when given)."""
        sql = (
            "SELECT experiment, config_hash, seed, project_version, status, config, counters,"
            " results, error FROM results"
        )
        args: tuple[str, ...] = ()
        if experiment is not None:
            sql += " WHERE experiment = ?"
            args = (experiment,)
        sql += " ORDER BY experiment, config_hash, seed"
        return [self._row(raw) for raw in self._conn.execute(sql, args)]

    def __iter__(self) -> Iterator[ResultRow]:
        return iter(self.rows())

    def __len__(self) -> int:
        (n,) = self._conn.execute("SELECT COUNT(*) FROM results").fetchone()
        return int(n)

    def _row(self, raw: tuple[Any, ...]) -> ResultRow:
        experiment, chash, seed, version, status, config, counters, results, error = raw
        where = f"row ({experiment!r}, {str(chash)[:12]}…, seed {seed})"
        parsed: list[Any] = []
        for name, text in (("config", config), ("counters", counters), ("results", results)):
            try:
                parsed.append(json.loads(text))
            except (json.JSONDecodeError, TypeError):
                raise ToolError(
                    f"{self.path}: malformed results store: {where}: column {name!r} is not "
                    "valid JSON"
                ) from None
            if not isinstance(parsed[-1], dict):
                raise ToolError(
                    f"{self.path}: malformed results store: {where}: column {name!r} is not a "
                    "JSON object"
                )
        try:
            row = ResultRow(
                experiment=str(experiment),
                config=parsed[0],
                seed=int(seed),
                counters=parsed[1],
                results=parsed[2],
                status=str(status),
                error=str(error),
                project_version=str(version),
            )
        except (ValueError, TypeError) as exc:
            raise ToolError(f"{self.path}: malformed results store: {where}: {exc}") from None
        if row.config_hash != chash:
            raise ToolError(
                f"{self.path}: malformed results store: {where}: config_hash does not match "
                "the stored config"
            )
        return row

    def to_json(self) -> dict[str, Any]:
        """The whole store as one JSON object (what ``results.json`` holds)."""
        return {
            "format": "kpkeys-sim results",
            "schema_version": SCHEMA_VERSION,
            "meta": self.meta(),
            "rows": [r.to_json() for r in self.rows()],
        }

    def dump_json(self) -> str:
        """:meth:`to_json` as text: indented, sorted keys, newline-terminated."""
        return json.dumps(self.to_json(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    uri = path.resolve().as_uri() + ("?mode=ro" if readonly else "?mode=rw")
    try:
        return sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise ToolError(f"{path}: cannot open results store: {exc}") from None


def validate_store(path: Path) -> None:
    """Check that ``path`` is a kpkeys-sim store this version can read; ``ToolError`` if not.

    The file is opened read-only: validation never modifies it.
    """
    if path.stat().st_size == 0:
        raise ToolError(f"{path}: not a kpkeys-sim results store: empty file")
    conn = _connect(path, readonly=True)
    try:
        try:
            (app_id,) = conn.execute("PRAGMA application_id").fetchone()
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            tables = {
                name: tuple(col[1] for col in conn.execute(f"PRAGMA table_info({name})"))
                for name in _TABLES
            }
        except sqlite3.DatabaseError as exc:
            raise ToolError(
                f"{path}: not a kpkeys-sim results store: not an SQLite database ({exc})"
            ) from None
    finally:
        conn.close()
    if app_id != APPLICATION_ID:
        raise ToolError(
            f"{path}: not a kpkeys-sim results store: SQLite application_id is {app_id:#x}, "
            f"expected {APPLICATION_ID:#x}"
        )
    if version > SCHEMA_VERSION:
        raise ToolError(
            f"{path}: results store schema version {version} is newer than this kpkeys-sim "
            f"reads ({SCHEMA_VERSION}); upgrade kpkeys-sim"
        )
    if version != SCHEMA_VERSION:
        raise ToolError(
            f"{path}: results store schema version {version} is not supported "
            f"(expected {SCHEMA_VERSION})"
        )
    for name, cols in _TABLES.items():
        if not tables[name]:
            raise ToolError(f"{path}: malformed results store: table {name!r} is missing")
        if tables[name] != cols:
            raise ToolError(
                f"{path}: malformed results store: table {name!r} has columns "
                f"{', '.join(tables[name])}, expected {', '.join(cols)}"
            )
