"""`mailcli report`: one self-contained HTML file from mailcli.report.data.

The page is a Jinja2 template with autoescaping on: every string from the store (subjects, bodies,
addresses, LLM answers) is escaped where it is placed. The charts are drawn by Chart.js, whose minified
file is embedded in the page with the page's own script and style, so the file opens offline and fetches
nothing. The data the scripts need is embedded as JSON in a ``<script type="application/json">`` element,
with ``<``, ``>`` and ``&`` written as JSON escapes so that no text in it can close the element.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from markupsafe import Markup

from mailcli import __version__
from mailcli.private import write_private
from mailcli.report.data import Scope, build
from mailcli.store.db import Store

_PACKAGE = "mailcli.report"


@dataclass
class ReportSummary:
    path: Path
    bytes: int
    emails: int
    conversations: int
    attention: int

    def line(self) -> str:
        return (
            f"report of {self.emails:,} emails in {self.conversations:,} conversations"
            f" ({self.attention:,} need attention) written to {self.path} ({self.bytes / 1e6:.1f} MB)"
        )


def _asset(name: str) -> str:
    return resources.files(_PACKAGE).joinpath(name).read_text(encoding="utf-8")


def _script_text(text: str) -> Markup:
    """A script's source, safe inside <script>: no `</script` can end the element early, and the
    source-map comment is dropped (a browser's developer tools would try to fetch the map)."""
    lines = [ln for ln in text.splitlines() if not ln.startswith("//# sourceMappingURL=")]
    return Markup("\n".join(lines).replace("</script", "<\\/script"))


def json_for_script(data: Any) -> Markup:
    """JSON that can sit inside <script type="application/json"> whatever its strings hold."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return Markup(text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e"))


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader(_PACKAGE, "templates"),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = lambda v: "" if v is None else f"{v:,}"
    env.filters["money"] = lambda v: "" if v is None else f"{v:,.2f}"
    env.filters["pct"] = lambda part, whole: f"{100 * part / whole:.1f}%" if whole else "–"
    env.filters["day"] = lambda v: (v or "")[:10]
    env.filters["when"] = lambda v: (v or "").replace("T", " ")[:16]
    return env


def render(data: dict[str, Any]) -> str:
    page_data = {
        "charts": data["charts"],
        "entities": data["entities"],
        "run": data["run"],
        # conversations that have a needs-attention card: the entity index links to it
        "anchors": {c["id"]: c["anchor"] for c in data["attention"]["cards"]},
    }
    template = _environment().get_template("report.html.j2")
    return template.render(
        r=data,
        version=__version__,
        page_data=json_for_script(page_data),
        chart_js=_script_text(_asset("vendor/chart.umd.min.js")),
        report_js=_script_text(_asset("static/report.js")),
        report_css=Markup(_asset("static/report.css").replace("</style", "<\\/style")),
    )


def write_report(store: Store, output: Path, scope: Scope | None = None) -> ReportSummary:
    """Build the report and write it to `output` (via a temporary file beside it, then renamed)."""
    data = build(store, scope)
    html = render(data)
    output = Path(output)
    write_private(output, lambda fh: fh.write(html))  # the page holds people's emails
    return ReportSummary(
        path=output,
        bytes=output.stat().st_size,
        emails=data["overview"]["emails"],
        conversations=data["overview"]["conversations"],
        attention=data["attention"]["total"],
    )
