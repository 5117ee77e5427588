"""Put on PYTHONPATH by a test: makes worker processes (only them) die on start, as broken worker code would."""

import os
import sys

if "mailcli.pool.worker" in getattr(sys, "orig_argv", []) and os.environ.get("MAILCLI_TEST_WORKER_CRASH"):
    sys.stderr.write("ImportError: cannot import name 'broken' from 'mailcli.tasks' (simulated)\n")
    sys.stderr.flush()
    os._exit(3)
