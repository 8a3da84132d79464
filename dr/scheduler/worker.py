"""``jdr worker``: run backup, prune and drill on their schedules, in one long-running process.

- Time zone aware: cron expressions are read on the wall clock of the configured zone.
- One job at a time: jobs of one worker never run concurrently (they would lock each other out of the
  repository). A job due while another runs waits for it (logged), then runs.
- No overlap: a job still running (or waiting) when its next fire time comes is skipped (logged, and
  counted in ``jdr_worker_skipped_runs_total{job}``), never started twice.
- Missed runs coalesce: runs missed while the process was suspended or busy collapse into one run, if it
  can still start within ``misfire_grace_seconds``. With a ``state_path``, runs missed while the worker was
  *down* are caught up the same way at start-up (one run, if the latest missed time is within the grace).
- Clean shutdown on SIGTERM or SIGINT: scheduling stops at once, ``stop_requested`` is set (job functions
  should check it and raise :class:`dr.errors.Interrupted`), and running jobs get ``grace_seconds`` to
  finish. A job still running after that is abandoned, and the log says so: the process exits without it
  (jobs run in daemon threads). A second signal abandons at once.
- An HTTP endpoint (optional): ``/healthz`` (JSON; 200 while scheduling, 503 otherwise) and ``/metrics``.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.executors.base import BaseExecutor, run_job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from dr.errors import EXIT_FAILED, EXIT_OK, Interrupted, JdrError
from dr.metrics import Metrics
from dr.scheduler.health import HealthServer
from dr.scheduler.schedule import JobSpec, make_trigger
from dr.util.timefmt import iso, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobResult:
    started: datetime
    finished: datetime
    exit_code: int
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"started": iso(self.started), "finished": iso(self.finished), "exit_code": self.exit_code,
                "seconds": round((self.finished - self.started).total_seconds(), 3), "error": self.error}


class _DaemonThreadExecutor(BaseExecutor):  # type: ignore[misc]
    """Runs each job in its own daemon thread, so that an abandoned job cannot keep the process alive at
    exit (a concurrent.futures pool joins its threads at interpreter shutdown)."""

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        def target() -> None:
            try:
                events = run_job(job, job._jobstore_alias, run_times, self._logger.name)
            except BaseException as e:
                self._run_job_error(job.id, e, e.__traceback__)
            else:
                self._run_job_success(job.id, events)

        threading.Thread(target=target, name=f"jdr-job-{job.id}", daemon=True).start()


class Worker:
    """Schedules ``jobs`` (name → spec) in ``tz``. Construction validates every schedule (ConfigError
    naming the job); :meth:`start` begins, :meth:`stop` ends, :meth:`run_forever` does both around signals."""

    def __init__(self, jobs: Mapping[str, JobSpec], tz: tzinfo, health_port: int | None = None,
                 metrics: Metrics | None = None, *, health_host: str = "127.0.0.1",
                 grace_seconds: float = 80.0, misfire_grace_seconds: int = 3600,
                 state_path: str | Path | None = None, stop_event: threading.Event | None = None) -> None:
        self.jobs = dict(jobs)
        self.tz = tz
        self.metrics = metrics if metrics is not None else Metrics()
        self.grace_seconds = grace_seconds
        self.misfire_grace_seconds = misfire_grace_seconds
        self.state_path = Path(state_path) if state_path is not None else None
        # Job functions check this and raise Interrupted; given by the caller when the jobs need it first.
        self.stop_requested = stop_event if stop_event is not None else threading.Event()
        self.triggers = {name: make_trigger(spec, tz) for name, spec in self.jobs.items()}
        self._health_port = health_port
        self._health_host = health_host
        self.health: HealthServer | None = None
        self._lock = threading.Condition()
        self._running: dict[str, datetime] = {}  # started or waiting for its turn
        self._active: str | None = None  # the one job that runs now
        self._last: dict[str, JobResult] = {}
        self._skipped: dict[str, int] = {}
        self._scheduler = BackgroundScheduler(timezone=tz, executors={"default": _DaemonThreadExecutor()})
        self._scheduler.add_listener(self._on_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        self._signals = 0
        self._abandon_now = threading.Event()
        self._started = False

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the health endpoint (if any) and the scheduler."""
        catch_up = self._missed_while_down()
        for name, spec in self.jobs.items():
            extra: dict[str, Any] = {}
            if name in catch_up:
                extra["next_run_time"] = datetime.now(UTC)  # APScheduler runs on the real clock
            self._scheduler.add_job(
                self._run, trigger=self.triggers[name], args=(name,), id=name, name=name,
                max_instances=1, coalesce=True, misfire_grace_time=self.misfire_grace_seconds,
                replace_existing=True, **extra)
            log.info("job %s scheduled (%s, %s)", name, spec.schedule, self.tz)
        if self._health_port is not None:
            self.health = HealthServer(self._health_host, self._health_port, self.health_report,
                                       self.metrics.render)
            host, port = self.health.address
            log.info("health endpoint listening on http://%s:%d (/healthz, /metrics)", host, port)
        self._scheduler.start()
        self._started = True
        log.info("worker started with %d job(s): %s", len(self.jobs), ", ".join(self.jobs))

    def stop(self, grace_seconds: float | None = None) -> int:
        """Stop scheduling, give running jobs ``grace_seconds`` to finish, then abandon any still running.
        Returns 0 when every job ended, EXIT_FAILED (3) when one had to be abandoned."""
        grace = self.grace_seconds if grace_seconds is None else grace_seconds
        self.stop_requested.set()
        with self._lock:
            self._lock.notify_all()  # jobs waiting for their turn give up at once
        if self._started:
            self._scheduler.shutdown(wait=False)
            self._started = False
        deadline = time.monotonic() + grace
        with self._lock:
            if self._running:
                log.info("waiting up to %.0fs for running job(s) to finish: %s", grace,
                         ", ".join(self._running))
            while self._running and not self._abandon_now.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(min(left, 0.2))
            abandoned = dict(self._running)
        for name, since in abandoned.items():
            log.warning("job %s still running after %.0fs (since %s): abandoning it; it is interrupted and "
                        "whatever it had not committed does not count", name, grace, iso(since))
        if self.health is not None:
            self.health.close()
            self.health = None
        log.info("worker stopped%s", " (a job was abandoned)" if abandoned else "")
        return EXIT_FAILED if abandoned else EXIT_OK

    def run_forever(self) -> int:
        """Start, block until SIGTERM or SIGINT, stop. Signal handlers are installed only when called from
        the main thread. Returns the exit code of :meth:`stop`."""
        handlers: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            self.start()
            while not self.stop_requested.wait(0.5):
                pass
            return self.stop()
        finally:
            for sig, previous in handlers.items():
                signal.signal(sig, previous)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            log.warning("received %s: stopping (running jobs get %.0fs to finish)", name, self.grace_seconds)
            self.stop_requested.set()
        else:
            log.warning("received %s again: abandoning running jobs now", name)
            self._abandon_now.set()
            with self._lock:
                self._lock.notify_all()

    # --- running jobs ---------------------------------------------------------------------------------

    def _run(self, name: str) -> int | None:
        with self._lock:
            self._running[name] = utcnow()
            if self._active is not None:
                log.info("job %s waits: job %s is running (jobs of one worker run one after the other)",
                         name, self._active)
            while self._active is not None and not self.stop_requested.is_set():
                self._lock.wait()
            if self.stop_requested.is_set():
                del self._running[name]
                self._lock.notify_all()
                log.info("job %s not started: the worker is stopping", name)
                return None
            self._active = name
        try:
            return self._run_now(name)
        finally:
            with self._lock:
                self._active = None
                self._running.pop(name, None)
                self._lock.notify_all()

    def _run_now(self, name: str) -> int:
        started = utcnow()
        with self._lock:
            self._running[name] = started
        self._save_state(name, started)
        log.info("job %s started", name)
        error: str | None = None
        try:
            result = self.jobs[name].func()
            code = EXIT_OK if result is None else int(result)
        except Interrupted as e:
            code, error = e.exit_code, str(e)
            log.warning("job %s interrupted: %s", name, e)
        except JdrError as e:
            code, error = e.exit_code, str(e)
            log.error("job %s failed: %s%s", name, e, f" (hint: {e.hint})" if e.hint else "")
        except Exception as e:
            code, error = EXIT_FAILED, f"{type(e).__name__}: {e}"
            log.exception("job %s crashed", name)
        finished = utcnow()
        self.metrics.record_job(name, code, started, finished)
        with self._lock:
            self._last[name] = JobResult(started, finished, code, error)
        during = " (during shutdown)" if self.stop_requested.is_set() else ""
        log_at = log.info if code == EXIT_OK else log.warning
        log_at("job %s finished with exit code %d in %.1fs%s", name, code,
               (finished - started).total_seconds(), during)
        return code

    def _on_event(self, event: JobEvent) -> None:
        if event.code == EVENT_JOB_MAX_INSTANCES:
            with self._lock:
                self._skipped[event.job_id] = self._skipped.get(event.job_id, 0) + 1
                since = self._running.get(event.job_id)
            self.metrics.record_skipped(event.job_id)
            log.warning("job %s skipped: its previous run (started %s) is still going", event.job_id,
                        iso(since) if since else "?")
        elif event.code == EVENT_JOB_MISSED:
            log.warning("job %s missed its run at %s (more than %ds late); waiting for the next one",
                        event.job_id, iso(event.scheduled_run_time), self.misfire_grace_seconds)

    # --- catching up after downtime -------------------------------------------------------------------

    def _load_state(self) -> dict[str, str]:
        if self.state_path is None or not self.state_path.exists():
            return {}
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable worker state %s: %s", self.state_path, e)
            return {}
        return {str(k): str(v) for k, v in data.get("last_started", {}).items()}

    def _save_state(self, name: str, started: datetime) -> None:
        if self.state_path is None:
            return
        with self._lock:
            state = self._load_state()
            state[name] = iso(started)
            tmp = self.state_path.with_name(self.state_path.name + ".tmp")
            try:
                self.state_path.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_text(json.dumps({"last_started": state}, indent=1, sort_keys=True))
                tmp.replace(self.state_path)
            except OSError as e:
                log.warning("could not record worker state in %s: %s", self.state_path, e)

    def _missed_while_down(self) -> set[str]:
        """Cron jobs whose latest scheduled time since their last recorded start has passed, within the
        misfire grace: each runs once right away, however many runs were missed."""
        state = self._load_state()
        now = utcnow()
        due: set[str] = set()
        for name, trigger in self.triggers.items():
            if name not in state or not isinstance(trigger, CronTrigger):
                continue
            last = datetime.fromisoformat(state[name].replace("Z", "+00:00"))
            missed: datetime | None = None
            fire = trigger.get_next_fire_time(None, last + timedelta(seconds=1))
            for _ in range(100_000):  # bounded: a minutely job down for months just counts as missed
                if fire is None or fire > now:
                    break
                missed = fire
                fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
            if missed is None:
                continue
            late = (now - missed).total_seconds()
            if late <= self.misfire_grace_seconds:
                log.info("job %s missed its run at %s while the worker was down: running it now, once",
                         name, iso(missed))
                due.add(name)
            else:
                log.warning("job %s missed its run at %s while the worker was down, %.0fs ago (more than "
                            "the %ds grace): waiting for the next one", name, iso(missed), late,
                            self.misfire_grace_seconds)
        return due

    # --- health ---------------------------------------------------------------------------------------

    @property
    def health_address(self) -> tuple[str, int] | None:
        return self.health.address if self.health is not None else None

    def health_report(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, JSON document) for ``/healthz``."""
        running = bool(self._started and self._scheduler.running and not self.stop_requested.is_set())
        jobs: dict[str, Any] = {}
        # Ask the scheduler before taking our lock: the scheduler calls _on_event (which takes our lock)
        # while holding its job store lock, so the opposite order could deadlock.
        next_runs: dict[str, datetime | None] = {}
        for name in self.jobs:
            job = self._scheduler.get_job(name) if self._started else None
            next_runs[name] = getattr(job, "next_run_time", None) if job is not None else None
        with self._lock:
            for name, spec in self.jobs.items():
                next_run = next_runs[name]
                last = self._last.get(name)
                since = self._running.get(name)
                state = "running" if self._active == name else "waiting" if since else "idle"
                jobs[name] = {
                    "schedule": spec.schedule,
                    "state": state,
                    "next_run": iso(next_run) if next_run else None,
                    "running_since": iso(since) if since else None,
                    "last": last.to_dict() if last else None,
                    "skipped": self._skipped.get(name, 0),
                }
        doc = {"status": "ok" if running else "stopping", "time": iso(utcnow()),
               "timezone": str(self.tz), "jobs": jobs}
        return running, doc
