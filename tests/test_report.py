"""`mailcli report`: the page from a real store, checked as text and in a real headless Chromium.

The store is made the way a user makes one: the samples, a synthetic export and one hostile email are
ingested, then `mailcli analyze --inline` runs all three phases against the Ollama stand-in (which
answers some requests with invalid JSON, so that some phase 2 and 3 answers fall back and the call
ledger holds retries, repairs and fallbacks as a real run's does).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from conftest import SAMPLES, Home
from ollama_standin import OllamaStandin
from synth import write_jsonl

SECTIONS = ("overview", "attention", "charts", "entities", "run")
CHARTS = ("chart-priority", "chart-workflow", "chart-volume", "chart-senders", "chart-domains", "chart-funnel",
          "chart-throughput", "chart-latency")  # fmt: skip
HOSTILE_SUBJECT = '<script>window.__pwned = "subject"</script> URGENT emergency: PO 4500012345 line down'
HOSTILE_BODY = (
    "<script>window.__pwned = 'body'</script> Critical: please ship PO 4500012345 today, $12,500.00 at stake."
    ' <img src=x onerror="window.__pwned = \'img\'"> Case 00123456.'
)
# the reader takes the first <...> as the address: the name is 'Mallory "&amp;' and the address the tag's text
HOSTILE_FROM = 'Mallory "&amp; <b onmouseover=window.__pwned=1>bold</b>" <mallory@evil.example>'


def run_ok(home: Home, *args: str, env: dict | None = None):
    proc = home.run(*args, env=env, timeout=300)
    assert proc.returncode == 0, f"mailcli {' '.join(args)}: {proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def hostile_email() -> dict:
    return {"id": "hostile-1", "conversation_id": "hostile-conv", "subject": HOSTILE_SUBJECT, "body": HOSTILE_BODY,
            "from": HOSTILE_FROM, "to": "orders@acme-industrial.com", "date": "2025-06-02T08:00:00Z",
            "message_id": "<hostile-1@evil.example>", "importance": "high"}  # fmt: skip


@pytest.fixture(scope="module")
def analysed() -> Home:
    """A store analysed through all three phases, shared by the tests of this module (read-only)."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="mcr"))
    home = Home(path, None)
    try:
        synth = write_jsonl(path / "synth.jsonl", 400, seed=11)
        hostile = path / "hostile.jsonl"
        hostile.write_text(json.dumps(hostile_email()) + "\n")
        run_ok(home, "ingest", "--no-enqueue", str(SAMPLES / "graph.jsonl"), str(SAMPLES / "flat.jsonl"),
               str(SAMPLES / "malformed.jsonl"), str(synth), str(hostile))  # fmt: skip
        with OllamaStandin(slots=8, invalid_output_rate=0.15, seed=3) as ollama:
            run_ok(home, "analyze", "--inline", env={"OLLAMA_HOST": ollama.url})
        yield home
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def page(analysed: Home) -> Path:
    out = analysed.path / "out" / "report.html"
    proc = run_ok(analysed, "report", "-o", str(out))
    assert str(out) in proc.stdout.replace("\n", "")
    return out


# ------------------------------------------------------------------------------------ the file


def test_report_is_one_private_self_contained_file_with_every_section(analysed: Home, page: Path):
    html = page.read_text(encoding="utf-8")
    assert stat.S_IMODE(page.stat().st_mode) == 0o600  # it holds people's emails
    for section in SECTIONS:
        assert f'id="{section}" data-section="{section}"' in html
    # nothing to fetch: no external scripts, styles, images or frames; the CSP forbids any anyway
    assert not re.search(r"<(script|img|iframe|link)\b[^>]*\b(src|href)=", html, re.I)
    assert "default-src 'none'" in html
    assert "sourceMappingURL" not in html
    assert "Chart.js v4" in html  # the library is inside
    # what the store holds is what the page says
    with analysed.store() as store:
        emails = store.conn.execute("SELECT count(*) FROM emails").fetchone()[0]
        convs = store.conn.execute("SELECT count(*) FROM conversations").fetchone()[0]
        fallbacks = store.conn.execute(
            "SELECT count(*) FROM email_analysis WHERE json_extract(phase2, '$.source') = 'fallback'"
        ).fetchone()[0]
        calls = store.conn.execute("SELECT count(*) FROM llm_calls").fetchone()[0]
        rejects = store.conn.execute("SELECT count(*) FROM rejects").fetchone()[0]
    assert fallbacks > 0 and calls > 0 and rejects > 0  # the store exercises every part of the page
    assert f"<title>mailcli report · {emails:,} emails</title>" in html
    assert f'<div class="v">{convs:,}</div><div class="k">conversations</div>' in html
    assert f"phase 2 answers · {fallbacks:,} fell back" in html
    assert f"{calls:,} LLM calls" in html
    assert f'<div class="v">{rejects:,}</div><div class="k">rejected records</div>' in html
    assert "Why phase 2 fell back" in html and "invalid answer after one repair" in html
    data = _page_data(html)
    assert sum(data["charts"]["priority"]["conversations"]) == convs
    assert data["run"]["calls"] == calls and data["run"]["latency"]["series"]
    assert {"1", "2", "3"} >= set(data["run"]["throughput"]["phases"]) >= {"2", "3"}
    assert sum(sum(v) for v in data["run"]["throughput"]["phases"].values()) == calls


def test_entity_index_counts_match_the_store(analysed: Home, page: Path):
    data = _page_data(page.read_text(encoding="utf-8"))["entities"]
    kinds = {"PO": "po_numbers", "Quote": "quote_numbers", "Case": "case_numbers", "Part": "part_numbers"}
    checked = 0
    with analysed.store() as store:
        for kind_index, value, amount, n_emails, n_convs, refs in data["rows"][::7]:
            field = kinds[data["kinds"][kind_index]]
            emails, convs, largest = store.conn.execute(
                "SELECT count(*), count(DISTINCT ea.conversation_id),"
                " max(json_extract(ea.phase1, '$.financial_impact'))"
                f" FROM email_analysis ea, json_each(ea.phase1, '$.{field}') j WHERE j.value = ?",
                (value,),
            ).fetchone()
            assert (n_emails, n_convs, amount) == (emails, convs, round(largest, 2)), value
            assert 1 <= len(refs) == min(3, convs)
            checked += 1
    assert checked > 20


def test_needs_attention_lists_critical_then_high_with_what_each_phase_found(page: Path):
    html = page.read_text(encoding="utf-8")
    cards = re.findall(r'<article class="card p-(critical|high)" id="conv-(\d+)">', html)
    assert cards and [int(n) for _, n in cards] == list(range(1, len(cards) + 1))
    prios = [p for p, _ in cards]
    assert prios == sorted(prios, key=["critical", "high"].index)  # critical first
    # every card has its anchor in the index table and a link to its emails
    for _, n in cards:
        assert f'href="#conv-{n}"' in html and f'href="#conv-{n}-emails"' in html
        assert f'<details id="conv-{n}-emails"' in html
    assert "Phase 2: action items and risks" in html and "Phase 3: summary and next steps" in html
    assert re.search(r"<b>PO</b> \d", html) and re.search(r"<b>amounts</b> [\d,]+\.\d\d", html)
    assert "<ol><li>predicted next steps" in html  # phase 3's next steps (the stand-in's words)


def test_email_text_is_escaped_everywhere(page: Path):
    html = page.read_text(encoding="utf-8")
    assert "__pwned" in html  # the hostile email is in the page ...
    assert "<script>window.__pwned" not in html  # ... never as markup
    assert "&lt;script&gt;window.__pwned = &#34;subject&#34;&lt;/script&gt; URGENT" in html
    assert "&lt;img src=x onerror=" in html
    assert "<img" not in html
    # the page's own scripts: the data, Chart.js and the report's; nothing else opens a <script>
    assert len(re.findall(r"<script\b", html)) == 3


def _page_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    assert m
    return json.loads(m.group(1))


def test_since_and_priority_narrow_the_report(analysed: Home):
    out = analysed.path / "critical.html"
    run_ok(analysed, "report", "-o", str(out), "--priority", "critical", "--since", "2025-06-01")
    html = out.read_text(encoding="utf-8")
    assert "critical conversations, emails dated 2025-06-01 or later" in html
    assert re.findall(r'<article class="card p-(\w+)"', html) and set(re.findall(r'<article class="card p-(\w+)"', html)) == {"critical"}
    data = _page_data(html)
    assert data["charts"]["priority"]["labels"] == ["critical"]
    assert all(w >= "2025-05-26" for w in data["charts"]["volume"]["weeks"])  # the week holding June 1 on
    with analysed.store() as store:
        expected = store.conn.execute(
            "SELECT count(*) FROM emails e JOIN conversations c ON c.id = e.conversation_id"
            " WHERE c.priority = 'critical' AND c.last_date >= '2025-06-01' AND e.date >= '2025-06-01'"
        ).fetchone()[0]
        calls = store.conn.execute(
            "SELECT count(*) FROM llm_calls WHERE conversation_id IN"
            " (SELECT id FROM conversations WHERE priority = 'critical' AND last_date >= '2025-06-01')"
        ).fetchone()[0]
    assert 0 < expected
    assert f"<title>mailcli report · {expected:,} emails</title>" in html
    assert data["run"]["calls"] == calls


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "last tuesday"], "--since 'last tuesday' is not a date: give it as YYYY-MM-DD"),
        (["--priority", "urgent"], "unknown --priority 'urgent': use critical, high, medium or low"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(analysed: Home, args, message):
    proc = analysed.run("report", "-o", str(analysed.path / "x.html"), *args)
    assert proc.returncode == 2
    assert message in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    assert not (analysed.path / "x.html").exists()


def test_no_database_is_one_line(home: Home):
    proc = home.run("report", "-o", str(home.path / "r.html"))
    assert proc.returncode == 1 and "no database at" in proc.stderr and "mailcli ingest" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------- in a browser


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def browser():
    """Chromium from the distribution (`make test` installs it), driven by Playwright. Skipped only when
    there is no Chromium to be had; on CI (CI=true) a missing one is a failure, not a skip."""
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if executable is None or sync_playwright is None:
        missing = "no chromium on PATH (`make test` installs Debian's)" if executable is None else "playwright not installed (`make install`)"
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run on CI: {missing}")
        pytest.skip(f"browser tests skipped: {missing}")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


class Opened:
    def __init__(self, browser, path: Path, width: int = 1400):
        self.page = browser.new_page(viewport={"width": width, "height": 1000})
        self.console: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(path.as_uri())
        self.page.wait_for_function("window.mailcliReport && window.mailcliReport.ready", timeout=20_000)

    def close(self):
        self.page.close()


# draws: for every canvas, whether Chart.js made a chart on it and how many of its pixels are not blank
_CHART_STATE = """() => Array.from(document.querySelectorAll('canvas')).map(c => {
  const ctx = c.getContext('2d');
  const img = ctx.getImageData(0, 0, c.width, c.height).data;
  let inked = 0;
  for (let i = 3; i < img.length; i += 4 * 7) if (img[i] !== 0) inked++;
  return {id: c.id, chart: !!Chart.getChart(c), width: c.width, height: c.height, inked: inked};
})"""


def test_page_renders_in_chromium_with_every_section_and_chart_and_no_console_errors(browser, page: Path, tmp_path):
    opened = Opened(browser, page)
    try:
        pg = opened.page
        for section in SECTIONS:
            box = pg.locator(f"#{section}").bounding_box()
            assert box and box["height"] > 80, section
        charts = {c["id"]: c for c in pg.evaluate(_CHART_STATE)}
        assert set(charts) == set(CHARTS)
        for cid, c in charts.items():
            assert c["chart"] and c["width"] > 100 and c["height"] > 100, c
            assert c["inked"] > 200, f"{cid} looks blank: {c}"
        # the entity index: rows, paging, filtering and sorting in the page
        rows = pg.locator("#entity-table tbody tr")
        assert rows.count() == 50
        first_page = pg.locator("#entity-page").inner_text()
        assert first_page.startswith("page 1 of ")
        pg.click("#entity-next")
        assert pg.locator("#entity-page").inner_text().startswith("page 2 of ")
        number = pg.evaluate("JSON.parse(document.getElementById('report-data').textContent).entities.rows[0][1]")
        pg.fill("#entity-filter", number)
        assert 1 <= rows.count() < 50
        assert all(number in t for t in rows.locator("td:nth-child(2)").all_inner_texts())
        pg.fill("#entity-filter", "")
        pg.select_option("#entity-kind", label="Case")
        assert set(rows.locator("td:nth-child(1)").all_inner_texts()) == {"Case"}
        pg.click("#entity-table th[data-col='3']")  # emails, most first
        counts = [int(t.replace(",", "")) for t in rows.locator("td:nth-child(4)").all_inner_texts()]
        assert counts == sorted(counts, reverse=True)
        # a conversation's anchor opens its emails
        pg.click("#conv-1 a.emails-link")
        assert pg.locator("#conv-1-emails").evaluate("d => d.open")
        assert pg.locator("#conv-1-emails li").count() >= 1
        shot = tmp_path / "report.png"
        pg.screenshot(path=str(shot), full_page=False)
        assert shot.stat().st_size > 20_000
        assert opened.console == []
        assert [u for u in opened.requests if not u.startswith("file:")] == []
    finally:
        opened.close()


def test_hostile_email_stays_text_in_the_browser(browser, page: Path):
    opened = Opened(browser, page)
    try:
        pg = opened.page
        assert pg.evaluate("window.__pwned") is None and opened.dialogs == []
        assert pg.evaluate("document.querySelectorAll('script').length") == 3
        assert pg.evaluate("document.querySelectorAll('img').length") == 0
        text = pg.locator("#attention").inner_text()
        assert HOSTILE_SUBJECT in text
        assert 'Mallory "&amp; <b onmouseover=window.__pwned=1>' in pg.locator("#attention").text_content()
        assert pg.evaluate("document.querySelectorAll('[onmouseover], [onerror]').length") == 0
        # the entity index (drawn by the page's script from the JSON data) shows the subject as text too
        pg.fill("#entity-filter", "4500012345")
        assert HOSTILE_SUBJECT in pg.locator("#entity-table tbody").inner_text()
        assert pg.evaluate("window.__pwned") is None
        assert opened.console == []
    finally:
        opened.close()


def test_a_store_with_no_analysis_yet_renders_too(browser, home: Home):
    run_ok(home, "ingest", "--no-enqueue", str(SAMPLES / "flat.jsonl"))
    out = home.path / "r.html"
    run_ok(home, "report", "-o", str(out))
    opened = Opened(browser, out)
    try:
        pg = opened.page
        assert "No LLM calls are recorded" in pg.locator("#run").inner_text()
        assert "No critical or high conversations" in pg.locator("#attention").inner_text()
        assert pg.locator("#charts p.empty").count() >= 4  # said, not drawn blank
        assert opened.console == []
    finally:
        opened.close()
