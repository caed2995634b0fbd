"""Realtime find on a lookup miss: ask Fusion to have the agents scan the directory now, then
re-query the missing path at short intervals until it appears or a bounded wait ends.

Concurrent misses in one directory share one job; a token bucket bounds how many finds the
mount can start (the agents scan real storage for each one). When the management API lets us
read the job, a finished job ends the wait early.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from fustor.errors import AuthError, FustorError, NotFoundError, ScopeError
from fustor_mount.cache import TokenBucket
from fustor_mount.client import ViewAPI

log = logging.getLogger(__name__)

FIRST_POLL = 0.03
MAX_POLL = 0.2
JOB_CHECK_AFTER = 0.2  # the job API is only worth asking once the agent had time to scan


class _Job:
    __slots__ = ("id", "started", "expires", "finished", "checked_at")

    def __init__(self, started: float, expires: float) -> None:
        self.id: str | None = None
        self.checked_at = float("-inf")
        self.started = started
        self.expires = expires
        self.finished = False


class RealtimeFinder:
    def __init__(
        self, client: ViewAPI, *, wait: float = 2.0, rate: float = 5.0, burst: float = 20.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.wait = wait
        self._bucket = TokenBucket(rate, burst, clock=clock)
        self._clock = clock
        self._jobs: dict[str, _Job] = {}
        self._job_api = True  # False once the management API refused us
        self.started = 0  # finds started (for status and tests)
        self.limited = 0  # misses answered without a find because of the rate limit

    async def find(self, directory: str, path: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Find `path` (a name in `directory` the view does not know): (entry, meta) of the
        entry if a realtime find brings it in time, else None."""
        deadline = self._clock() + self.wait
        for attempt in range(2):
            job = self._jobs.get(directory)
            joined = job is not None and not job.finished and job.expires > self._clock()
            if not joined:
                job = await self._start(directory)
                if job is None:
                    return None
            assert job is not None
            try:
                found = await self._wait_for(job, path, deadline)
            finally:
                if job.finished or job.expires <= self._clock():
                    self._drop(directory, job)
            # A job we joined may have listed the directory before our name was created:
            # when it ends without the name, one fresh find of our own (same deadline).
            if found is not None or not (joined and job.finished) or attempt:
                return found
        return None

    async def _start(self, directory: str) -> _Job | None:
        if not self._bucket.take():
            self.limited += 1
            log.debug("realtime find of %s skipped: rate limit", directory)
            return None
        now = self._clock()
        job = _Job(now, now + self.wait)
        self._jobs[directory] = job
        self.started += 1
        try:
            job.id = await self.client.start_find(directory)
        except NotFoundError:
            self._drop(directory, job)
            return None
        except BaseException:
            self._drop(directory, job)
            raise
        log.debug("realtime find of %s: job %s", directory, job.id)
        return job

    def _drop(self, directory: str, job: _Job) -> None:
        if self._jobs.get(directory) is job:
            del self._jobs[directory]

    async def _wait_for(
        self, job: _Job, path: str, deadline: float
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        interval = FIRST_POLL
        started = self._clock()
        while True:
            left = deadline - self._clock()
            if left <= 0:
                return None
            await trio.sleep(min(interval, left))
            interval = min(interval * 1.5, MAX_POLL)
            try:
                return await self.client.metadata(path)
            except NotFoundError:
                pass
            if job.finished or (self._clock() - started >= JOB_CHECK_AFTER and await self._job_done(job)):
                job.finished = True
                # Rows of a find are applied before its end is recorded: one last look (also
                # when another waiter saw the end while our last look was on its way).
                try:
                    return await self.client.metadata(path)
                except NotFoundError:
                    return None

    async def _job_done(self, job: _Job) -> bool:
        """Whether Fusion says the job ended; asked at most once per poll interval per job,
        however many lookups wait on it."""
        now = self._clock()
        if job.id is None or not self._job_api or now - job.checked_at < FIRST_POLL:
            return False
        job.checked_at = now
        try:
            body = await self.client.job(job.id)
        except (AuthError, ScopeError) as exc:
            log.info("Fusion refused the job status (%s); waiting by polling only", exc)
            self._job_api = False
            return False
        except FustorError:
            return False
        return body.get("state") in ("done", "failed")
