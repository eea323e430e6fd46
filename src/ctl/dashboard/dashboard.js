// The growth dashboard: reads /v1/stats and /v1/deliveries/failing (the
// browser sends the Basic credentials it asked for at /) and draws them.
// Everything that comes from the database is set with textContent, never
// parsed as HTML.
"use strict";

(function () {
  const STATUSES = ["pending", "review", "available", "paid", "redeemed", "reversed", "rejected"];
  const STATUS_COLORS = {
    pending: "#f5a623", review: "#bd10e0", available: "#0061fe", paid: "#2e7d32",
    redeemed: "#00a0a0", reversed: "#d0021b", rejected: "#7f7f7f",
  };
  const charts = {};

  function $(id) { return document.getElementById(id); }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function emptyRow(tbody, columns, text) {
    const tr = document.createElement("tr");
    const td = cell(tr, text, "empty");
    td.colSpan = columns;
    tbody.appendChild(tr);
  }

  function percent(part, whole) {
    return whole > 0 ? (100 * part / whole).toFixed(1) + "% of the step before" : "";
  }

  async function getJson(path) {
    const r = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    let body = null;
    try { body = await r.json(); } catch (e) { body = null; }
    if (!r.ok) throw new Error((body && body.error) || ("HTTP " + r.status));
    return body;
  }

  function drawFunnel(stats) {
    const t = stats.totals;
    $("period-text").textContent = stats.from + " – " + stats.to + " (UTC)";
    $("funnel-clicks").textContent = String(t.clicks);
    $("funnel-signups").textContent = String(t.signups);
    $("funnel-subscriptions").textContent = String(t.subscriptions);
    $("rate-signups").textContent = percent(t.signups, t.clicks);
    $("rate-subscriptions").textContent = percent(t.subscriptions, t.signups);
  }

  function drawDaily(stats) {
    const labels = stats.daily.map((d) => d.date);
    const series = [
      ["Clicks", "clicks", "#9bbcf8"],
      ["Signups", "signups", "#0061fe"],
      ["Subscriptions", "subscriptions", "#2e7d32"],
    ];
    const data = {
      labels: labels,
      datasets: series.map(([label, key, color]) => ({
        label: label, data: stats.daily.map((d) => d[key]), backgroundColor: color, borderColor: color,
      })),
    };
    if (charts.daily) {
      charts.daily.data = data;
      charts.daily.update();
      return;
    }
    charts.daily = new Chart($("daily-chart"), {
      type: "bar",
      data: data,
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        scales: {
          x: { ticks: { maxRotation: 0, autoSkipPadding: 16 } },
          y: { beginAtZero: true, ticks: { precision: 0 } },
        },
        plugins: { legend: { position: "bottom" } },
      },
    });
  }

  function drawReferrers(stats) {
    const tbody = $("referrers");
    tbody.replaceChildren();
    if (stats.referrers.length === 0) return emptyRow(tbody, 5, "No referral activity in this period");
    for (const r of stats.referrers) {
      const tr = document.createElement("tr");
      tr.dataset.user = r.user;
      cell(tr, r.user, "user");
      cell(tr, r.clicks, "num");
      cell(tr, r.signups, "num");
      cell(tr, r.subscriptions, "num");
      cell(tr, r.rewards, "num");
      tbody.appendChild(tr);
    }
  }

  function drawRewards(stats) {
    const counts = stats.totals.rewards;
    const tbody = $("rewards");
    tbody.replaceChildren();
    for (const s of STATUSES) {
      const tr = document.createElement("tr");
      tr.dataset.status = s;
      const name = cell(tr, s, "status-name");
      name.style.setProperty("--dot", STATUS_COLORS[s]);
      cell(tr, counts[s] || 0, "num");
      tbody.appendChild(tr);
    }
    const data = {
      labels: STATUSES,
      datasets: [{ data: STATUSES.map((s) => counts[s] || 0), backgroundColor: STATUSES.map((s) => STATUS_COLORS[s]) }],
    };
    if (charts.rewards) {
      charts.rewards.data = data;
      charts.rewards.update();
      return;
    }
    charts.rewards = new Chart($("rewards-chart"), {
      type: "doughnut",
      data: data,
      options: { animation: false, responsive: true, maintainAspectRatio: false,
                 plugins: { legend: { display: false } } },
    });
  }

  function drawDeliveries(list) {
    const tbody = $("deliveries");
    tbody.replaceChildren();
    if (list.deliveries.length === 0) return emptyRow(tbody, 8, "No failing deliveries");
    for (const d of list.deliveries) {
      const tr = document.createElement("tr");
      tr.dataset.id = String(d.id);
      tr.className = d.state;
      cell(tr, d.id, "num");
      cell(tr, d.reward_id, "num");
      cell(tr, d.target);
      cell(tr, d.operation);
      cell(tr, d.state, "state");
      cell(tr, d.attempts, "num");
      cell(tr, d.last_error, "error");
      cell(tr, d.state === "dead" ? "never (dead)" : d.next_attempt_at);
      tbody.appendChild(tr);
    }
  }

  // The figures and the deliveries load on their own: one failing does not
  // blank the other.
  async function load() {
    const days = $("period").value;
    $("status").textContent = "Loading…";
    document.body.dataset.ready = "";
    const failures = [];
    await Promise.all([
      getJson("/v1/stats?days=" + encodeURIComponent(days) + "&top=10").then((stats) => {
        drawFunnel(stats);
        drawDaily(stats);
        drawReferrers(stats);
        drawRewards(stats);
      }, (e) => failures.push("figures: " + e.message)),
      getJson("/v1/deliveries/failing?limit=20").then(drawDeliveries, (e) => {
        const tbody = $("deliveries");
        tbody.replaceChildren();
        emptyRow(tbody, 8, "Could not load the deliveries");
        failures.push("deliveries: " + e.message);
      }),
    ]);
    if (failures.length === 0) {
      $("status").textContent = "Updated " + new Date().toLocaleString();
      $("status").className = "status";
      document.body.dataset.ready = days;
    } else {
      $("status").textContent = "Could not load the " + failures.join("; ");
      $("status").className = "status failed";
      document.body.dataset.ready = "error";
    }
  }

  $("period").addEventListener("change", load);
  $("refresh").addEventListener("click", load);
  load();
})();
