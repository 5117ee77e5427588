"""Job functions for the baselines: importable by a plain `rq worker` as `trivial.X` (benchmarks/ on
PYTHONPATH) or as `benchmarks.trivial.X` (the repository root on PYTHONPATH, as in a bench Home)."""


def noop(payload=None):
    return payload


def phase1_one(payload):
    """One email's phase 1: the unit of work of a plain `rq worker` with one job per email."""
    from mailcli.analysis.phase1 import analyze_email

    return analyze_email(payload["subject"], payload["body"], importance=payload.get("importance", "normal")).priority


def phase1_email(email):
    """Plain RQ, one job per email: the whole phase 1 result of one email, as the pool computes it.

    The result stays in Redis (RQ's result_ttl); nothing is written to SQLite."""
    from mailcli.analysis.phase1 import analyze_email

    return analyze_email(
        email.get("subject") or "",
        email.get("body") or "",
        importance=email.get("importance") or "normal",
        sender=email.get("from") or "",
    ).to_dict()


def hold_first(payload):
    """Block on the first attempt (until the worker holding it is killed); return at once after."""
    from rq import get_current_job

    conn = get_current_job().connection
    attempt = int(conn.incr(f"bench:attempt:{payload['id']}"))
    if attempt == 1:
        conn.blpop([f"bench:release:{payload['id']}"], timeout=int(payload.get("max_seconds", 120)))
    return attempt
