"""The supervisor: owns the worker processes of one pool, and (unless --remote) the feeder and sink.

The story of one tick (`_tick`, every 0.2 s):
  reap the dead (requeue what they held, back off from a crash loop) -> watch the living
  (heartbeat, memory, max jobs) -> read control commands -> decide the size (pure autoscaler) ->
  spawn or stop -> publish state for `status`.
The feeder and sink run in one coordinator thread, so a slow SQLite commit never delays the
reaping of a dead worker.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis
from rq.registry import StartedJobRegistry
from rq.scheduler import RQScheduler
from rq.scripts import release_lock
from rq.serializers import JSONSerializer
from rq.worker import Worker

from mailcli.config import Settings
from mailcli.llm.limiter import release_dead
from mailcli.pool import state, verdicts
from mailcli.pool.autoscale import Decision, PoolView, decide
from mailcli.pool.worker import rss_with_children
from mailcli.pool.worker_command import worker_command, worker_env
from mailcli.private import make_private_dir
from mailcli.queue.jobs import JOB_MAX_CONVERSATIONS, recover_job, requeue_started
from mailcli.queue.names import QUEUES, queue_depths, queue_name

log = logging.getLogger("mailcli.pool")

TICK = 0.2
STOPPING_TICK = 0.05  # while workers exit
DEAD_POOL_AFTER = 5.0  # seconds without a heartbeat (published every tick) before a pool counts as gone
WORK_GAP = 2.0  # seconds with no job waiting or running before the current work counts as over

EXIT_UNREACHABLE = 4  # the exit code every mailcli command gives when a service it needs is unreachable


@dataclass
class PoolConfig:
    min_workers: int = 2
    max_workers: int = 10
    burst: bool = False
    max_memory_mb: float | None = None
    max_jobs: int | None = None
    cooldown: float = 30.0
    timeout: float = 60.0  # graceful shutdown deadline
    reload: bool = False
    remote: bool = False
    window: int | None = None
    heartbeat_timeout: float = 15.0  # Settings.heartbeat_timeout
    debug: bool = False


@dataclass
class WorkerProc:
    name: str
    popen: subprocess.Popen
    started: float
    log_path: Path
    mode: str = "running"  # what the supervisor asked of it: running | recycling | stopping | killed
    reason: str = ""
    state: str = "starting"  # as the worker reports it: starting | idle | busy | stopped
    job_id: str = ""
    jobs_done: int = 0
    heartbeat: float = 0.0
    idle_since: float = field(default_factory=time.monotonic)
    proc: psutil.Process | None = None
    rss: int = 0

    @property
    def pid(self) -> int:
        return self.popen.pid


class Supervisor:
    def __init__(self, settings: Settings, cfg: PoolConfig, conn: redis.Redis):
        self.settings = settings
        self.cfg = cfg
        self.conn = conn
        self.pool_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.workers: dict[str, WorkerProc] = {}
        self.seq = 0
        self.crashes = 0
        self.next_spawn_at = 0.0
        self.crash_reason = ""
        self.last_decision = Decision(cfg.min_workers, "starting")
        self.stopping = False
        self.deadline: float | None = None
        self.exit_code = 0
        self.started = time.time()
        self.recovered = 0
        self.replaced = 0
        # when the current work began (jobs waiting or running), for the throughput `status` shows;
        # None once none has been seen for WORK_GAP seconds
        self.work_since: float | None = None
        self._no_work_at: float | None = None
        self._control_seq = state.read_control(conn)[0]  # commands sent before we started are history
        self._coordinator: threading.Thread | None = None
        self._coordinator_stop = threading.Event()
        self._feeding = threading.Event()
        self._feeding.set()
        self._idle_evidence = 0  # ticks in a row that showed a burst run done (verdicts.burst_evidence)
        self._work_done = threading.Event()
        self.coordinator = None  # the feeder and sink's thread (mailcli.pool.coordinator); none with --remote
        self._signals = 0
        self._src_mtime = _source_mtime() if cfg.reload else 0.0
        # named after the pool, so another pool can tell a dead holder of the scheduler locks (below)
        self._scheduler = RQScheduler(
            [queue_name(p) for p in QUEUES], connection=conn, serializer=JSONSerializer, name=self.pool_id
        )
        # its lock chatter is not news; set after it is made, since making it sets its logger to INFO
        logging.getLogger("rq.scheduler").setLevel(logging.WARNING)
        self._scheduler_locks_at = 0.0
        self._last_sweep = time.monotonic()
        self._redis_lost_at = -1e9  # when Redis last failed to answer the watch (heartbeats unknown then)
        self._idle_limit_said = False  # --max-memory below an idle worker's RSS: said once
        self._give_up = ""  # set by the coordinator when Redis stays away past redis_outage_limit
        self._to_recover: dict[str, str | None] = {}  # jobs of dead workers not requeued yet (Redis was away)
        # ticks done, published with the pool's state: a test waits for N more rounds of decisions
        # (each watches every worker and sizes the pool) instead of for a length of time
        self.ticks = 0
        home = settings.home.resolve()
        self.log_dir = home / "logs"
        make_private_dir(self.log_dir)

    # -- the run --------------------------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        # `kill -USR1 <pid>` prints every thread's stack to stderr: how to see where a pool is stuck
        faulthandler.register(signal.SIGUSR1, all_threads=True)
        log.warning(
            "pool %s: %d..%d workers%s%s",
            self.pool_id,
            self.cfg.min_workers,
            self.cfg.max_workers,
            ", burst" if self.cfg.burst else "",
            ", remote (workers only)" if self.cfg.remote else "",
        )
        if not self.cfg.remote:
            from mailcli.pool.coordinator import Coordinator

            self.coordinator = Coordinator(
                self.settings,
                window=self.cfg.window,
                burst=self.cfg.burst,
                stop=self._coordinator_stop,
                feeding=self._feeding,
                done_event=self._work_done,
                on_give_up=self._set_give_up,
            )
            self._coordinator = threading.Thread(target=self.coordinator.run, name="mailcli-coordinator", daemon=True)
            self._coordinator.start()
        self._sweep_orphans(startup=True)
        try:
            while True:
                self._tick()
                if self.stopping and not self.workers:
                    break
                if self.stopping:
                    time.sleep(STOPPING_TICK)  # see each worker gone as soon as it is
                elif self.cfg.burst:
                    self._work_done.wait(TICK)  # the coordinator's "all done" wakes us at once
                else:
                    time.sleep(TICK)
        finally:
            self._finish()
        return self.exit_code

    def _set_give_up(self, reason: str) -> None:
        """From the coordinator: Redis stayed away past the limit; the next tick stops the pool."""
        self._give_up = reason

    def _tick(self) -> None:
        now = time.monotonic()
        if self._give_up and not self.stopping:
            log.error("%s", self._give_up)
            self.exit_code = EXIT_UNREACHABLE
            self.begin_shutdown(0)
        self._reap()
        self._recover_later()
        self._watch(now)
        if not self.stopping:
            self._read_control()  # may begin the shutdown: nothing below may start a worker then
        if not self.stopping:
            self._maybe_reload()
            self._scale(now)
            self._check_burst_done()
            self._schedule_retries(now)
            if now - self._last_sweep > 5:
                self._sweep_orphans()
                self._last_sweep = now
        else:
            self._enforce_deadline(now)
        self.ticks += 1
        self._publish()

    # -- spawning and stopping ------------------------------------------------------------

    def spawn(self) -> WorkerProc | None:
        now = time.monotonic()
        if now < self.next_spawn_at:
            return None
        self.seq += 1
        name = f"mailcli.{socket.gethostname()}.{os.getpid()}.{self.seq}"
        cmd = worker_command(name, pool_id=self.pool_id, max_jobs=self.cfg.max_jobs, debug=self.cfg.debug)
        log_path = self.log_dir / f"worker-{self.seq}.log"
        env = worker_env(self.settings)
        # private like the rest of the data directory, whatever the umask
        with open(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab") as logf:
            # its own session: a Ctrl-C in the terminal reaches the supervisor only, which then
            # stops the workers in order
            popen = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, env=env, start_new_session=True
            )
        wp = WorkerProc(name=name, popen=popen, started=now, log_path=log_path)
        try:
            wp.proc = psutil.Process(popen.pid)
        except psutil.Error:
            pass
        self.workers[name] = wp
        log.info("worker %s started (pid %d)", name, popen.pid)
        return wp

    def _signal(self, wp: WorkerProc, sig: int) -> None:
        try:
            wp.popen.send_signal(sig)
        except ProcessLookupError:
            pass

    def stop_worker(self, wp: WorkerProc, mode: str, reason: str) -> None:
        """Warm stop: RQ finishes the job in hand, then the process exits."""
        if wp.mode in ("stopping", "recycling", "killed"):
            return
        wp.mode, wp.reason = mode, reason
        self._signal(wp, signal.SIGTERM)
        log.info("worker %s: %s (%s)", wp.name, mode, reason)

    def kill_worker(self, wp: WorkerProc, reason: str) -> None:
        wp.mode, wp.reason = "killed", reason
        self._signal(wp, signal.SIGKILL)
        log.warning("worker %s killed: %s", wp.name, reason)

    # -- the dead -------------------------------------------------------------------------

    def _reap(self) -> None:
        for wp in list(self.workers.values()):
            code = wp.popen.poll()
            if code is None:
                continue
            del self.workers[wp.name]
            self._bury(wp, code)

    def _bury(self, wp: WorkerProc, code: int) -> None:
        """A worker exited: requeue the job it held at once, tidy its registrations, learn from it."""
        info = {}
        try:
            raw = self.conn.hgetall(state.worker_key(wp.name))
            info = {k.decode(): v.decode() for k, v in raw.items()}
        except redis.RedisError:
            pass
        job_id = info.get("job_id") or wp.job_id
        requeued = False
        if job_id:
            # killed for what the job did (memory, hang): counted, so a poisonous job fails in the end
            blame = wp.reason if wp.mode == "killed" and not self.stopping else None
            try:
                outcome = recover_job(self.conn, job_id, killed_for=blame)
            except redis.RedisError as exc:
                outcome = ""
                self._to_recover[job_id] = blame
                log.error("could not requeue job %s of dead worker %s yet (%s); will retry", job_id, wp.name, exc)
            requeued = outcome == "requeued"
            if outcome:
                self.recovered += requeued
                log.warning("worker %s exited (%s) holding job %s: %s", wp.name, _exit_text(code), job_id, outcome)
        try:
            # the LLM permits it held (leases on each Ollama host's shared limit) are free again now,
            # not when their leases lapse: a killed worker must not shrink every host's capacity
            freed = release_dead(self.conn, wp.pid)
            if freed:
                log.info("worker %s held %d LLM request permits: given back", wp.name, freed)
            rq_worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + wp.name, connection=self.conn)
            if rq_worker is not None:
                rq_worker.register_death()
            state.forget_worker(self.conn, wp.name)
        except redis.RedisError:
            pass
        ob = verdicts.bury(
            verdicts.Death(
                mode=wp.mode,
                exit_code=code,
                lived=time.monotonic() - wp.started,
                did_nothing=int(info.get("jobs_done") or 0) == 0 and int(info.get("jobs_failed") or 0) == 0,
                job_requeued=requeued,
                stops_by_itself=bool(self.cfg.max_jobs or self.cfg.burst),
                crashes=self.crashes,
            )
        )
        self.crashes = ob.crashes
        self.replaced += ob.replaced
        if ob.kind == "crashed":
            self.next_spawn_at = time.monotonic() + ob.backoff
            self.crash_reason = _log_tail(wp.log_path) or _exit_text(code)
            log.error(
                "worker crashed on start (%d in a row; next try in %.1fs): %s", ob.crashes, ob.backoff, self.crash_reason
            )
        elif ob.kind == "died":
            log.warning("worker %s died (%s); replacing it", wp.name, _exit_text(code))

    def _recover_later(self) -> None:
        """Requeue the jobs of workers that died while Redis was away, now that it may be back."""
        for job_id, blame in list(self._to_recover.items()):
            try:
                outcome = recover_job(self.conn, job_id, killed_for=blame)
            except redis.RedisError:
                return
            del self._to_recover[job_id]
            self.recovered += outcome == "requeued"
            if outcome:
                log.warning("job %s of a worker that died while Redis was away: %s", job_id, outcome)

    # -- the living -----------------------------------------------------------------------

    def _watch(self, now: float) -> None:
        if not self.workers:
            return
        names = list(self.workers)
        try:
            with self.conn.pipeline(transaction=False) as pipe:
                for n in names:
                    pipe.hmget(state.worker_key(n), "state", "job_id", "heartbeat", "jobs_done")
                rows = pipe.execute()
        except redis.RedisError:
            rows = [[None] * 4 for _ in names]
            self._redis_lost_at = now
        # heartbeats could not be read while Redis was away: give every worker a full timeout to beat
        # again before calling it frozen, instead of killing healthy workers for Redis's outage
        judge = now - self._redis_lost_at > self.cfg.heartbeat_timeout
        wall = time.time()
        limit = self.cfg.max_memory_mb * 1024 * 1024 if self.cfg.max_memory_mb else None
        for n, (st, job_id, beat, done) in zip(names, rows, strict=True):
            wp = self.workers[n]
            if st is not None:
                new_state = st.decode()
                if new_state == "idle" and wp.state != "idle":
                    wp.idle_since = now
                wp.state = new_state
                wp.job_id = (job_id or b"").decode()
                wp.heartbeat = float(beat or 0)
                wp.jobs_done = int(done or 0)
            if wp.mode == "killed":
                continue
            if limit and wp.proc is not None:
                wp.rss = rss_with_children(wp.proc)
            verdict = verdicts.judge(
                verdicts.Health(
                    mode=wp.mode,
                    state=wp.state,
                    holds_job=bool(wp.job_id),
                    jobs_done=wp.jobs_done,
                    # a heartbeat that stopped: the process exists but is not alive (stopped, wedged)
                    heartbeat_age=wall - wp.heartbeat if wp.heartbeat else now - wp.started,
                    heartbeat_timeout=self.cfg.heartbeat_timeout,
                    heartbeats_trusted=judge,
                    rss=wp.rss if limit and wp.proc is not None else None,
                    max_memory_mb=self.cfg.max_memory_mb,
                )
            )
            if verdict.action == "kill":
                self.kill_worker(wp, verdict.reason)
            elif verdict.action == "recycle":
                self.stop_worker(wp, "recycling", verdict.reason)
            elif verdict.action == "raise_limit":
                self._raise_limit_to_idle(wp.rss, verdict.new_limit_mb)
                limit = self.cfg.max_memory_mb * 1024 * 1024

    def _raise_limit_to_idle(self, rss: int, new_limit_mb: float | None) -> None:
        """The limit becomes an idle worker's RSS plus a quarter (idle workers grow a little too);
        said once as an error, later raises (a bigger idle worker) only in the debug log."""
        given = self.cfg.max_memory_mb
        self.cfg.max_memory_mb = new_limit_mb
        say = log.debug if self._idle_limit_said else log.error
        self._idle_limit_said = True
        say(
            "--max-memory %.0f MB is below what an idle worker takes (%.0f MB): using %.0f MB so that workers "
            "are not recycled for ever; give a limit above what a job needs on top of that",
            given, rss / 2**20, self.cfg.max_memory_mb,
        )  # fmt: skip

    # -- sizing ---------------------------------------------------------------------------

    def _backlog(self) -> int:
        depths = queue_depths(self.conn)
        queued = sum(d["queued"] for d in depths.values())
        pending = self.coordinator.pending if self.coordinator is not None else 0
        if self.cfg.remote:
            try:
                pending = int(self.conn.get("mailcli:pending") or 0)
            except (redis.RedisError, ValueError):
                pending = 0
        return queued + -(-pending // JOB_MAX_CONVERSATIONS)

    def _scale(self, now: float) -> None:
        running = [w for w in self.workers.values() if w.mode == "running"]
        busy = [w for w in running if w.state in ("busy", "starting")]
        idle = [w for w in running if w.state == "idle"]
        idle_long = sorted(
            (w for w in idle if now - w.idle_since >= self.cfg.cooldown), key=lambda w: w.idle_since
        )
        try:
            backlog = self._backlog()
        except redis.RedisError:
            return
        view = PoolView(
            backlog=backlog,
            busy=len(busy),
            idle=len(idle),
            idle_long=len(idle_long),
            min_workers=self.cfg.min_workers,
            max_workers=self.cfg.max_workers,
        )
        self._track_work(backlog > 0 or bool(busy), now)
        decision = decide(view)
        if decision.changes:
            log.info("scale to %d: %s", decision.target, decision.reason)
        if decision.changes or decision.target != self.last_decision.target:
            self.last_decision = decision
        for _ in range(decision.start):
            if self.spawn() is None:
                break
        stoppable = idle_long if idle_long else sorted(idle, key=lambda w: w.idle_since)
        for wp in stoppable[: decision.stop_idle]:
            self.stop_worker(wp, "stopping", decision.reason)

    def _track_work(self, working: bool, now: float) -> None:
        if working:
            self._no_work_at = None
            if self.work_since is None:
                self.work_since = time.time()
            return
        if self._no_work_at is None:
            self._no_work_at = now
        elif now - self._no_work_at >= WORK_GAP:  # not a blink between two jobs: the work is over
            self.work_since = None

    # -- control, reload, burst -----------------------------------------------------------

    def _read_control(self) -> None:
        try:
            seq, commands = state.read_control(self.conn)
        except redis.RedisError:
            return
        if seq <= self._control_seq:
            return
        commands_in_order, seen = state.unread_commands(commands, self._control_seq)
        for name, cmd in commands_in_order:
            if name == "scale":
                n = int(cmd["n"])
                self.cfg.min_workers = self.cfg.max_workers = n
                log.warning("scaled to %d workers by `mailcli workers scale`", n)
            elif name == "stop":
                log.warning("stop requested by `mailcli workers stop`")
                self.begin_shutdown(float(cmd.get("timeout", self.cfg.timeout)))
        self._control_seq = seen

    def _maybe_reload(self) -> None:
        if not self.cfg.reload:
            return
        mtime = _source_mtime()
        if mtime > self._src_mtime:
            self._src_mtime = mtime
            log.warning("source changed: restarting workers")
            for wp in list(self.workers.values()):
                self.stop_worker(wp, "recycling", "source changed")

    def _check_burst_done(self) -> None:
        if not self.cfg.burst:
            return
        work_seen = False
        if self.cfg.remote:
            try:
                depths = queue_depths(self.conn)
            except redis.RedisError:
                return
            busy = any(w.state == "busy" for w in self.workers.values())
            work_seen = busy or any(d["queued"] or d["started"] or d["retrying"] for d in depths.values())
        self._idle_evidence = verdicts.burst_evidence(
            self._idle_evidence, remote=self.cfg.remote, coordinator_done=self._work_done.is_set(), work_seen=work_seen
        )
        if self._idle_evidence >= verdicts.IDLE_EVIDENCE:
            log.warning("burst: all work done")
            self.begin_shutdown(self.cfg.timeout)

    def _schedule_retries(self, now: float) -> None:
        """Retries wait in RQ's scheduled registry; move the due ones back to their queues."""
        try:
            # every 10 s; every 2 s while another pool holds some of the locks (it may have died)
            every = 10 if len(self._scheduler.acquired_locks) == len(QUEUES) else 2
            if now - self._scheduler_locks_at > every:
                self._take_over_dead_schedulers()
                self._scheduler.acquire_locks()
                self._scheduler_locks_at = now
            if self._scheduler.acquired_locks:
                self._scheduler.enqueue_scheduled_jobs()
        except redis.RedisError:
            pass

    def _take_over_dead_schedulers(self) -> None:
        """A pool killed with kill -9 keeps RQ's scheduler locks until their TTL (a minute) lapses, and the
        retries it scheduled wait that long: release the locks of a pool whose heartbeat stopped."""
        pools = {p.get("id"): p for p in state.read_pools(self.conn)}
        wall = time.time()
        for name in (queue_name(p) for p in QUEUES):
            key = RQScheduler.get_locking_key(name)
            holder = self.conn.get(key)
            holder = holder.decode() if isinstance(holder, bytes) else holder
            if not holder or holder == self.pool_id or holder not in pools:
                continue  # free, ours, or not a mailcli pool (left alone)
            info = pools[holder]
            here_and_gone = info.get("host") == socket.gethostname() and not _alive(int(info.get("pid") or 0))
            if here_and_gone or wall - float(info.get("heartbeat") or 0) > DEAD_POOL_AFTER:
                if release_lock(self.conn, key, holder):
                    log.warning("took over the retry schedule of %s from pool %s, which is gone", name, holder)

    def _sweep_orphans(self, startup: bool = False) -> None:
        """Jobs held by workers that are gone (a crashed host, a killed pool) go back to their queues."""
        try:
            workers = {w["name"]: w for w in state.read_workers(self.conn)}
            wall = time.time()
            for p in QUEUES:
                reg = StartedJobRegistry(queue_name(p), connection=self.conn, serializer=JSONSerializer)
                for job_id, _execution in reg.get_job_and_execution_ids(cleanup=False):
                    holder = next((w for w in workers.values() if w.get("job_id") == job_id), None)
                    if holder is not None:
                        age = wall - float(holder.get("heartbeat") or 0)
                        if holder.get("state") != "stopped" and age < self.cfg.heartbeat_timeout:
                            continue
                        if holder["name"] in self.workers:
                            continue  # ours: the tick handles it
                    elif not startup:
                        continue  # RQ's own bookkeeping may lag a moment; only trust at startup
                    if requeue_started(self.conn, job_id):
                        self.recovered += 1
                        log.warning("requeued job %s of a worker that is gone", job_id)
            for name, w in workers.items():
                age = wall - float(w.get("heartbeat") or 0)
                if name not in self.workers and age > max(60.0, 4 * self.cfg.heartbeat_timeout):
                    state.forget_worker(self.conn, name)
        except redis.RedisError:
            pass

    # -- shutdown -------------------------------------------------------------------------

    def _install_signals(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self._signals += 1
        if self._signals == 1:
            log.warning(
                "stopping: running jobs may finish for up to %.0fs (Ctrl-C again to stop now)", self.cfg.timeout
            )
            self.begin_shutdown(self.cfg.timeout)
        else:
            log.warning("stopping now: running jobs are requeued")
            self.deadline = time.monotonic()

    def begin_shutdown(self, timeout: float) -> None:
        if self.stopping:
            return
        self.stopping = True
        self._feeding.clear()
        self.deadline = time.monotonic() + timeout
        for wp in list(self.workers.values()):
            self.stop_worker(wp, "stopping", "pool shutting down")

    def _enforce_deadline(self, now: float) -> None:
        for wp in list(self.workers.values()):
            action = verdicts.at_shutdown(wp.mode, now, self.deadline)
            if action == "stop":
                self.stop_worker(wp, "stopping", "pool shutting down")
            elif action == "kill":
                held = "; its job is requeued" if wp.job_id else " (it held no job)"
                self.kill_worker(wp, "shutdown deadline passed" + held)

    def _finish(self) -> None:
        for wp in list(self.workers.values()):
            self.kill_worker(wp, "supervisor exiting")
            try:
                wp.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
            self._bury(wp, wp.popen.returncode or -9)
        self.workers.clear()
        self._coordinator_stop.set()
        if self._coordinator is not None:
            self._coordinator.join(30)
        try:
            self._scheduler.release_locks()
        except redis.RedisError:
            pass
        try:
            state.forget_pool(self.conn, self.pool_id)
        except redis.RedisError:
            pass
        log.warning("pool %s stopped (%d jobs recovered from dead workers)", self.pool_id, self.recovered)

    # -- state for `status` ---------------------------------------------------------------

    def _publish(self) -> None:
        try:
            state.publish_pool(
                self.conn,
                self.pool_id,
                {
                    "id": self.pool_id,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "started": self.started,
                    "work_since": self.work_since,
                    "heartbeat": time.time(),
                    "min": self.cfg.min_workers,
                    "max": self.cfg.max_workers,
                    "target": self.last_decision.target,
                    "current": len(self.workers),
                    "decision": self.last_decision.reason,
                    "remote": self.cfg.remote,
                    "burst": self.cfg.burst,
                    "window": self.cfg.window or self.settings.window,
                    "max_memory_mb": self.cfg.max_memory_mb or "",
                    "state": "stopping" if self.stopping else "running",
                    "recovered": self.recovered,
                    "replaced": self.replaced,
                    "crash_reason": self.crash_reason,
                    "ticks": self.ticks,
                    "feeds": self.coordinator.feeds if self.coordinator is not None else 0,
                },
            )
        except redis.RedisError:
            pass


def _alive(pid: int) -> bool:
    try:
        return pid > 0 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _log_tail(path: Path, max_chars: int = 300) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:max_chars] if lines else ""


def _source_mtime() -> float:
    root = Path(__file__).resolve().parent.parent
    newest = 0.0
    for p in root.rglob("*.py"):
        try:
            newest = max(newest, p.stat().st_mtime)
        except OSError:
            pass
    return newest
