"""The vocabulary of jdr as plain data: runs, manifests, artifacts, volumes, file index entries.

Everything here is pure: dataclasses with conversion to and from the JSON documents of docs/FORMAT.md.
A manifest is the record of one backup run; it names every artifact the run needs, with size and SHA-256.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

from dr.util.timefmt import iso, parse_iso

MANIFEST_FORMAT = "jdr-manifest"
MANIFEST_VERSION = 1

RunStatus = Literal["complete", "partial", "failed"]
#: ``absent``: a hub user with no volume at all (never logged in); nothing to lose, so not a failure.
ItemStatus = Literal["ok", "failed", "skipped", "absent"]
Method = Literal["archive", "snapshot", "snapshot+archive"]
METHODS: tuple[str, ...] = ("archive", "snapshot", "snapshot+archive")

_RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")


def new_run_id(now: datetime) -> str:
    """A run id sorts by time: ``20261125T191440Z-a1b2c3`` (UTC, then 24 random bits)."""
    return now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def is_run_id(text: str) -> bool:
    return bool(_RUN_ID.match(text))


def run_time(run_id: str) -> datetime:
    """The start time encoded in a run id."""
    return datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def volume_key(user: str | None, server: str = "", claim: str | None = None, home: str | None = None) -> str:
    """A stable, filesystem- and URL-safe key for one volume of a run.

    Usernames may hold any character (``alice@example.com``, ``Émile``), so the key is a readable ASCII
    slug plus a short hash of the exact identity; two users never share a key. A volume without a user is
    identified by its PVC (``claim``) or, on a local deployment, by its home directory (``home``, an
    orphan home).
    """
    if user is not None:
        ident, readable = f"user:{user}\0server:{server}", user
    elif home is not None:
        ident, readable = f"home:{home}", f"home-{home.rstrip('/').rsplit('/', 1)[-1]}"
    else:
        ident, readable = f"claim:{claim}", f"pvc-{claim}"
    if server:
        readable = f"{readable}-{server}"
    slug = re.sub(r"[^a-z0-9]+", "-", (readable or "").lower()).strip("-")[:40] or "x"
    digest = hashlib.sha256(ident.encode("utf-8")).hexdigest()[:8]
    return f"{slug}-{digest}"


@dataclass(frozen=True)
class Artifact:
    """One immutable object in the repository, as a manifest names it."""

    key: str  # path of the object inside the repository
    size: int  # bytes stored (after compression and encryption)
    sha256: str  # hex digest of the stored bytes
    encoding: str = "zstd"  # "zstd", "zstd+age", "age", "identity"
    run: str = ""  # the run that wrote it (differs from the manifest's run when reused)
    # Fingerprints of the age recipients it is encrypted to (any one of their keys opens it); empty when
    # not encrypted, or encrypted by a jdr that did not record them.
    recipients: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"key": self.key, "size": self.size, "sha256": self.sha256,
                             "encoding": self.encoding, "run": self.run}
        if self.recipients:
            d["recipients"] = list(self.recipients)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Artifact:
        return cls(key=str(d["key"]), size=int(d["size"]), sha256=str(d["sha256"]),
                   encoding=str(d.get("encoding", "zstd")), run=str(d.get("run", "")),
                   recipients=tuple(str(r) for r in d.get("recipients") or ()))


@dataclass(frozen=True)
class HubItem:
    """The hub's part of a run: the database (an SQLite file, or a PostgreSQL/MySQL dump), and (on
    Kubernetes) the ``hub`` Secret."""

    db: Artifact | None
    status: ItemStatus = "ok"
    alembic_revision: str | None = None
    integrity: str = "ok"
    users: tuple[str, ...] = ()
    secret: Artifact | None = None
    db_bytes: int = 0  # size of the uncompressed database
    error: str | None = None
    db_kind: str = "sqlite"  # "sqlite", "postgresql" or "mysql"
    server_version: str | None = None  # the database server's version (server databases only)
    dump_format: str = "sqlite"  # "sqlite" (the file), "pg_dump-custom" or "mysqldump-sql"

    def to_dict(self) -> dict[str, Any]:
        d = {
            "status": self.status,
            "db": self.db.to_dict() if self.db else None,
            "db_bytes": self.db_bytes,
            "alembic_revision": self.alembic_revision,
            "integrity": self.integrity,
            "users": list(self.users),
            "secret": self.secret.to_dict() if self.secret else None,
            "error": self.error,
        }
        if self.db_kind != "sqlite":  # SQLite runs keep the manifest they always had
            d.update(db_kind=self.db_kind, server_version=self.server_version, dump_format=self.dump_format)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HubItem:
        return cls(
            db=Artifact.from_dict(d["db"]) if d.get("db") else None,
            status=d.get("status", "ok"),
            alembic_revision=d.get("alembic_revision"),
            integrity=d.get("integrity", "ok"),
            users=tuple(d.get("users", ())),
            secret=Artifact.from_dict(d["secret"]) if d.get("secret") else None,
            db_bytes=int(d.get("db_bytes", 0)),
            error=d.get("error"),
            db_kind=d.get("db_kind", "sqlite"),
            server_version=d.get("server_version"),
            dump_format=d.get("dump_format", "sqlite"),
        )


@dataclass(frozen=True)
class Snapshot:
    """A CSI VolumeSnapshot taken by a run."""

    name: str
    namespace: str
    content_name: str = ""
    handle: str = ""
    restore_size: str = ""
    snapshot_class: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "namespace": self.namespace, "content_name": self.content_name,
                "handle": self.handle, "restore_size": self.restore_size,
                "snapshot_class": self.snapshot_class}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Snapshot:
        return cls(**{k: str(d.get(k, "")) for k in
                      ("name", "namespace", "content_name", "handle", "restore_size", "snapshot_class")})


def volume_label(user: str | None, server: str, source: dict[str, Any], key: str) -> str:
    """How a volume is named in messages: ``alice``, ``bob:analysis``, ``pvc:<claim>`` for a PVC without a
    user, ``home:<path>`` for an orphan home directory."""
    if user is None:
        if "pvc" not in source and source.get("path"):
            return f"home:{source['path']}"
        return f"pvc:{source.get('pvc', {}).get('name', key)}"
    return f"{user}:{server}" if server else user


@dataclass(frozen=True)
class VolumeItem:
    """One user's volume (a home directory or a PVC) in a run."""

    key: str
    user: str | None  # raw JupyterHub username; None for a PVC that maps to no user
    server: str = ""  # named server, "" for the default server
    status: ItemStatus = "ok"
    method: str = "archive"
    source: dict[str, Any] = field(default_factory=dict)  # where it came from (path, or PVC spec)
    archive: Artifact | None = None
    index: Artifact | None = None
    snapshot: Snapshot | None = None
    fingerprint: str = ""  # of the file listing, used to skip unchanged volumes
    files: int = 0
    bytes: int = 0  # bytes of file content read
    reused_from: str | None = None  # run id whose artifacts this item references unchanged
    warnings: tuple[str, ...] = ()
    error: str | None = None
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return volume_label(self.user, self.server, self.source, self.key)

    def artifacts(self) -> list[Artifact]:
        return [a for a in (self.archive, self.index) if a is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "user": self.user, "server": self.server, "status": self.status,
            "method": self.method, "source": self.source,
            "archive": self.archive.to_dict() if self.archive else None,
            "index": self.index.to_dict() if self.index else None,
            "snapshot": self.snapshot.to_dict() if self.snapshot else None,
            "fingerprint": self.fingerprint, "files": self.files, "bytes": self.bytes,
            "reused_from": self.reused_from, "warnings": list(self.warnings), "error": self.error,
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VolumeItem:
        return cls(
            key=str(d["key"]), user=d.get("user"), server=str(d.get("server") or ""),
            status=d.get("status", "ok"), method=str(d.get("method", "archive")),
            source=dict(d.get("source") or {}),
            archive=Artifact.from_dict(d["archive"]) if d.get("archive") else None,
            index=Artifact.from_dict(d["index"]) if d.get("index") else None,
            snapshot=Snapshot.from_dict(d["snapshot"]) if d.get("snapshot") else None,
            fingerprint=str(d.get("fingerprint", "")), files=int(d.get("files", 0)),
            bytes=int(d.get("bytes", 0)), reused_from=d.get("reused_from"),
            warnings=tuple(d.get("warnings", ())), error=d.get("error"),
            seconds=float(d.get("seconds", 0.0)),
        )


@dataclass(frozen=True)
class Manifest:
    """The record of one backup run. Written last; a run without a manifest does not exist."""

    run: str
    started: datetime
    finished: datetime
    status: RunStatus
    deployment: dict[str, Any]
    hub: HubItem | None
    volumes: tuple[VolumeItem, ...]
    jdr_version: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    failures: tuple[str, ...] = ()
    # How the manifest stood against the configured MAC keys when it was read (dr/crypto/mac.py:
    # verified, unsigned, unknown-key, invalid; "" when no MAC key is configured), or "misnamed": stored
    # under another run's name than the one it holds. Not part of the document: the ``mac`` member
    # itself is written and checked by the repository (Repository.load_manifest, require_authentic).
    authenticity: str = field(default="", compare=False)
    # The MAC key id the manifest names; for "misnamed", the run id it claims to be.
    mac_key: str = field(default="", compare=False)

    def with_authenticity(self, status: str, key: str = "") -> Manifest:
        return replace(self, authenticity=status, mac_key=key)

    def volume_for(self, user: str, server: str = "") -> VolumeItem | None:
        for v in self.volumes:
            if v.user == user and v.server == server:
                return v
        return None

    def artifacts(self) -> list[Artifact]:
        """Every artifact this run needs, including those it reuses from earlier runs."""
        found: list[Artifact] = []
        if self.hub is not None:
            found += [a for a in (self.hub.db, self.hub.secret) if a is not None]
        for v in self.volumes:
            found += v.artifacts()
        return found

    def with_status(self, status: RunStatus) -> Manifest:
        return replace(self, status=status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "run": self.run,
            "started": iso(self.started),
            "finished": iso(self.finished),
            "status": self.status,
            "jdr_version": self.jdr_version,
            "deployment": self.deployment,
            "options": self.options,
            "hub": self.hub.to_dict() if self.hub else None,
            "volumes": [v.to_dict() for v in self.volumes],
            "failures": list(self.failures),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        if d.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"not a jdr manifest (format={d.get('format')!r})")
        if int(d.get("version", 0)) > MANIFEST_VERSION:
            raise ValueError(f"manifest version {d.get('version')} is newer than this jdr understands "
                             f"({MANIFEST_VERSION}); upgrade jdr")
        return cls(
            run=str(d["run"]),
            started=parse_iso(d["started"]),
            finished=parse_iso(d["finished"]),
            status=d["status"],
            deployment=dict(d.get("deployment") or {}),
            hub=HubItem.from_dict(d["hub"]) if d.get("hub") else None,
            volumes=tuple(VolumeItem.from_dict(v) for v in d.get("volumes", ())),
            jdr_version=str(d.get("jdr_version", "")),
            options=dict(d.get("options") or {}),
            failures=tuple(d.get("failures", ())),
        )


# --- the per-volume file index -------------------------------------------------------------------

EntryType = Literal["file", "dir", "symlink", "hardlink"]


@dataclass(frozen=True)
class IndexEntry:
    """One entry of a volume archive, as recorded in its index (docs/FORMAT.md, "File index").

    ``path`` is relative to the volume root, as bytes (names need not be UTF-8). ``link`` is the
    symlink target, or for a hard link the path of the entry it shares content with.
    """

    path: bytes
    type: EntryType
    size: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime: float = 0.0
    sha256: str = ""
    link: bytes = b""
    #: Seekable archives (docs/FORMAT.md, "Seekable archive"): the offset in the compressed archive of
    #: the zstd frame holding this entry's tar header, and the header's offset in that frame's
    #: decompressed bytes. -1 in indexes of archives written before frames were recorded. Where an entry
    #: lies is not part of what it is: equality ignores both.
    frame: int = field(default=-1, compare=False)
    frame_offset: int = field(default=-1, compare=False)

    @property
    def name(self) -> str:
        return self.path.decode("utf-8", "surrogateescape")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        _put_bytes(d, "path", self.path)
        d.update(type=self.type, size=self.size, mode=self.mode, uid=self.uid, gid=self.gid,
                 mtime=self.mtime)
        if self.sha256:
            d["sha256"] = self.sha256
        if self.link:
            _put_bytes(d, "link", self.link)
        if self.frame >= 0:
            d.update(frame=self.frame, frame_offset=self.frame_offset)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexEntry:
        return cls(
            path=_get_bytes(d, "path"), type=d["type"], size=int(d.get("size", 0)),
            mode=int(d.get("mode", 0)), uid=int(d.get("uid", 0)), gid=int(d.get("gid", 0)),
            mtime=float(d.get("mtime", 0.0)), sha256=str(d.get("sha256", "")),
            link=_get_bytes(d, "link") if ("link" in d or "link_b64" in d) else b"",
            frame=int(d.get("frame", -1)), frame_offset=int(d.get("frame_offset", -1)),
        )


def _put_bytes(d: dict[str, Any], name: str, value: bytes) -> None:
    """Names are stored as UTF-8 text when they are valid UTF-8, else base64 under ``<name>_b64``."""
    try:
        d[name] = value.decode("utf-8")
    except UnicodeDecodeError:
        d[name + "_b64"] = base64.b64encode(value).decode("ascii")


def _get_bytes(d: dict[str, Any], name: str) -> bytes:
    if name in d:
        return str(d[name]).encode("utf-8")
    return base64.b64decode(d[name + "_b64"])
