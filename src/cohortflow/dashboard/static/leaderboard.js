// The leaderboard page: draws the chart and table from the server's view, then keeps them
// current from server-sent events (the server pushes after each commit; this page never polls).
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const form = $("filters");
  let source = null;
  let timer = null;

  // Plotly reads a few HTML tags in labels: escape them so every name shows as typed.
  const escapeLabel = (text) =>
    String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

  function params() {
    const data = new URLSearchParams(new FormData(form));
    for (const [key, value] of [...data.entries()]) if (!value) data.delete(key);
    return data.toString();
  }

  function drawChart(rows) {
    if (!window.Plotly) return;
    const ids = rows.map((r) => String(r.batch_id));
    const trace = {
      type: "bar", orientation: "h", x: rows.map((r) => r.students_completed_3plus), y: ids,
      text: rows.map((r) => String(r.students_completed_3plus)), textposition: "auto",
      hovertext: rows.map((r) => escapeLabel(r.name)), hoverinfo: "text+x", marker: { color: "#3b6fd8" },
    };
    const layout = {
      height: Math.max(240, 26 * rows.length + 60), margin: { l: 10, r: 20, t: 10, b: 30 },
      yaxis: { type: "category", autorange: "reversed", automargin: true, tickvals: ids,
        ticktext: rows.map((r) => escapeLabel(r.name)) },
      xaxis: { title: { text: "students with 3+ completed lessons" }, rangemode: "tozero" },
    };
    window.Plotly.react("chart", [trace], layout, { displayModeBar: false, responsive: true });
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function drawTable(rows) {
    const body = $("leaderboard").tBodies[0];
    body.replaceChildren(...rows.map((r) => {
      const tr = document.createElement("tr");
      const name = document.createElement("td");
      const link = document.createElement("a");
      link.href = "/batches/" + encodeURIComponent(r.batch_id);
      link.textContent = r.name;
      name.append(link);
      tr.append(cell(r.rank, "num"), cell(r.batch_id, "num"), name,
        cell(r.students_completed_3plus, "num"), cell(r.students_total, "num"), cell(r.updated_at));
      return tr;
    }));
  }

  function render(view) {
    drawChart(view.rows);
    drawTable(view.rows);
    $("total-batches").textContent = view.totals.batches;
    $("total-students").textContent = view.totals.students;
    $("total-quarantined").textContent = view.totals.quarantined;
    $("last-commit").textContent = view.totals.last_commit || "never";
  }

  function listen() {
    if (source) source.close();
    const query = params();
    $("csv").href = "/api/leaderboard?format=csv&" + query;
    $("json").href = "/api/leaderboard?" + query;
    source = new EventSource("/events/leaderboard?" + query);
    source.addEventListener("view", (event) => {
      render(JSON.parse(event.data));
      document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    });
    source.addEventListener("open", () => $("live").classList.remove("down"));
    source.addEventListener("error", () => $("live").classList.add("down"));
  }

  function refilter() {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const query = params();
      history.replaceState(null, "", query ? "?" + query : location.pathname);
      listen();
    }, 150);
  }

  form.addEventListener("input", refilter);
  form.addEventListener("submit", (event) => { event.preventDefault(); refilter(); });
  render(JSON.parse($("initial").textContent));
  listen();
})();
