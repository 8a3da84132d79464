"""The pages and actions of ``jdr serve``.

Authorization, on every request (:meth:`BaseHandler.subject`): the user comes from the hub's OAuth
identity (``current_user``), never from the URL. The ``<user>`` in a URL only names whose files are
asked for; it must be the identity's own name, unless the identity holds the hub scope ``admin:users``.
Anything else is 403 before any repository read. Files are addressed by run, server and entry id (the
position in the run's index); the path shown comes from the index, never from the client. Every POST
carries the XSRF token (tornado ``xsrf_cookies``, patched by HubOAuth to its own token).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
import urllib.parse
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import tornado.web
from jupyterhub.services.auth import HubOAuthenticated

from dr.errors import JdrError, NotFoundError
from dr.model import IndexEntry, Manifest, VolumeItem
from dr.operations.self_service import TooLargeError
from dr.serve import preview
from dr.serve.audit import AuditRecord
from dr.serve.zipstream import Member, ZipPlan

log = logging.getLogger(__name__)

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'self'")
_END = object()


class BaseHandler(HubOAuthenticated, tornado.web.RequestHandler):  # type: ignore[misc]
    """Security headers, the hub identity, and error pages that never show data."""

    retry_after = 0  # seconds, for a 429 answer (send_error clears headers set before it)

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("X-Frame-Options", "SAMEORIGIN")
        self.set_header("Cache-Control", "no-store")

    @property
    def ctx(self) -> Any:  # dr.serve.app.ServeContext (not imported: app imports this module)
        return self.settings["jdr"]

    @property
    def prefix(self) -> str:
        return cast(str, self.settings["prefix"])

    def identity(self) -> tuple[str, bool]:
        """(hub user name, administrator?) of the request; administrator = the token holds
        ``admin:users`` (granted only to hub admins, and only through ``oauth_client_allowed_scopes``)."""
        model = self.current_user
        if not isinstance(model, dict) or not model.get("name"):
            raise tornado.web.HTTPError(403)
        return str(model["name"]), "admin:users" in set(model.get("scopes") or ())

    def subject(self, user: str) -> str:
        """The user whose files this request may touch: ``user`` from the URL, if it is the identity's
        own name or the identity is an administrator; else 403 (nothing read)."""
        me, admin = self.identity()
        user = urllib.parse.unquote(user)
        if user != me and not admin:
            log.warning("refused: %s asked for %s's files (%s %s)", me, user, self.request.method,
                        self.request.path)
            raise tornado.web.HTTPError(403, "not your files")
        return user

    def base_ns(self) -> dict[str, Any]:
        me, admin = self.identity()
        return {"me": me, "admin": admin, "prefix": self.prefix, "q": quote, "fmt_size": fmt_size,
                "fmt_time": self.fmt_time}

    def fmt_time(self, ts: Any) -> str:
        from datetime import UTC, datetime

        if isinstance(ts, int | float):
            ts = datetime.fromtimestamp(ts, UTC)
        return cast(str, ts.astimezone(self.ctx.tz).strftime("%Y-%m-%d %H:%M %Z"))

    def user_url(self, user: str) -> str:
        return f"{self.prefix}u/{quote(user)}/"

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        reason = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message and status_code < 500:
            reason = exc.log_message
        elif isinstance(exc, NotFoundError):
            status_code, reason = 404, exc.message
            self.set_status(404)
        elif isinstance(exc, JdrError):  # the repository cannot be read (yet): say so, details in the log
            status_code, reason = 503, "the backups cannot be read right now; try again later"
            self.set_status(503)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        if status_code == 429 and self.retry_after:
            self.set_header("Retry-After", str(self.retry_after))
        try:
            ns = self.base_ns()
        except tornado.web.HTTPError:
            ns = {"me": "", "admin": False, "prefix": self.prefix, "q": quote, "fmt_size": fmt_size,
                  "fmt_time": str}
        self.finish(self.render_string("error.html", status=status_code, message=reason, **ns))

    def check_run(self, user: str, run: str, server: str) -> tuple[Manifest, VolumeItem]:
        try:
            return cast(tuple[Manifest, VolumeItem], self.ctx.service.volume(user, run, server))
        except NotFoundError as e:
            raise tornado.web.HTTPError(404, e.message) from None

    def check_entry(self, item: VolumeItem, entry_id: str) -> IndexEntry:
        try:
            return cast(IndexEntry, self.ctx.service.entry(item, int(entry_id)))
        except (NotFoundError, ValueError):
            raise tornado.web.HTTPError(404, "no such file in this backup") from None

    def check_selection(self, item: VolumeItem, entry_id: str) -> tuple[IndexEntry, list[IndexEntry]]:
        """The entry and what a download or restore of it covers; an id that is no entry: 404."""
        try:
            return cast(tuple[IndexEntry, list[IndexEntry]], self.ctx.service.selection(item, int(entry_id)))
        except (NotFoundError, ValueError):
            raise tornado.web.HTTPError(404, "no such file in this backup") from None

    async def blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.ctx.executor, fn, *args)


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


class HomeHandler(BaseHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        me, _ = self.identity()
        self.redirect(self.user_url(me))


class RunsHandler(BaseHandler):
    @tornado.web.authenticated
    async def get(self, user: str) -> None:
        user = self.subject(user)
        volumes = await self.blocking(self.ctx.service.volumes_of, user)
        users: list[str] = []
        _, admin = self.identity()
        if admin:
            users = await self.blocking(_known_users, self.ctx)
        self.render("runs.html", user=user, volumes=volumes, users=users, **self.base_ns())


class SearchHandler(BaseHandler):
    @tornado.web.authenticated
    async def get(self, user: str) -> None:
        user = self.subject(user)
        text = self.get_argument("q", "")[:200]
        versions = await self.blocking(self.ctx.service.search, user, text) if text.strip() else []
        self.render("search.html", user=user, text=text, versions=versions, **self.base_ns())


class FilesHandler(BaseHandler):
    @tornado.web.authenticated
    async def get(self, user: str, run: str) -> None:
        user = self.subject(user)
        server = self.get_argument("server", "")
        manifest, item = await self.blocking(self.check_run, user, run, server)
        entries: list[IndexEntry] = await self.blocking(self.ctx.service.entries, item)
        dir_id = self.get_argument("dir", "0")
        try:
            d = int(dir_id)
        except ValueError:
            raise tornado.web.HTTPError(404) from None
        if not 0 <= d < len(entries) or entries[d].type != "dir":
            raise tornado.web.HTTPError(404, "no such folder in this backup")
        parent = entries[d].path
        children = [(i, e) for i, e in enumerate(entries)
                    if i and _parent(e.path) == parent]
        children.sort(key=lambda ie: (ie[1].type != "dir", ie[1].name.lower()))
        crumbs = _crumbs(entries, parent)
        tree_size = _folder_sizes(entries, [d, *(i for i, e in children if e.type == "dir")])
        self.render("files.html", user=user, run=run, server=server, manifest=manifest, item=item,
                    children=children, crumbs=crumbs, here=d, tree_size=tree_size, previewable=preview.previewable,
                    basename=_basename, **self.base_ns())


class PreviewHandler(BaseHandler):
    @tornado.web.authenticated
    async def get(self, user: str, run: str, entry: str) -> None:
        user = self.subject(user)
        server = self.get_argument("server", "")
        manifest, item = await self.blocking(self.check_run, user, run, server)
        e = self.check_entry(item, entry)
        if e.type != "file" or not preview.previewable(e.name, e.size):
            raise tornado.web.HTTPError(404, "no preview for this file")
        data = await self.blocking(_read_one, self.ctx.service, manifest, item, e)
        body = preview.render(e.name, data)
        self.render("preview.html", user=user, run=run, server=server, entry=e, entry_id=int(entry),
                    body=body, **self.base_ns())


class DownloadHandler(BaseHandler):
    """A file as itself, a folder as a zip; streamed from a worker thread through a bounded queue."""

    @tornado.web.authenticated
    async def get(self, user: str, run: str, entry: str) -> None:
        user = self.subject(user)
        me, _ = self.identity()
        server = self.get_argument("server", "")
        manifest, item = await self.blocking(self.check_run, user, run, server)
        top, chosen = await self.blocking(self.check_selection, item, entry)
        rec = partial(AuditRecord, action="download", actor=me, user=user, run=run, server=server,
                      path=top.name, entry=int(entry))
        files = [e for e in chosen if e.type == "file"]
        size = sum(e.size for e in files)
        limit = self.ctx.settings.max_download_bytes
        if limit and size > limit:
            self.ctx.audit.record(rec(outcome="refused", detail="size limit", bytes=size))
            raise tornado.web.HTTPError(413, f"{top.name} is {fmt_size(size)}, more than a self-service "
                                             f"download may be ({fmt_size(limit)}): ask an administrator")
        wait = self.ctx.downloads.take(me)
        if wait:
            self.ctx.audit.record(rec(outcome="refused", detail="rate limit"))
            self.retry_after = int(wait) + 1
            raise tornado.web.HTTPError(429, f"too many downloads; try again in {int(wait) // 60 + 1} min")
        name = _basename(top.name)
        plan: ZipPlan | None = None
        if top.type == "file":
            self.set_header("Content-Type", "application/octet-stream")
            self.set_header("Content-Length", str(top.size))
            disposition = name
        else:
            # The zip's exact size, from the index alone, before the first byte: the browser shows progress.
            plan = ZipPlan(_zip_members(chosen, top.path, name))
            self.set_header("Content-Type", "application/zip")
            self.set_header("Content-Length", str(plan.size))
            disposition = (name if top.path != b"." else "home") + ".zip"
        self.set_header("Content-Disposition", "attachment; filename*=UTF-8''" + quote(disposition))
        pipe = _Pipe()

        def produce() -> None:
            try:
                pairs = self.ctx.service.read_files(manifest, item, files)
                if plan is None:
                    for _, chunks in pairs:
                        for chunk in chunks:
                            pipe.put(chunk)
                else:
                    plan.write(((e.path, chunks) for e, chunks in pairs), pipe.put)
                pipe.put(_END)
            except _Cancelled:
                pass
            except BaseException as exc:  # handed to the request, which aborts the response
                pipe.put(exc, final=True)

        # Recorded when it starts (the client may have every byte before the handler ends); a download
        # that fails midway is recorded again, as failed.
        self.ctx.audit.record(rec(outcome="ok", files=len(files), bytes=size))
        fut = asyncio.get_running_loop().run_in_executor(self.ctx.executor, produce)
        sent = 0
        try:
            while True:
                chunk = await self.blocking(pipe.q.get)
                if chunk is _END:
                    break
                if isinstance(chunk, BaseException):
                    raise chunk
                self.write(chunk)
                sent += len(chunk)
                await self.flush()
        except (JdrError, OSError, tornado.iostream.StreamClosedError) as exc:
            log.error("download of %s for %s failed: %s", top.name, user, exc)
            self.ctx.audit.record(rec(outcome="failed", detail=str(exc)[:300], files=len(files),
                                              bytes=sent))
            pipe.cancel()
            await fut
            if not self._headers_written:
                raise tornado.web.HTTPError(500, "the backup could not be read") from None
            self.request.connection.close()  # type: ignore[union-attr]  # truncated, never "complete"
            return
        await fut
        self.finish()


class RestoreHandler(BaseHandler):
    """POST: start a restore of the entry into the user's home; redirects to the job's page."""

    @tornado.web.authenticated
    async def post(self, user: str, run: str, entry: str) -> None:
        user = self.subject(user)
        me, _ = self.identity()
        server = self.get_argument("server", "")
        replace = self.get_argument("mode", "into") == "replace"
        manifest, item = await self.blocking(self.check_run, user, run, server)
        top, chosen = await self.blocking(self.ctx.service.selection, item, int(entry))
        size = sum(e.size for e in chosen if e.type == "file")
        rec = partial(AuditRecord, action="restore", actor=me, user=user, run=run, server=server,
                      path=top.name, entry=int(entry))
        limit = self.ctx.settings.max_restore_bytes
        if limit and size > limit:
            self.ctx.audit.record(rec(outcome="refused", detail="size limit", bytes=size))
            raise tornado.web.HTTPError(413, f"{top.name} is {fmt_size(size)}, more than a self-service "
                                             f"restore may be ({fmt_size(limit)}): ask an administrator")
        if replace and top.type != "file":
            raise tornado.web.HTTPError(400, "only a single file can replace the current one")
        if not self.ctx.gate.enter(user):
            self.ctx.audit.record(rec(outcome="refused", detail="a restore is running"))
            raise tornado.web.HTTPError(409, "a restore of your files is already running; wait for it to end")
        try:
            wait = self.ctx.restores.take(me)
            if wait:
                self.ctx.audit.record(rec(outcome="refused", detail="rate limit"))
                self.retry_after = int(wait) + 1
                raise tornado.web.HTTPError(429, f"too many restores; try again in {int(wait) // 60 + 1} min")
            job = self.ctx.jobs.new(user=user, actor=me, run=run, server=server, path=top.name, replace=replace,
                                    total_bytes=size)
        except BaseException:
            self.ctx.gate.leave(user)
            raise

        def work() -> None:
            def progress(files: int, nbytes: int) -> None:
                job.files, job.bytes = files, nbytes

            # The audit record is written, and the gate left, before the job says it ended: whoever sees
            # the end sees the record, and may start the next restore.
            state = "failed"
            try:
                result = self.ctx.service.restore(user, manifest, item, top,
                                                  into_base=self.ctx.settings.restore_into, tz=self.ctx.tz,
                                                  replace=replace, limit=limit, progress=progress)
                job.files, job.bytes = result.files, result.bytes
                job.target, job.previous = result.target, result.previous or ""
                self.ctx.audit.record(rec(outcome="ok", files=result.files, bytes=result.bytes,
                                          target=result.target))
                state = "done"
            except TooLargeError as e:
                job.error = e.message
                self.ctx.audit.record(rec(outcome="refused", detail=e.message))
            except Exception as e:
                log.exception("self-service restore for %s failed", user)
                job.error = e.message if isinstance(e, JdrError) else "the restore failed; see the service log"
                self.ctx.audit.record(rec(outcome="failed", detail=str(e)[:300]))
            finally:
                job.ended = time.time()
                self.ctx.gate.leave(user)
                job.state = state

        self.ctx.executor.submit(work)
        self.redirect(f"{self.user_url(user)}job/{job.id}", status=303)


class JobHandler(BaseHandler):
    @tornado.web.authenticated
    def get(self, user: str, job: str) -> None:
        user = self.subject(user)
        j = self.ctx.jobs.get(job, user)
        if j is None:
            raise tornado.web.HTTPError(404, "no such restore")
        self.render("job.html", user=user, job=j, **self.base_ns())


class JobJsonHandler(BaseHandler):
    @tornado.web.authenticated
    def get(self, user: str, job: str) -> None:
        user = self.subject(user)
        j = self.ctx.jobs.get(job, user)
        if j is None:
            raise tornado.web.HTTPError(404, "no such restore")
        self.set_header("Content-Type", "application/json")
        self.finish(j.to_dict())


class AuditHandler(BaseHandler):
    """The last entries of the audit log (administrators only)."""

    @tornado.web.authenticated
    async def get(self) -> None:
        _, admin = self.identity()
        if not admin:
            raise tornado.web.HTTPError(403, "administrators only")
        records = await self.blocking(_audit_tail, self.ctx.audit.path, 500)
        self.render("audit.html", records=records, **self.base_ns())


# --- helpers -------------------------------------------------------------------------------------------


def quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def fmt_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _parent(path: bytes) -> bytes:
    cut = path.rfind(b"/")
    return b"." if cut < 0 else path[:cut]


def _basename(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _crumbs(entries: list[IndexEntry], path: bytes) -> list[tuple[int, str]]:
    """(entry id, name) of every folder from the home down to ``path``."""
    ids = {e.path: i for i, e in enumerate(entries) if e.type == "dir"}
    out = [(ids.get(b".", 0), "home")]
    if path == b".":
        return out
    parts = path.split(b"/")
    for n in range(1, len(parts) + 1):
        p = b"/".join(parts[:n])
        if p in ids:
            out.append((ids[p], os.fsdecode(parts[n - 1])))
    return out


def _folder_sizes(entries: list[IndexEntry], ids: list[int]) -> dict[int, int]:
    """Bytes of the files under each folder of ``ids`` (entry ids): what its zip download holds, so the
    page knows a download's size before it starts."""
    want = {entries[i].path: i for i in ids}
    out = dict.fromkeys(ids, 0)
    for e in entries:
        if e.type != "file":
            continue
        p = e.path
        while True:
            p = _parent(p)
            if p in want:
                out[want[p]] += e.size
            if p == b".":
                break
    return out


def _zip_members(chosen: list[IndexEntry], base: bytes, top_name: str) -> list[Member]:
    """The zip members of a folder download, in the index's (the archive's) order, under one folder named
    like the downloaded one ("home" for the whole home). Files, folders, and symbolic links as links (the
    target is the index's text: never resolved). Hard links are left out: their content is another
    member's, which the single pass over the archive has already sent."""
    prefix = b"home" if base == b"." else os.fsencode(top_name)
    out = []
    for e in chosen:
        if e.type not in ("file", "dir", "symlink"):
            continue
        rel = b"" if e.path == base else (e.path if base == b"." else e.path[len(base) + 1:])
        name = prefix + b"/" + rel
        if e.type == "dir":
            out.append(Member(name=name.rstrip(b"/") + b"/", kind="dir", mtime=e.mtime, mode=e.mode))
        elif e.type == "symlink":
            out.append(Member(name=name, kind="symlink", mtime=e.mtime, link=e.link))
        else:
            out.append(Member(name=name, kind="file", mtime=e.mtime, mode=e.mode, size=e.size, key=e.path))
    return out


def _read_one(service: Any, manifest: Manifest, item: VolumeItem, entry: IndexEntry) -> bytes:
    out = bytearray()
    for _, chunks in service.read_files(manifest, item, [entry]):
        for chunk in chunks:
            out += chunk
    return bytes(out)


class _Cancelled(Exception):
    pass


class _Pipe:
    """Chunks from the reading thread to the request, at most 8 in flight (bounded memory): the reader
    waits for the network. :meth:`cancel` (the request gave up) makes the reader's next put raise."""

    def __init__(self) -> None:
        self.q: queue.Queue[Any] = queue.Queue(maxsize=8)
        self._cancelled = threading.Event()

    def put(self, item: Any, final: bool = False) -> None:
        while not self._cancelled.is_set():
            try:
                self.q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        if not final:
            raise _Cancelled()

    def cancel(self) -> None:
        self._cancelled.set()


def _known_users(ctx: Any) -> list[str]:
    users: set[str] = set()
    for run in ctx.service.catalog.runs()[:30]:
        users.update(v.user for v in ctx.service.manifest(run.id).volumes if v.user)
    return sorted(users)


def _audit_tail(path: Any, n: int) -> list[dict[str, Any]]:
    import json

    if path is None:
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()[-n:]
    except FileNotFoundError:
        return []
    out = []
    for line in reversed(lines):
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


