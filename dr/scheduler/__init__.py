"""``jdr worker``: the long-running scheduler (APScheduler; the only package allowed to import it)."""

from dr.scheduler.schedule import JobSpec, cron_day_of_week, make_trigger
from dr.scheduler.worker import JobResult, Worker

__all__ = ["JobResult", "JobSpec", "Worker", "cron_day_of_week", "make_trigger"]
