"""The SQLite results store (analysis/store.py): keys, hashes, round trips, foreign files."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from kpkeys_sim import __version__
from kpkeys_sim.analysis.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    ResultRow,
    ResultStore,
    canonical_json,
    config_hash,
)
from kpkeys_sim.errors import ToolError


def _row(exp: str = "bench", seed: int = 0, **config: object) -> ResultRow:
    cfg = {"series": "v6", "lazy_mmu_batching": True, "seed": seed, **config}
    return ResultRow(exp, cfg, seed, {"isb": 4, "pkey_reg_write": 2}, {"overhead_pct": 1.5})


def _new_store(tmp_path: Path, name: str = "r.sqlite") -> ResultStore:
    return ResultStore.create_or_open(tmp_path / name)


def test_config_hash_is_sha256_of_canonical_json_without_seed() -> None:
    """The config hash is SHA-256 of sorted, compact JSON of the config minus its seed."""
    cfg = {"b": 1, "a": [1, 2], "seed": 7, "é": "x"}
    text = '{"a":[1,2],"b":1,"é":"x"}'
    assert canonical_json({k: v for k, v in cfg.items() if k != "seed"}) == text
    assert config_hash(cfg) == hashlib.sha256(text.encode()).hexdigest()
    assert config_hash({**cfg, "seed": 8}) == config_hash(cfg)
    assert config_hash({**cfg, "b": 2}) != config_hash(cfg)


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    """A stored row reads back equal, with its key, version and JSON columns intact."""
    row = _row(seed=3)
    with _new_store(tmp_path) as st:
        st.put(row)
        (back,) = st.rows()
    assert back == row
    assert back.key == ("bench", config_hash(row.config), 3)
    assert back.project_version == __version__


def test_one_row_per_experiment_config_hash_seed(tmp_path: Path) -> None:
    """Putting a row with an existing key replaces it; other seeds/configs add rows."""
    with _new_store(tmp_path) as st:
        st.put(_row(seed=0))
        st.put(_row(seed=0))
        st.put(_row(seed=1))
        st.put(_row(seed=0, series="v7"))
        st.put(_row("kunit", seed=0))
        replaced = ResultRow("bench", _row(seed=0).config, 0, {}, {"overhead_pct": 9.0})
        st.put(replaced)
        assert len(st) == 4
        by_key = {r.key: r for r in st.rows("bench")}
    assert by_key[replaced.key].results == {"overhead_pct": 9.0}
    assert by_key[_row(seed=0, series="v7").key].results == {"overhead_pct": 1.5}


def test_keys_can_be_filtered_by_status(tmp_path: Path) -> None:
    """``keys(status='ok')`` leaves out failed rows (what a sweep resume skips)."""
    failed = ResultRow("sweep/x", {"seed": 1, "i": 1}, 1, status="failed", error="boom")
    with _new_store(tmp_path) as st:
        st.put(_row())
        st.put(failed)
        assert st.keys() == {_row().key, failed.key}
        assert st.keys(status="ok") == {_row().key}


def test_to_json_has_the_store_content(tmp_path: Path) -> None:
    """``dump_json`` holds the meta and every row, ordered by key, and parses back."""
    with _new_store(tmp_path) as st:
        st.put_many([_row(seed=2), _row(seed=1), _row("attack", seed=0)])
        st.set_meta("run", {"seed": 1, "quick": True})
        doc = json.loads(st.dump_json())
        rows = st.rows()
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["meta"] == {"run": {"seed": 1, "quick": True}}
    assert [(r["experiment"], r["seed"]) for r in doc["rows"]] == [
        ("attack", 0),
        ("bench", 1),
        ("bench", 2),
    ]
    assert doc["rows"] == [r.to_json() for r in rows]


def test_rows_reject_bad_values() -> None:
    """Rows refuse unknown statuses, non-integer counters and NaN results."""
    with pytest.raises(ValueError, match="bad status 'maybe'"):
        ResultRow("x", {}, 0, status="maybe")
    with pytest.raises(ValueError, match="counter 'isb'"):
        ResultRow("x", {}, 0, counters={"isb": 1.5})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="non-finite"):
        ResultRow("x", {}, 0, results={"a": [1.0, float("nan")]})


def test_missing_store_is_a_tool_error(tmp_path: Path) -> None:
    """Opening a store that does not exist names the file."""
    with pytest.raises(ToolError) as exc:
        ResultStore.open(tmp_path / "none.sqlite")
    assert str(exc.value) == f"{tmp_path / 'none.sqlite'}: no such results store"


def test_not_a_database_is_a_tool_error_and_untouched(tmp_path: Path) -> None:
    """A file that is not SQLite is refused with one line and left byte-identical."""
    p = tmp_path / "x.sqlite"
    p.write_bytes(b"this is not a database, just text\n" * 40)
    before = p.read_bytes()
    with pytest.raises(ToolError) as exc:
        ResultStore.open(p)
    assert str(exc.value).startswith(f"{p}: not a kpkeys-sim results store: not an SQLite database")
    assert "\n" not in str(exc.value)
    with pytest.raises(ToolError):
        ResultStore.create_or_open(p)
    assert p.read_bytes() == before


def test_empty_file_is_refused(tmp_path: Path) -> None:
    """A zero-byte file is not mistaken for an empty store."""
    p = tmp_path / "empty.sqlite"
    p.touch()
    with pytest.raises(ToolError, match="empty file"):
        ResultStore.open(p)
    assert p.stat().st_size == 0


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    """An SQLite database of another application is named by its application_id."""
    p = tmp_path / "other.sqlite"
    conn = sqlite3.connect(p)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(ToolError) as exc:
        ResultStore.open(p)
    assert str(exc.value) == (
        f"{p}: not a kpkeys-sim results store: SQLite application_id is 0x0, "
        f"expected {APPLICATION_ID:#x}"
    )


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A store written by a newer schema says so instead of misreading it."""
    p = tmp_path / "new.sqlite"
    _new_store(tmp_path, "new.sqlite").close()
    conn = sqlite3.connect(p)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(ToolError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        ResultStore.open(p)


def test_missing_table_and_wrong_columns_are_named(tmp_path: Path) -> None:
    """A store with a dropped table or changed columns is named as malformed."""
    p = tmp_path / "m.sqlite"
    _new_store(tmp_path, "m.sqlite").close()
    conn = sqlite3.connect(p)
    conn.execute("DROP TABLE meta")
    conn.commit()
    conn.close()
    with pytest.raises(ToolError) as exc:
        ResultStore.open(p)
    assert str(exc.value) == f"{p}: malformed results store: table 'meta' is missing"
    conn = sqlite3.connect(p)
    conn.execute("CREATE TABLE meta (key TEXT, val TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(ToolError, match="table 'meta' has columns key, val, expected key, value"):
        ResultStore.open(p)


def test_malformed_row_json_is_named(tmp_path: Path) -> None:
    """A row whose JSON column does not parse is reported with the row and the column."""
    p = tmp_path / "bad.sqlite"
    with _new_store(tmp_path, "bad.sqlite") as st:
        st.put(_row())
    conn = sqlite3.connect(p)
    conn.execute("UPDATE results SET counters = '{oops'")
    conn.commit()
    conn.close()
    with ResultStore.open(p) as st, pytest.raises(ToolError) as exc:
        st.rows()
    msg = str(exc.value)
    assert msg.startswith(f"{p}: malformed results store: row ('bench', ")
    assert msg.endswith("column 'counters' is not valid JSON")


def test_tampered_config_is_detected_by_its_hash(tmp_path: Path) -> None:
    """A row whose config no longer matches its config_hash is refused."""
    p = tmp_path / "t.sqlite"
    with _new_store(tmp_path, "t.sqlite") as st:
        st.put(_row())
    conn = sqlite3.connect(p)
    conn.execute("""UPDATE results SET config = '{"series":"v5"}'""")
    conn.commit()
    conn.close()
    with ResultStore.open(p) as st, pytest.raises(ToolError, match="config_hash does not match"):
        st.rows()


def test_readonly_open_cannot_write(tmp_path: Path) -> None:
    """``open`` without ``writable`` is read-only at the SQLite level."""
    with _new_store(tmp_path) as st:
        st.put(_row())
    with ResultStore.open(tmp_path / "r.sqlite") as st, pytest.raises(sqlite3.OperationalError):
        st.put(_row(seed=5))
