"""Executor ray: stages as Ray tasks, on a local Ray runtime or a cluster (`pip install "w2s[ray]"`).

Each stage is one task with the CPUs, GPUs and memory its model asks for (`Model.resources`), and
torch uses as many threads as it was given CPUs. Events (answers bought, job ids) come back through
a Ray queue; the driver persists them as they arrive. A task whose worker dies is retried by Ray
(`max_retries`); a stage that still fails ends with one line, and a rerun resumes it.
Checkpoints go to the artifact root, which every node must reach (a shared path).
"""

from __future__ import annotations

import os
import socket

from w2s.api import W2SError
from w2s.hookspecs import hookimpl
from w2s.running.executors import Executor, ExecutorOptions
from w2s.running.stages import execute
from w2s.running.work import Outcome, Work

RETRIES = 2  # re-runs of a stage whose worker process died (a crash, a killed node)


def _run_on_ray(work: Work, events) -> Outcome:
    """The Ray task: one stage, its events put on the driver's queue as they happen."""
    os.environ["W2S_PROGRESS"] = "0"  # stages run side by side: their bars would interleave in the driver's log
    return execute(work, events.put)


def reachable(address: str, timeout: float = 3.0) -> str | None:
    """None when host:port of a Ray address accepts connections, else why not."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return f"expected HOST:PORT (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001), got {address!r}"
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


class RayExecutor(Executor):
    """Stages as Ray tasks on a cluster (--ray-address / RAY_ADDRESS) or on a local Ray runtime."""

    name = "ray"
    description = "Ray tasks on a cluster or a local Ray runtime"

    def __init__(self, options: ExecutorOptions):
        super().__init__(options)
        try:
            import ray  # noqa: F401
        except ImportError:
            raise W2SError('executor ray: Ray is not installed; install it with `pip install "w2s[ray]"`') from None
        self.address = options.ray_address or os.environ.get("RAY_ADDRESS") or None
        if self.address and self.address != "auto":
            problem = reachable(self.address)
            if problem:
                raise W2SError(f"--ray-address {self.address}: cannot reach a Ray cluster there ({problem}); "
                               f"start one with `ray start --head`, or leave it unset for a local Ray runtime")
        self._started = False
        self._refs: dict = {}
        self._events = None
        self._cpus = 0

    def __enter__(self) -> "RayExecutor":
        import ray
        from ray.util.queue import Queue

        if not ray.is_initialized():
            kwargs = {"address": self.address} if self.address else {"num_cpus": self.options.jobs, "include_dashboard": False}
            try:
                ray.init(**kwargs, logging_level="ERROR", log_to_driver=True)
            except (ConnectionError, RuntimeError, ray.exceptions.RayError) as exc:
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray runtime"
                reason = next((line.strip() for line in reversed(str(exc).splitlines()) if line.strip()), type(exc).__name__)
                raise W2SError(f"executor ray: could not connect to {where} ({reason[:200]}); check the address, and on a cluster "
                               "with token authentication set RAY_AUTH_TOKEN or ~/.ray/auth_token") from None
            self._started = True
        resources = ray.cluster_resources()
        self._cpus, self._gpus = int(resources.get("CPU", 1)), float(resources.get("GPU", 0))
        self._events = Queue()
        return self

    @property
    def capacity(self) -> int:
        return self.options.jobs or max(1, self._cpus)

    @classmethod
    def stages_at_once(cls, options: ExecutorOptions) -> int | None:
        """--jobs, else a local runtime's CPUs; a cluster's size is known only once connected."""
        if options.jobs:
            return options.jobs
        return None if options.ray_address or os.environ.get("RAY_ADDRESS") else os.cpu_count() or 1

    def describe(self) -> str:
        where = self.address or "a local Ray runtime"
        return f"ray on {where} ({self._cpus} CPUs, {self._gpus:g} GPUs, up to {self.capacity} stages at once)"

    def submit(self, work: Work) -> None:
        import ray

        res = work.resources
        gpus = res.gpus or (self._gpu_share() if res.accelerator and work.kind != "evaluate" else 0)
        work.threads = self.options.threads or max(1, int(res.cpus))
        options = {"num_cpus": max(res.cpus, work.threads), "max_retries": RETRIES, "retry_exceptions": False}
        if gpus:
            options["num_gpus"] = gpus
        if res.memory_mb:
            options["memory"] = res.memory_mb * 1024 * 1024
        self._refs[ray.remote(_run_on_ray).options(**options).remote(work, self._events)] = work.key

    def _gpu_share(self) -> float:
        if self.options.gpus_per_stage is not None:
            return self.options.gpus_per_stage
        return 1.0 if self._gpus >= 1 else 0.0

    def collect(self, on_event, timeout: float) -> list[Outcome]:
        import ray

        ready, _ = ray.wait(list(self._refs), num_returns=1, timeout=timeout) if self._refs else ([], [])
        while self._events.qsize():  # a stage's events were put before its task returned
            on_event(self._events.get_nowait())
        outcomes = []
        for ref in ready:
            key = self._refs.pop(ref)
            try:
                outcomes.append(ray.get(ref))
            except ray.exceptions.RayError as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                outcomes.append(Outcome(key, None, f"{type(exc).__name__}: {first} (after {RETRIES} retries); rerun to retry the stage"))
        return outcomes

    def cancel(self) -> None:
        import ray

        for ref in list(self._refs):
            ray.cancel(ref, force=True)
        self._refs.clear()

    def close(self) -> None:
        import ray

        if self._started and ray.is_initialized():
            ray.shutdown()


@hookimpl
def register_executors(register):
    register(RayExecutor)
