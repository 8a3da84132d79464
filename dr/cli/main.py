"""``jdr``: the command line. Every command parses options, calls one operation, renders the result.

Exit codes (docs/EXIT_CODES.md): 0 success, 1 partial failure, 2 usage/configuration error,
3 nothing could be done.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click

from dr import __version__
from dr.errors import EXIT_FAILED, EXIT_USAGE, JdrError, UsageError
from dr.settings import Settings, load_settings

log = logging.getLogger("jdr")


@dataclass
class Context:
    config: Path | None
    json: bool
    verbose: int
    repository: str | None = None  # --repository: overrides repository.url (e.g. the second copy)
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from dr.cli.logs import setup_logging

            self._settings = load_settings(self.config)
            if self.repository:
                import dataclasses

                self._settings = dataclasses.replace(self._settings, repository=dataclasses.replace(
                    self._settings.repository, url=self.repository))
            # log_format from the file (JDR_LOG_FORMAT, an override of the same key, is already applied).
            setup_logging(self.verbose, self._settings.log_format)
        return self._settings

    def emit(self, doc: Any, text: str | Callable[[], str]) -> None:
        if self.json:
            click.echo(json.dumps(doc, indent=1, ensure_ascii=False, default=str))
        else:
            click.echo(text() if callable(text) else text)


pass_ctx = click.make_pass_decorator(Context)


def fail(ctx: Context | None, e: JdrError) -> NoReturn:
    if ctx is not None and ctx.json:
        click.echo(json.dumps({"error": e.message, "hint": e.hint, "kind": type(e).__name__,
                               "exit_code": e.exit_code}))
    click.echo(f"jdr: error: {e.message}", err=True)
    if e.hint:
        click.echo(f"jdr: hint: {e.hint}", err=True)
    sys.exit(e.exit_code)


class JdrGroup(click.Group):
    """Maps jdr's errors to their exit codes; click's own usage errors exit 2 as usual.

    Nothing escapes as a traceback (whose exit status, 1, would read as "partial"): an OSError that no
    operation translated is reported as "nothing could be done" (3) naming the file, any other exception
    as an internal error (3), its traceback logged at debug level (``-vv``).
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except JdrError as e:
            fail(ctx.find_object(Context), e)
        except KeyboardInterrupt:
            click.echo("jdr: interrupted", err=True)
            sys.exit(EXIT_FAILED)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException, SystemExit):
            raise
        except Exception as e:  # the last line of defence: see the docstring
            fail(ctx.find_object(Context), translate_unexpected(e))


@click.group(cls=JdrGroup, context_settings={"help_option_names": ["-h", "--help"],
                                               "max_content_width": 100})
@click.option("--config", "config", type=click.Path(path_type=Path),
              envvar="JDR_CONFIG", help="Configuration file (YAML). Default: $JDR_CONFIG.")
@click.option("--json", "as_json", is_flag=True, help="Print one machine-readable JSON document.")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
@click.option("--repository", "repository", default=None, metavar="URL",
              help="Use this repository instead of repository.url (JDR_REPOSITORY), e.g. the second copy "
                   "that `jdr copy` keeps.")
@click.version_option(__version__, prog_name="jdr")
@click.pass_context
def cli(ctx: click.Context, config: Path | None, as_json: bool, verbose: int, repository: str | None) -> None:
    """jdr — backup and disaster recovery for JupyterHub."""
    from dr.cli.logs import setup_logging
    from dr.util.timefmt import check_clock

    ctx.obj = Context(config=config, json=as_json, verbose=verbose, repository=repository)
    fmt = os.environ.get("JDR_LOG_FORMAT", "auto")
    setup_logging(verbose, fmt if fmt in ("auto", "text", "json") else "auto")
    try:
        check_clock()  # an injected clock (JDR_NOW, for tests) that cannot be read stops every command
    except ValueError as e:
        raise UsageError(str(e), hint="JDR_NOW takes an ISO-8601 time such as 2026-09-01T02:00:00Z") from e


def translate_unexpected(e: BaseException) -> JdrError:
    """An error no operation translated, as a JdrError with exit code 3 (its traceback logged at debug)."""
    log.debug("unexpected error", exc_info=e)
    if isinstance(e, OSError):
        where = f": {os.fsdecode(e.filename)}" if e.filename is not None else ""
        hint = None
        if e.errno == errno.ENAMETOOLONG:
            hint = "a file name is longer than this file system allows; choose shorter names"
        elif e.errno == errno.EXDEV:
            hint = "the source and destination are on different file systems (a mount point in between)"
        elif e.errno in (errno.EACCES, errno.EPERM):
            hint = "check the permissions (and that jdr runs as the user that should do this)"
        return JdrError(f"{e.strerror or e}{where}", hint=hint)
    if isinstance(e, UnicodeError):
        return JdrError(f"cannot decode text: {e}", hint="a file jdr read is not UTF-8")
    return JdrError(f"internal error: {type(e).__name__}: {e}",
                    hint="this is a bug in jdr; run again with -vv for the traceback and report it")


def main() -> None:
    cli(prog_name="jdr")


def confirm_plan(ctx: Context, yes: bool) -> Callable[[Any], bool]:
    def confirm(plan: Any) -> bool:
        if not ctx.json:
            click.echo("\n".join(plan.lines()))
        else:
            click.echo("\n".join(plan.lines()), err=True)
        if yes:
            return True
        if not sys.stdin.isatty():
            raise UsageError("refusing to restore without confirmation", hint="add --yes to proceed")
        return click.confirm("Proceed?", default=False, err=True)

    return confirm


class _LockWait(click.ParamType):  # type: ignore[type-arg]  # generic only in recent click
    """Seconds: ``90``, ``90s``, ``30min``, ``2h`` (the units of retention durations; ``m`` is refused there
    as months, so here too)."""

    name = "DURATION"
    _FORM = re.compile(r"^(\d+)(s|min|h)?$")

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        match = self._FORM.match(str(value).strip())
        if not match:
            self.fail(f"{value!r} is not a duration: give seconds (90), or 90s, 30min, 2h", param, ctx)
        return int(match.group(1)) * {"s": 1, "min": 60, "h": 3600, None: 1}[match.group(2)]


def wait_for_lock_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--wait-for-lock DURATION``: while another process holds the repository lock, retry (with back-off)
    for this long instead of failing at once (exit 3). The shipped CronJobs pass it."""
    return click.option("--wait-for-lock", "wait_for_lock", type=_LockWait(), default=0, show_default=True,
                        help="While another jdr process holds the repository lock, retry for this long "
                             "(90s, 30min, 1h) instead of failing at once.")(fn)


def exit_with(code: int) -> None:
    if code:
        sys.exit(code)


from dr.cli import agent, commands, copy_cmd, drill_cmd, key_cmd  # noqa: E402,F401  (registers the commands on ``cli``)

__all__ = ["EXIT_USAGE", "cli", "main"]
from dr.cli import serve_cmd, worker_cmd  # noqa: E402,F401
