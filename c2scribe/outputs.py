"""What `c2scribe run` wrote, read back with DuckDB: for `c2scribe search` and reports.

An output directory holds one dataset per record type, as Parquet
(OUTPUT/<dataset>/date=.../sensor=.../part-*.parquet) or as JSON lines
(OUTPUT/<dataset>/<unit>.jsonl, --format jsonl), from one run or many. `Output` opens them
as one DuckDB view per dataset, with exactly the columns of the schema module (external
names: quote them in SQL, e.g. "url.original"), typed alike whatever the files were: files
of an older schema version lack newer columns (null), jsonl timestamps become timestamps and
base64 bodies bytes. Nothing is copied: DuckDB reads the files where they lie.
"""
from __future__ import annotations

import os
import re

from .ecs import DATASET_CLASSES, DATASETS_SHORT
from .errors import C2ScribeError
from .schema import fields_of

#: dataset directory -> record class
DATASETS = {short: DATASET_CLASSES[d] for short, d in DATASETS_SHORT.items()}

_SQL_TYPES = {"str": "VARCHAR", "ip": "VARCHAR", "json": "VARCHAR", "int": "BIGINT",
              "bool": "BOOLEAN", "ts": "TIMESTAMPTZ", "bytes": "BLOB", "strlist": "VARCHAR[]",
              "headers": "STRUCT(name VARCHAR, value VARCHAR)[]"}


class OutputError(C2ScribeError):
    """The directory is not a c2scribe output, or it cannot be read."""


def q(name: str) -> str:
    """A column name quoted for SQL."""
    return '"' + name.replace('"', '""') + '"'


def lit(s: str) -> str:
    """A string literal for SQL (file paths, which DuckDB's readers take as literals)."""
    return "'" + s.replace("'", "''") + "'"


def _duckdb():
    try:
        import duckdb
    except ImportError:
        raise OutputError("reading c2scribe outputs needs DuckDB: pip install "
                          "'c2scribe[pipeline]'") from None
    return duckdb


#: a finished Parquet file of a unit (transforms.parquet names them; temporaries start with ".")
PART_FILE = re.compile(r"^part-(?P<unit>.+)-\d{5,}\.parquet$")


def output_files(output_dir: str) -> list[tuple[str, str, str, str | None]]:
    """(dataset, path, format, partition sensor) of every finished dataset file of a
    pipeline output directory, in a stable order."""
    files = []
    for short in sorted(os.listdir(output_dir)):
        dataset = DATASETS_SHORT.get(short)
        base = os.path.join(output_dir, short)
        if dataset is None or not os.path.isdir(base):
            continue
        for root, dirs, names in os.walk(base):
            dirs.sort()
            sensor = None
            for part in os.path.relpath(root, base).split(os.sep):
                if part.startswith("sensor="):
                    sensor = part[len("sensor="):]
            for name in sorted(names):
                if name.startswith("."):
                    continue
                if PART_FILE.match(name):
                    files.append((dataset, os.path.join(root, name), "parquet", sensor))
                elif name.endswith(".jsonl") and root == base:
                    files.append((dataset, os.path.join(root, name), "jsonl", sensor))
    return files


class Output:
    """The datasets of one output directory, as DuckDB views named after them."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        if "://" in self.path:
            raise OutputError(f"{self.path}: only local output directories can be read here "
                              "(copy the output, or mount it)")
        if not os.path.isdir(self.path):
            raise OutputError(f"{self.path}: no such directory")
        self.con = _duckdb().connect()
        self.datasets: dict[str, str] = {}          # name -> "parquet" | "jsonl"
        found: dict[tuple[str, str], list[str]] = {}
        for dataset, path, fmt, _sensor in output_files(self.path):
            found.setdefault((dataset, fmt), []).append(path)
        for name, cls in DATASETS.items():
            parquet = found.get((cls.dataset, "parquet"))
            jsonl = found.get((cls.dataset, "jsonl"))
            if parquet:
                src = ("read_parquet([" + ", ".join(map(lit, parquet)) + "], "
                       "union_by_name = true, hive_partitioning = false)")
                self._view(name, cls, src, "parquet")
            elif jsonl:
                src = ("read_json([" + ", ".join(map(lit, jsonl)) + "], "
                       "format = 'newline_delimited', union_by_name = true, "
                       "maximum_object_size = 268435456)")
                self._view(name, cls, src, "jsonl")
        if not self.datasets:
            raise OutputError(f"{self.path}: no c2scribe output here (the --output directory "
                              "of `c2scribe run`, holding connection/, http/, c2/ ...)")

    def _view(self, name: str, cls: type, src: str, kind: str) -> None:
        try:
            have = {r[0] for r in self.con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()}
        except Exception as e:  # noqa: BLE001 - duckdb's own errors, told plainly
            raise OutputError(f"{self.path}/{name}: cannot be read: {e}") from None
        cols = []
        for _attr, ext, type_, _j in fields_of(cls):
            t = _SQL_TYPES[type_]
            if ext not in have:
                cols.append(f"CAST(NULL AS {t}) AS {q(ext)}")
            elif kind == "jsonl" and type_ == "bytes":
                cols.append(f"from_base64(CAST({q(ext)} AS VARCHAR)) AS {q(ext)}")
            elif kind == "jsonl" and type_ == "json":
                # jsonl holds the objects themselves: back to JSON text, as Parquet has it
                cols.append(f"CAST(to_json({q(ext)}) AS VARCHAR) AS {q(ext)}")
            elif kind == "jsonl" and type_ == "headers":
                # jsonl writes headers as [name, value] pairs
                cols.append(f"list_transform(CAST({q(ext)} AS VARCHAR[][]), lambda x: "
                            f"{{'name': x[1], 'value': x[2]}}) AS {q(ext)}")
            else:
                cols.append(f"CAST({q(ext)} AS {t}) AS {q(ext)}")
        self.con.execute(f"CREATE VIEW {name} AS SELECT {', '.join(cols)} FROM {src}")
        self.datasets[name] = kind

    def has(self, name: str) -> bool:
        return name in self.datasets

    def rows(self, sql: str, params: list | None = None) -> list[dict]:
        """The rows of a query, as dicts keyed by column name."""
        cur = self.con.execute(sql, params or [])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def count(self, name: str) -> int:
        return self.con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] if self.has(name) else 0

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "Output":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["DATASETS", "Output", "OutputError", "PART_FILE", "lit", "output_files", "q"]
