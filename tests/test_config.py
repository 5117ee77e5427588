"""Settings: a bad value names where it was set (the variable, the key of mailcli.toml, the flag)
and what it must be; a key mailcli.toml does not know is an error, not silently ignored."""

from __future__ import annotations

import pytest
from conftest import SAMPLES

from mailcli.config import ConfigError, load_settings


def _toml(tmp_path, text: str):
    (tmp_path / "mailcli.toml").write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MAILCLI_WINDOW": "-5"}, "MAILCLI_WINDOW must be at least 1, got -5"),
        (
            {"MAILCLI_LLM_MAX_IN_FLIGHT": "many"},
            "MAILCLI_LLM_MAX_IN_FLIGHT must be a whole number, got 'many'",
        ),
        ({"MAILCLI_HEARTBEAT_TIMEOUT": "0"}, "MAILCLI_HEARTBEAT_TIMEOUT must be above 0"),
    ],
)
def test_a_bad_environment_value_names_its_variable(tmp_path, env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(cwd=tmp_path, env=env)


def test_a_bad_flag_value_names_the_flag(tmp_path):
    with pytest.raises(ConfigError, match="--window must be at least 1"):
        load_settings(cwd=tmp_path, env={}, window=0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('datadir = "x"\n', "unknown setting 'datadir' \\(did you mean 'data_dir'\\?\\)"),
        ("[mailcli]\nwindoww = 5\n", "unknown setting 'windoww' \\(did you mean 'window'\\?\\)"),
        ("zzz = 1\n", "unknown setting 'zzz'; known: .*data_dir"),
        ("data_dir = 5\n", "data_dir in .*mailcli.toml must be a string \\(in quotes\\), got 5"),
        ("phase2_model = 3\n", "phase2_model in .*mailcli.toml must be a string"),
        ("window = -1\n", "window in .*mailcli.toml must be at least 1"),
        (
            "[senders]\nown_domain = ['a.com']\n",
            "unknown setting 'own_domain' in \\[senders\\]; use own_domains",
        ),
        ("[senders]\nown_domains = 'a.com'\n", None),  # one domain as a string is accepted
    ],
)
def test_mailcli_toml_names_a_bad_or_unknown_key(tmp_path, text, message):
    _toml(tmp_path, text)
    if message is None:
        assert load_settings(cwd=tmp_path, env={}).own_domains == ("a.com",)
        return
    with pytest.raises(ConfigError, match=message):
        load_settings(cwd=tmp_path, env={})


def test_mailcli_toml_good_keys_and_aliases(tmp_path):
    _toml(
        tmp_path,
        '[mailcli]\ndata_dir = "d"\nredis = "redis://h:1/0"\nwindow = 50\n\n[senders]\nkey_senders = ["Boss@X.com"]\n',
    )
    s = load_settings(cwd=tmp_path, env={})
    assert (str(s.home), s.redis_url, s.window, s.key_senders) == ("d", "redis://h:1/0", 50, ("boss@x.com",))


def test_the_cli_says_a_bad_setting_in_one_line(home):
    (home.path / "mailcli.toml").write_text('datadir = "x"\n', encoding="utf-8")
    proc = home.run("status", "--json")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "did you mean 'data_dir'" in proc.stderr


def test_an_unusable_data_directory_names_the_setting(home, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = home.run(
        "ingest", "--no-enqueue", str(SAMPLES / "flat.jsonl"), env={"MAILCLI_HOME": str(blocker / "data")}
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "cannot use the data directory" in proc.stderr and "set MAILCLI_HOME" in proc.stderr


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("http://gpu1:11434,gpu2", ["http://gpu1:11434", "http://gpu2:11434"]),
        ("[::1]:11434", ["http://[::1]:11434"]),
        ("https://ollama.example.com/proxy", ["https://ollama.example.com:443/proxy"]),
        ("not a url", None),
        ("ftp://x", None),
        ("http://h:99999", None),
        (" , ", None),
    ],
)
def test_ollama_host_is_checked_when_read(tmp_path, value, ok):
    """A typo in OLLAMA_HOST is one error naming it, not a host that is later 'not reachable'."""
    if ok is None:
        with pytest.raises(ConfigError, match="^OLLAMA_HOST "):
            load_settings(cwd=tmp_path, env={"OLLAMA_HOST": value})
    else:
        from mailcli.llm.hosts import parse_hosts

        assert parse_hosts(load_settings(cwd=tmp_path, env={"OLLAMA_HOST": value}).ollama_host) == ok
