"""Write notmuch's threads of a mail folder as JSON: a sorted list of sorted Message-ID lists.

    python tests/data/notmuch/threads/notmuch_threads.py tests/data/notmuch/lkml > lkml.json

How the JSON files beside this script were made (notmuch 0.37). notmuch indexes a copy of the
folder in a temporary directory with its own configuration, so nothing of the user's is read or
written. tests/test_threading_notmuch.py compares mailcli's conversations with these files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile


def notmuch_threads(folder: str) -> list[list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        mail = os.path.join(tmp, "mail")
        shutil.copytree(folder, mail)
        config = os.path.join(tmp, "config")
        with open(config, "w") as f:
            f.write(f"[database]\npath={mail}\n[new]\ntags=inbox\n[maildir]\nsynchronize_flags=false\n")
        env = dict(os.environ, NOTMUCH_CONFIG=config)

        def run(*args: str) -> str:
            return subprocess.run(["notmuch", *args], env=env, check=True, capture_output=True, text=True).stdout

        run("new", "--quiet")
        threads = []
        for thread in run("search", "--output=threads", "*").split():
            ids = run("search", "--output=messages", thread).split()
            threads.append(sorted(m.removeprefix("id:").lower() for m in ids))
    return sorted(threads)


def dumps(threads: list[list[str]]) -> str:
    return "[\n" + ",\n".join(json.dumps(t) for t in threads) + "\n]\n"


if __name__ == "__main__":
    sys.stdout.write(dumps(notmuch_threads(sys.argv[1])))
