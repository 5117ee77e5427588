/* mailcli report: draws the charts (Chart.js) and the entity index from the embedded JSON.
   Text from the data only ever goes into the page through textContent, never as HTML. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var report = (window.mailcliReport = { charts: {}, errors: [], ready: false });
  var COLORS = {
    critical: "#c0392b", high: "#e67e22", medium: "#f1c40f", low: "#7f8c8d", "not analysed": "#bdc3c7",
  };
  var PALETTE = ["#2e6fdb", "#17a589", "#8e44ad", "#e67e22", "#c0392b", "#7f8c8d", "#f1c40f", "#1abc9c",
                 "#34495e", "#d35400"];
  var money = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  var num = new Intl.NumberFormat();

  Chart.defaults.animation = false; // drawn at once: the page is read, printed and screenshotted
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.plugins.legend.labels.boxWidth = 12;

  function chart(id, config) {
    var canvas = document.getElementById(id);
    if (!canvas) return;
    try {
      report.charts[id] = new Chart(canvas, config);
    } catch (e) {
      report.errors.push(id + ": " + e);
      throw e;
    }
  }

  function empty(id, text) {
    var canvas = document.getElementById(id);
    if (!canvas) return;
    var p = document.createElement("p");
    p.className = "dim empty";
    p.textContent = text;
    canvas.parentNode.replaceChild(p, canvas);
    report.charts[id] = "empty";
  }

  var c = data.charts;
  if (c.priority.labels.length) {
    chart("chart-priority", {
      type: "bar",
      data: {
        labels: c.priority.labels,
        datasets: [{ label: "conversations", data: c.priority.conversations,
                     backgroundColor: c.priority.labels.map(function (p) { return COLORS[p] || "#999"; }) }],
      },
      options: { plugins: { legend: { display: false } } },
    });
  } else empty("chart-priority", "no conversations");

  if (c.workflow.labels.length) {
    chart("chart-workflow", {
      type: "doughnut",
      data: { labels: c.workflow.labels, datasets: [{ data: c.workflow.emails, backgroundColor: PALETTE }] },
      options: { plugins: { legend: { position: "right" } } },
    });
  } else empty("chart-workflow", "no analysed emails");

  if (c.volume.weeks.length) {
    chart("chart-volume", {
      data: {
        labels: c.volume.weeks,
        datasets: [
          { type: "bar", label: "critical", data: c.volume.critical, backgroundColor: COLORS.critical, stack: "p" },
          { type: "bar", label: "high", data: c.volume.high, backgroundColor: COLORS.high, stack: "p" },
          { type: "bar", label: "other", backgroundColor: "#aab7c4", stack: "p",
            data: c.volume.emails.map(function (n, i) { return n - c.volume.critical[i] - c.volume.high[i]; }) },
          { type: "line", label: "mean urgency (0-10)", data: c.volume.urgency, yAxisID: "u",
            borderColor: "#2e6fdb", backgroundColor: "#2e6fdb", pointRadius: 0, spanGaps: true, tension: 0.2 },
        ],
      },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: true, ticks: { maxTicksLimit: 16 } },
          y: { stacked: true, title: { display: true, text: "emails" } },
          u: { position: "right", min: 0, grid: { drawOnChartArea: false }, title: { display: true, text: "urgency" } },
        },
      },
    });
  } else empty("chart-volume", "no dated emails");

  function topChart(id, rows, label) {
    if (!rows.length) return empty(id, "no amounts found");
    chart(id, {
      type: "bar",
      data: {
        labels: rows.map(function (r) { return r[0]; }),
        datasets: [{ label: label, data: rows.map(function (r) { return r[1]; }), backgroundColor: "#17a589" }],
      },
      options: {
        indexAxis: "y",
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { afterLabel: function (ctx) { return num.format(rows[ctx.dataIndex][2]) + " emails"; } } },
        },
        scales: { x: { ticks: { callback: function (v) { return money.format(v); } } } },
      },
    });
  }
  topChart("chart-senders", c.senders, "financial impact");
  topChart("chart-domains", c.domains, "financial impact");

  if (c.funnel.weeks.length) {
    chart("chart-funnel", {
      type: "bar",
      data: {
        labels: c.funnel.weeks,
        datasets: [
          { label: "started", data: c.funnel.started, backgroundColor: "#aab7c4" },
          { label: "in progress", data: c.funnel.in_progress, backgroundColor: "#2e6fdb" },
          { label: "completed", data: c.funnel.completed, backgroundColor: "#17a589" },
        ],
      },
      options: { interaction: { mode: "index", intersect: false }, scales: { x: { ticks: { maxTicksLimit: 16 } } } },
    });
  } else empty("chart-funnel", "no analysed, dated conversations");

  var run = data.run;
  if (run.calls) {
    var phases = Object.keys(run.throughput.phases);
    chart("chart-throughput", {
      data: {
        labels: run.throughput.labels,
        datasets: phases.map(function (p, i) {
          return { type: "bar", label: "phase " + p, data: run.throughput.phases[p], backgroundColor: PALETTE[i], stack: "c" };
        }).concat([{ type: "line", label: "output tokens", data: run.throughput.tokens, yAxisID: "t",
                     borderColor: "#8e44ad", pointRadius: 0, tension: 0.2 }]),
      },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { stacked: true, ticks: { maxTicksLimit: 12 } },
          y: { stacked: true, title: { display: true, text: "calls" } },
          t: { position: "right", grid: { drawOnChartArea: false }, title: { display: true, text: "tokens" } },
        },
      },
    });
    var series = Object.keys(run.latency.series);
    chart("chart-latency", {
      type: "bar",
      data: {
        labels: run.latency.labels,
        datasets: series.map(function (name, i) {
          return { label: name, data: run.latency.series[name], backgroundColor: PALETTE[i % PALETTE.length] };
        }),
      },
      options: { scales: { y: { title: { display: true, text: "calls" } } } },
    });
  }

  // --- the entity index: filter, sort and page in the page ---------------------------------------
  var ent = data.entities;
  var rows = ent.rows;
  var convs = ent.conversations;
  var tbody = document.querySelector("#entity-table tbody");
  var filterBox = document.getElementById("entity-filter");
  var kindBox = document.getElementById("entity-kind");
  var PAGE = 50;
  var state = { page: 0, col: 2, dir: -1, shown: rows };
  // lower-cased search text per row: the number and its conversations' ids and subjects
  var haystack = rows.map(function (r) {
    return (r[1] + " " + r[5].map(function (i) { return convs[i][0] + " " + convs[i][1]; }).join(" ")).toLowerCase();
  });
  rows.forEach(function (r, i) { r.push(i); });

  function td(text, cls) {
    var cell = document.createElement("td");
    cell.textContent = text;
    if (cls) cell.className = cls;
    return cell;
  }

  function apply() {
    var q = filterBox.value.trim().toLowerCase();
    var kind = kindBox.value;
    state.shown = rows.filter(function (r) {
      return (kind === "" || String(r[0]) === kind) && (!q || haystack[r[6]].indexOf(q) !== -1);
    });
    var col = state.col, dir = state.dir;
    state.shown.sort(function (a, b) {
      var x = col === 0 ? ent.kinds[a[0]] : a[col], y = col === 0 ? ent.kinds[b[0]] : b[col];
      return (x < y ? -1 : x > y ? 1 : 0) * dir || a[6] - b[6];
    });
    state.page = Math.min(state.page, Math.max(0, Math.ceil(state.shown.length / PAGE) - 1));
    draw();
  }

  function draw() {
    var frag = document.createDocumentFragment();
    var start = state.page * PAGE;
    state.shown.slice(start, start + PAGE).forEach(function (r) {
      var tr = document.createElement("tr");
      tr.appendChild(td(ent.kinds[r[0]]));
      tr.appendChild(td(r[1], "mono"));
      tr.appendChild(td(r[2] ? money.format(r[2]) : "", "n"));
      tr.appendChild(td(num.format(r[3]), "n"));
      tr.appendChild(td(num.format(r[4]), "n"));
      var cell = document.createElement("td");
      r[5].forEach(function (i) {
        var div = document.createElement("div");
        var code = document.createElement("code");
        code.textContent = convs[i][0];
        var anchor = data.anchors[convs[i][0]];
        if (anchor) {
          var a = document.createElement("a");
          a.href = "#" + anchor;
          a.appendChild(code);
          div.appendChild(a);
        } else div.appendChild(code);
        div.appendChild(document.createTextNode(" " + convs[i][1]));
        cell.appendChild(div);
      });
      if (r[4] > r[5].length) {
        var more = document.createElement("div");
        more.className = "dim";
        more.textContent = "+ " + num.format(r[4] - r[5].length) + " more";
        cell.appendChild(more);
      }
      tr.appendChild(cell);
      frag.appendChild(tr);
    });
    tbody.textContent = "";
    tbody.appendChild(frag);
    var pages = Math.max(1, Math.ceil(state.shown.length / PAGE));
    document.getElementById("entity-page").textContent = "page " + (state.page + 1) + " of " + num.format(pages);
    document.getElementById("entity-count").textContent =
      num.format(state.shown.length) + " of " + num.format(rows.length) + " listed";
    document.getElementById("entity-prev").disabled = state.page === 0;
    document.getElementById("entity-next").disabled = state.page >= pages - 1;
    document.querySelectorAll("#entity-table th[data-col]").forEach(function (th) {
      th.classList.toggle("asc", +th.dataset.col === state.col && state.dir === 1);
      th.classList.toggle("desc", +th.dataset.col === state.col && state.dir === -1);
    });
  }

  filterBox.addEventListener("input", function () { state.page = 0; apply(); });
  kindBox.addEventListener("change", function () { state.page = 0; apply(); });
  document.getElementById("entity-prev").addEventListener("click", function () { state.page--; draw(); });
  document.getElementById("entity-next").addEventListener("click", function () { state.page++; draw(); });
  document.querySelectorAll("#entity-table th[data-col]").forEach(function (th) {
    th.addEventListener("click", function () {
      var col = +th.dataset.col;
      state.dir = state.col === col ? -state.dir : col >= 2 ? -1 : 1;
      state.col = col;
      apply();
    });
  });
  apply();

  // a link to a conversation's emails opens them
  document.querySelectorAll("a.emails-link").forEach(function (a) {
    a.addEventListener("click", function () {
      var d = document.getElementById(a.getAttribute("href").slice(1));
      if (d) d.open = true;
    });
  });
  report.ready = true;
})();
