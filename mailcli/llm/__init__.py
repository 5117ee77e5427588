"""Ollama: the client on httpx (client.py), its per-host limits (limiter.py), the rules of the wire
that `mailcli status` shares on the standard library (wire.py), OLLAMA_HOST parsing (hosts.py), the
errors (errors.py) and the start-of-run check (preflight.py). Import each name from its module."""
