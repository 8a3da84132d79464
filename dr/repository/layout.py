"""Where things live inside a repository (docs/FORMAT.md, "Layout"). Pure: key arithmetic only."""

from __future__ import annotations

CONFIG = "config.json"
RUNS = "runs/"
DATA = "data/"
REPORTS = "reports/"
DRILLS = "drills/"
LOCKS = "locks/"


def manifest_key(run: str) -> str:
    return f"{RUNS}{run}.json"


def run_of_manifest_key(key: str) -> str | None:
    if key.startswith(RUNS) and key.endswith(".json") and "/" not in key[len(RUNS):]:
        return key[len(RUNS):-len(".json")]
    return None


def run_data_prefix(run: str) -> str:
    return f"{DATA}{run}/"


def run_of_data_key(key: str) -> str | None:
    if not key.startswith(DATA):
        return None
    rest = key[len(DATA):]
    return rest.split("/", 1)[0] if "/" in rest else None


#: The hub DB artifact's file name by dump format (dr.hubdb.info.DbInfo.dump_format).
HUB_DB_NAMES = {"sqlite": "jupyterhub.sqlite", "pg_dump-custom": "jupyterhub.pgdump", "mysqldump-sql": "jupyterhub.sql"}


def hub_db_key(run: str, encrypted: bool, dump_format: str = "sqlite") -> str:
    return f"{DATA}{run}/hub/{HUB_DB_NAMES[dump_format]}.zst" + (".age" if encrypted else "")


def hub_secret_key(run: str, encrypted: bool) -> str:
    return f"{DATA}{run}/hub/secret.json" + (".age" if encrypted else "")


def volume_archive_key(run: str, volume: str, encrypted: bool) -> str:
    return f"{DATA}{run}/volumes/{volume}.tar.zst" + (".age" if encrypted else "")


def volume_index_key(run: str, volume: str, encrypted: bool) -> str:
    return f"{DATA}{run}/volumes/{volume}.index.jsonl.zst" + (".age" if encrypted else "")


def report_key(run: str, ext: str) -> str:
    return f"{REPORTS}{run}.{ext}"


def drill_key(drill: str, name: str) -> str:
    return f"{DRILLS}{drill}/{name}"


def lock_key(lock_id: str) -> str:
    return f"{LOCKS}{lock_id}.json"
