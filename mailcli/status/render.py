"""Drawing a status Snapshot with Rich. Pure: the snapshot in, renderables out; nothing is read here.

`StatusView(snapshot)` lays itself out for the width it is given when drawn, so one object serves a
single print, `--watch` under Rich Live (which redraws it on a resize too) and the 80-column tests.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from mailcli.status.snapshot import OllamaHost, PoolInfo, Snapshot, WorkerInfo

WIDE = 120  # from this many columns on, tables show every column
OK, BAD, WARN, DIM = "green", "bold red", "yellow", "dim"
STATE_STYLE = {"busy": "cyan", "idle": "green", "starting": "yellow", "stopped": DIM}
BREAKER_STYLE = {"closed": OK, "half-open": WARN, "open": BAD}


# --------------------------------------------------------------------------------------------------
# formatting


def duration(seconds: float | None) -> str:
    """12s, 4m05s, 1h02m, 3d04h; an em dash for unknown."""
    if seconds is None:
        return "—"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def size(n: float | None) -> str:
    if n is None:
        return "—"
    mb = n / 2**20
    return f"{mb / 1024:.1f}G" if mb >= 1024 else f"{mb:.0f}M"


def count(n: int | None) -> str:
    return "—" if n is None else f"{n:,}"


def ms(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v / 1000:.1f}s" if v >= 10_000 else f"{v:.0f}ms"


def bar(done: int, total: int, width: int) -> Text:
    """A plain-character bar: it reads the same in a terminal, a log file and a test capture."""
    filled = min(width, round(width * done / total)) if total else 0
    return Text.assemble(("█" * filled, "green"), ("░" * (width - filled), DIM))


def short_host(url: str) -> str:
    return url.removeprefix("http://")


def short_worker(w: WorkerInfo) -> str:
    """mailcli.<host>.<pid>.<n> -> <pid>.<n>: the host has a column of its own (or, at 80 columns,
    is the pool's); JSON and Prometheus carry the full name."""
    name = w.name.removeprefix("mailcli.")
    if w.host and name.startswith(w.host + "."):
        name = name[len(w.host) + 1 :]
    return name


def _title(text: str) -> Rule:
    return Rule(Text(text, style="bold"), align="left", style=DIM)


def _grid() -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    return grid


def _table(*columns: tuple[str, str]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, expand=False, header_style="bold")
    for name, justify in columns:
        table.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    return table


def _line(text: Text | str) -> Text:
    """One line whatever the width: cut with an ellipsis rather than wrapped."""
    t = Text(text) if isinstance(text, str) else text
    t.no_wrap = True
    t.overflow = "ellipsis"
    return t


# --------------------------------------------------------------------------------------------------
# sections


def header(snap: Snapshot) -> RenderableType:
    when = snap.taken_at.replace("T", " ").replace("+00:00", " UTC")
    top = Text.assemble(("mailcli status", "bold"), f"  {when} on {snap.observer}", style="")
    grid = _grid()
    r = snap.redis
    if r.state == "ok":
        facts = ", ".join(x for x in (r.version and f"v{r.version}", r.used_memory and f"{size(r.used_memory)} used") if x)
        grid.add_row("redis", Text.assemble(("✓ ", OK), r.where, (f" ({facts})" if facts else "", DIM)))
    elif r.state == "not running":
        grid.add_row("redis", Text.assemble(("– ", WARN), r.where, (" (not running)", WARN)))
    else:
        grid.add_row("redis", Text.assemble(("✗ unreachable: ", BAD), (r.error or r.where, "red")))
    d = snap.database
    if d.available:
        grid.add_row("database", Text.assemble(("✓ ", OK), d.path))
    else:
        grid.add_row("database", Text.assemble(("✗ ", BAD), d.path, (f" ({d.error})" if d.error else "", "red")))
    parts: list[RenderableType] = [top, grid]
    parts.extend(Text(f"• {n}", style=WARN) for n in snap.notes)
    return Group(*parts)


def pools(snap: Snapshot) -> RenderableType:
    parts: list[RenderableType] = [_title("Pool")]
    if snap.redis.state != "ok":
        why = "Redis unreachable" if snap.redis.state == "unreachable" else "the embedded Redis is not running"
        parts.append(Text(f"unknown: {why}", style=DIM))
        return Group(*parts)
    if not snap.pools:
        parts.append(Text("no pool running: start one with `mailcli workers start`", style=WARN))
    for p in snap.pools:
        parts.append(_pool(p))
    return Group(*parts)


def _pool(p: PoolInfo) -> Table:
    grid = _grid()
    where = Text.assemble(
        (p.host or "?", "bold"),
        f" pid {p.pid}" if p.pid else "",
        (" (another host)", DIM) if p.remote_host else "",
        f" · up {duration(p.uptime_s)} · ",
        (p.state or "?", OK if p.state == "running" else WARN),
    )
    if p.stale:
        where.append(f" · STALE: no heartbeat for {duration(p.heartbeat_age_s)}", style=BAD)
    grid.add_row("supervisor", where)
    flags = [f for f, on in (("burst", p.burst), ("workers only", p.workers_only)) if on]
    if p.max_memory_mb:
        flags.append(f"max {p.max_memory_mb:.0f} MB each")
    grid.add_row(
        "workers",
        f"{count(p.current)} running · target {count(p.target)} · min {count(p.min)} · max {count(p.max)}"
        + (f" · {', '.join(flags)}" if flags else ""),
    )
    grid.add_row("last scaling", p.decision or "—")
    if p.recovered or p.replaced:
        grid.add_row("recovered", f"jobs requeued from dead workers: {p.recovered} · workers replaced: {p.replaced}")
    if p.crash_reason:
        grid.add_row("crash", Text(p.crash_reason, style="red"))
    return grid


def workers(snap: Snapshot, width: int) -> RenderableType:
    parts: list[RenderableType] = [_title(f"Workers ({len(snap.workers)})")]
    if snap.redis.state != "ok":
        parts.append(Text("unknown", style=DIM))
        return Group(*parts)
    if not snap.workers:
        parts.append(Text("none", style=DIM))
        return Group(*parts)
    wide = width >= WIDE
    table = _table()
    # names, hosts and job ids are cut rather than wrapped: one line per worker keeps the table legible
    table.add_column("worker", no_wrap=True, overflow="ellipsis", max_width=24)
    if wide:
        table.add_column("host", no_wrap=True, overflow="ellipsis", max_width=24)
        table.add_column("pid", justify="right")
    table.add_column("state")
    if wide:
        table.add_column("job", no_wrap=True, overflow="ellipsis", max_width=34)
    for name in ("age", "done", "failed", "memory", "cpu", "beat"):
        table.add_column(name, justify="right", no_wrap=True)
    for w in snap.workers:
        row: list[RenderableType] = [short_worker(w)]
        if wide:
            row += [w.host, str(w.pid or "")]
        state = Text(w.state or "?", style=STATE_STYLE.get(w.state, ""))
        if w.stale:
            state = Text("stale", style=BAD)
        mem = size(w.rss_bytes) + (f"/{size(w.rss_limit_bytes)}" if w.rss_limit_bytes else "")
        over = w.rss_bytes and w.rss_limit_bytes and w.rss_bytes > w.rss_limit_bytes
        row.append(state)
        if wide:
            row.append(w.job_id)
        row += [
            duration(w.job_age_s) if w.job_id else "",
            count(w.jobs_done),
            Text(count(w.jobs_failed), style="red" if w.jobs_failed else ""),
            Text(mem, style="red" if over else ""),
            "—" if w.cpu_percent is None else f"{w.cpu_percent:.0f}%",
            Text(duration(w.heartbeat_age_s), style=BAD if w.stale else ""),
        ]
        table.add_row(*row)
    parts.append(table)
    return Group(*parts)


def queues(snap: Snapshot) -> RenderableType:
    q = snap.queues
    parts: list[RenderableType] = [_title("Queues")]
    if q.known:
        table = _table(("priority", "left"), ("queued", "right"), ("started", "right"),
                       ("failed", "right"), ("retrying", "right"))  # fmt: skip
        for d in q.priorities:
            table.add_row(d.priority, count(d.queued), count(d.started),
                          Text(count(d.failed), style="red" if d.failed else ""), count(d.retrying))  # fmt: skip
        table.add_row(
            Text("total", style="bold"),
            *(count(sum(getattr(d, k) for d in q.priorities)) for k in ("queued", "started", "failed", "retrying")),
        )
        parts.append(table)
    else:
        parts.append(Text("Redis queues unknown", style=DIM))
    facts = []
    if q.pending is not None:
        facts.append(f"{count(q.pending)} conversations pending" + (" (in SQLite)" if q.pending_from == "sqlite" else ""))
    if q.in_flight is not None:
        facts.append(f"{count(q.in_flight)} in Redis" + (f" / window {count(q.window)}" if q.window else ""))
    if q.unsaved_results:
        facts.append(f"{count(q.unsaved_results)} results not yet saved")
    if facts:
        parts.append(Text("backlog: " + " · ".join(facts)))
    return Group(*parts)


def progress(snap: Snapshot, width: int) -> RenderableType:
    pr = snap.progress
    parts: list[RenderableType] = [_title("Progress")]
    if not pr.known:
        parts.append(Text("unknown: no database on this host", style=DIM))
        return Group(*parts)
    bar_width = 30 if width >= WIDE else 16
    table = _table(("phase", "left"), ("", "left"), ("done", "right"), ("of emails", "right"),
                   ("", "right"), ("fallback", "right"))  # fmt: skip
    for ph in pr.phases:
        pct = ph.done / ph.total * 100 if ph.total else 0.0
        table.add_row(
            str(ph.phase),
            bar(ph.done, ph.total, bar_width),
            count(ph.done),
            count(ph.total),
            f"{pct:.0f}%",
            Text(count(ph.fallbacks), style=WARN if ph.fallbacks else "") if ph.phase > 1 else "",
        )
    parts.append(table)
    grid = _grid()
    conv = " · ".join(f"{count(n)} {s}" for s, n in sorted(pr.conversations.items()))
    grid.add_row("conversations", conv or "none")
    if pr.tiers:
        grid.add_row(
            "tiers",
            " · ".join(f"{t}: {count(n)} ({count(pr.tier_emails.get(t))} emails)" for t, n in pr.tiers.items()),
        )
    grid.add_row(
        "throughput",
        Text.assemble(
            f"{pr.rate_per_min:,.0f} emails/min",
            (f" over {duration(pr.rate_observed_s)}  " if pr.rate_observed_s else "  ", DIM),
            (pr.sparkline, "cyan"),
            (f"  {len(pr.per_minute)} min", DIM),
        ),
    )
    if pr.remaining:
        if pr.eta_s is not None:
            grid.add_row("ETA", f"{duration(pr.eta_s)} for {count(pr.remaining)} emails")
        else:
            grid.add_row("ETA", Text(f"— {count(pr.remaining)} emails to go, none analysed lately", style=DIM))
    if pr.rejects:
        grid.add_row("rejected", Text(f"{count(pr.rejects)} input records", style=WARN))
    parts.append(grid)
    return Group(*parts)


def ollama(snap: Snapshot, width: int) -> RenderableType:
    o = snap.ollama
    parts: list[RenderableType] = [_title(f"Ollama (ledger: last {o.window_min} min)")]
    if not o.hosts:
        parts.append(Text("no hosts", style=DIM))
        return Group(*parts)
    wide = width >= WIDE  # narrower: the adaptive limit, queueing and tokens/s before p95 and calls/min
    columns = [("host", "left"), ("up", "left"), ("loaded", "left"), ("limit", "right"), ("waiting", "right"),
               ("tok/s", "right"), ("p50", "right")]
    columns += [("p95", "right"), ("calls/min", "right")] if wide else []
    table = _table(*columns, ("breaker", "left"))
    errors: list[OllamaHost] = []
    for h in o.hosts:
        if h.reachable is None:
            up = Text("?", style=DIM)
        else:
            up = Text("✓", style=OK) if h.reachable else Text("✗", style=BAD)
        if h.error:
            errors.append(h)
        cells: list[RenderableType] = [
            short_host(h.url) if not wide else h.url,
            up,
            ", ".join(h.loaded_models) or Text("—", style=DIM),
            _limit(h),
            ms(h.wait_ms),
            Text("—", style=DIM) if h.tokens_per_s is None else f"{h.tokens_per_s:,.0f}",
            ms(h.p50_ms),
        ]
        cells += [ms(h.p95_ms), f"{h.calls_per_min:.1f}"] if wide else []
        table.add_row(*cells, Text(h.breaker or "—", style=BREAKER_STYLE.get(h.breaker or "", DIM)))
    parts.append(table)
    for h in errors:
        parts.append(_line(Text.assemble((f"{short_host(h.url)}: ", "bold"), (h.error or "", "red"))))
    fb = o.fallbacks
    if fb:
        parts.append(Text(f"fallback results stored: phase 2 {count(fb.get('2', 0))} · phase 3 {count(fb.get('3', 0))}"))
    return Group(*parts)


def _limit(h: OllamaHost) -> RenderableType:
    """``in flight/limit``: the requests every worker has at the host now, against its adaptive limit."""
    if h.limit is None:
        return Text("—", style=DIM)
    text = f"{h.in_flight or 0}/{h.limit:.1f}"
    return Text(text, style=WARN) if h.busy or h.timeouts else Text(text)


def failures(snap: Snapshot) -> RenderableType:
    parts: list[RenderableType] = [_title("Last failures")]
    if not snap.failures:
        parts.append(Text("none", style=DIM))
    for f in snap.failures:
        when = (f.at or "")[11:19]
        parts.append(
            _line(Text.assemble((f"{when} ", DIM), (f"{f.kind} ", "bold"), (f"{f.id}: ", ""), (f.message, "red")))
        )
    return Group(*parts)


# --------------------------------------------------------------------------------------------------
# the whole view


def sections(snap: Snapshot, width: int) -> Iterable[RenderableType]:
    yield header(snap)
    yield pools(snap)
    yield workers(snap, width)
    yield queues(snap)
    yield progress(snap, width)
    yield ollama(snap, width)
    yield failures(snap)


class StatusView:
    """A snapshot as Rich draws it, laid out for the width of the moment."""

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Group(*sections(self.snapshot, options.max_width))
