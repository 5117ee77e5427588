"""Job functions for the baselines: importable by a plain `rq worker` (benchmarks/ on PYTHONPATH)."""


def noop(payload=None):
    return payload


def phase1_one(payload):
    """One email's phase 1: the unit of work of a plain `rq worker` with one job per email."""
    from mailcli.analysis.phase1 import analyze_email

    return analyze_email(payload["subject"], payload["body"], importance=payload.get("importance", "normal")).priority
