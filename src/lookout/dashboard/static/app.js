// lookout dashboard: draws the server's per-second snapshots (api/events) and drills down into
// incidents through the JSON API. Every value from the server goes into the page with
// textContent or as a chart number, never as HTML.
"use strict";
(function () {
  const TOKEN_KEY = "lookout-token";
  const COLORS = { "2xx": "#3fb950", "3xx": "#58a6ff", "4xx": "#d29922", "5xx": "#f85149", rejected: "#bc8cff", late: "#8b949e" };
  const SERIES = ["2xx", "3xx", "4xx", "5xx", "rejected", "late"];
  let chart = null;
  let lastSnap = null;
  let selected = null; // {rule, key, start, end} shown in the detail panel
  let detailShownAt = 0; // when the detail panel was last (re)filled

  // A token may come in the URL fragment (never sent to a server); it is kept for the tab only.
  (function takeToken() {
    const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
  })();

  function headers() {
    const t = sessionStorage.getItem(TOKEN_KEY);
    return t ? { Authorization: "Bearer " + t } : {};
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function fmtNum(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return v.toLocaleString("en-US");
    return v.toLocaleString("en-US", { maximumFractionDigits: 3 });
  }

  function hms(iso) { return typeof iso === "string" && iso.length >= 19 ? iso.slice(11, 19) : "–"; }
  function dayHms(iso) { return typeof iso === "string" && iso.length >= 19 ? iso.slice(5, 10) + " " + iso.slice(11, 19) : "–"; }
  function keyText(key) {
    if (!key || typeof key !== "object") return String(key);
    return Object.keys(key).map((k) => k + "=" + String(key[k])).join(", ");
  }
  function duration(s) {
    if (s === null || s === undefined) return "–";
    if (s < 1) return s.toFixed(2) + " s";
    if (s < 120) return s.toFixed(1) + " s";
    if (s < 7200) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  // ---- live stream: server-sent events read with fetch (so the token header can be sent) ----
  async function stream() {
    const conn = document.getElementById("conn");
    for (;;) {
      try {
        const resp = await fetch("api/events", { headers: headers(), cache: "no-store" });
        if (resp.status === 401) { conn.textContent = "unauthorized: open the page with #token=…"; conn.className = "conn bad"; return; }
        if (!resp.ok || !resp.body) throw new Error("HTTP " + resp.status);
        conn.textContent = "live"; conn.className = "conn ok";
        const reader = resp.body.getReader();
        const dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const msg = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const data = msg.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
            if (data) render(JSON.parse(data));
          }
        }
      } catch (e) { /* fall through to reconnect */ }
      conn.textContent = "reconnecting…"; conn.className = "conn warn";
      await new Promise((r) => setTimeout(r, 2000));
    }
  }

  async function getJSON(path, params) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(params || {})) if (v !== undefined && v !== null && v !== "") qs.set(k, String(v));
    const resp = await fetch(path + (qs.toString() ? "?" + qs : ""), { headers: headers(), cache: "no-store" });
    const body = await resp.json();
    if (!resp.ok) throw new Error((body && body.error) || "HTTP " + resp.status);
    return body;
  }

  // ---- rendering ---------------------------------------------------------------------------
  function render(s) {
    lastSnap = s;
    window.__lookoutLast = s; // read-only handle for tests and the console
    const mode = document.getElementById("mode");
    mode.textContent = s.mode === "live" ? "live run" : "stored run";
    mode.className = "badge " + (s.mode === "live" ? "live" : "stored");
    renderHeadline(s);
    renderTraffic(s.traffic);
    renderHealth(s.health || {});
    renderIncidents(s.incidents || [], s.rules || []);
    // Records reach the store at each commit: a commit after the detail was filled may hold more
    // of the selected range (an incident clicked within a second of its burst), so refill it.
    const age = (s.health || {}).checkpoint_age_seconds;
    if (selected && typeof age === "number" && Date.now() - age * 1000 > detailShownAt) {
      showDetail(Object.assign({}, selected), true);
    }
    renderAlerts(s.rules || []);
    renderRules(s.rules || []);
  }

  function renderHeadline(s) {
    const h = s.health || {};
    const box = document.getElementById("headline");
    clear(box);
    const firing = (s.incidents || []).filter((d) => d.status === "firing").length;
    const items = [
      ["records/s", h.records_per_second !== null && h.records_per_second !== undefined ? fmtNum(Math.round(h.records_per_second)) : "–"],
      ["records", fmtNum(h.records)],
      ["firing", fmtNum(firing)],
      ["watermark", hms(h.watermark || h.newest_event)],
    ];
    for (const [k, v] of items) {
      const d = el("span", "kv" + (k === "firing" && firing ? " hot" : ""));
      d.appendChild(el("b", null, v));
      d.appendChild(el("span", null, " " + k));
      box.appendChild(d);
    }
  }

  function renderTraffic(t) {
    const box = document.getElementById("traffic-chart");
    document.getElementById("traffic-axis").textContent =
      "records per second by status class, with rejected and late (" + (t.axis || "") + ", UTC)";
    const data = [t.t || [], ...SERIES.map((k) => t[k] || [])];
    if (typeof uPlot === "undefined") return;
    const width = Math.max(300, box.clientWidth - 4);
    if (!chart) {
      chart = new uPlot({
        width: width, height: 260,
        scales: { x: { time: true } },
        axes: [
          { stroke: "#9aa4b2", grid: { stroke: "#262c36" }, ticks: { stroke: "#262c36" },
            values: (u, splits) => splits.map((v) => new Date(v * 1000).toISOString().slice(11, 19)) },
          { stroke: "#9aa4b2", grid: { stroke: "#262c36" }, ticks: { stroke: "#262c36" }, size: 60 },
        ],
        series: [{ value: (u, v) => (v === null || v === undefined ? "–" : new Date(v * 1000).toISOString().slice(11, 19)) }, ...SERIES.map((k) => ({ label: k, stroke: COLORS[k], width: k === "late" ? 1 : 1.6,
          fill: k === "2xx" ? "rgba(63,185,80,0.10)" : undefined, points: { show: false } }))],
        legend: { live: true },
      }, data, box);
      window.addEventListener("resize", () => chart.setSize({ width: Math.max(300, box.clientWidth - 4), height: 260 }));
    } else {
      chart.setData(data);
    }
  }

  function renderHealth(h) {
    const dl = document.getElementById("health");
    clear(dl);
    const rows = [
      ["source", h.source],
      ["sinks", (h.sinks || []).join(", ")],
      ["watermark", h.watermark ? dayHms(h.watermark) + " UTC" : "–"],
      ["newest event", h.newest_event ? dayHms(h.newest_event) + " UTC" : "–"],
      ["event lag", duration(h.event_lag_seconds)],
      ["checkpoint age", duration(h.checkpoint_age_seconds)],
      ["records", fmtNum(h.records)],
      ["rejected", fmtNum(h.rejected) + reasons(h.reasons)],
      ["late", fmtNum(h.late)],
    ];
    if (h.uptime_seconds !== undefined) rows.push(["uptime", duration(h.uptime_seconds)]);
    for (const [name, v] of Object.entries(h.state || {})) rows.push([name, typeof v === "number" ? fmtNum(v) : String(v)]);
    for (const [name, n] of Object.entries(h.results || {})) rows.push(["→ " + name, fmtNum(n) + " results"]);
    for (const [k, v] of rows) {
      dl.appendChild(el("dt", null, k));
      const dd = el("dd", null, v === undefined || v === null || v === "" ? "–" : v);
      if (k === "event lag" && h.event_lag_seconds > 60) dd.className = "warn";
      if (k === "checkpoint age" && h.checkpoint_age_seconds > 30 && lastSnap && lastSnap.mode === "live") dd.className = "warn";
      dl.appendChild(dd);
    }
  }

  function reasons(r) {
    const parts = Object.entries(r || {}).filter(([k]) => k !== "late").map(([k, v]) => k + ": " + fmtNum(v));
    return parts.length ? " (" + parts.join(", ") + ")" : "";
  }

  function renderIncidents(list, rules) {
    const tbody = document.querySelector("#incidents tbody");
    clear(tbody);
    document.getElementById("incidents-empty").classList.toggle("hidden", list.length > 0);
    for (const d of list) {
      const tr = el("tr", d.status === "firing" ? "firing" : "");
      const st = el("td");
      st.appendChild(el("span", "pill " + (d.status === "firing" ? "pill-firing" : "pill-resolved"), d.status));
      tr.appendChild(st);
      tr.appendChild(el("td", null, d.rule));
      tr.appendChild(el("td", "key", keyText(d.key)));
      tr.appendChild(el("td", null, dayHms(d.start)));
      tr.appendChild(el("td", null, d.status === "firing" ? "…" + hms(d.end) : hms(d.end)));
      tr.appendChild(el("td", "num", fmtNum(d.peak)));
      tr.appendChild(el("td", "num", fmtNum(d.windows)));
      tr.addEventListener("click", () => showDetail({ rule: d.rule, key: d.key, start: d.start, end: d.end,
        id: d.id, status: d.status, title: "Incident " + d.rule + " · " + keyText(d.key) }));
      tbody.appendChild(tr);
      // The incident shown below has grown or resolved: refresh its detail, without scrolling.
      if (selected && selected.id === d.id && (d.end !== selected.end || d.status !== selected.status)) {
        showDetail(Object.assign({}, selected, { end: d.end, status: d.status }), true);
      }
    }
  }

  function ruleByName(name) { return ((lastSnap && lastSnap.rules) || []).find((r) => r.name === name); }

  function renderAlerts(rules) {
    const box = document.getElementById("alerts");
    clear(box);
    const alerting = rules.filter((r) => r.kind === "alerting");
    for (const r of alerting) {
      const h = el("h3", null, r.name + " ");
      h.appendChild(el("small", null, (r.description || "") + " · " + fmtNum(r.total) + " windows"));
      box.appendChild(h);
      const t = el("table", "grid clickable compact");
      const head = el("tr");
      for (const c of ["window (UTC)", "key", r.value]) head.appendChild(el("th", c === r.value ? "num" : null, c));
      t.appendChild(el("thead")).appendChild(head);
      const tb = el("tbody");
      for (const a of (r.alerts || []).slice(0, 8)) {
        const tr = el("tr");
        tr.appendChild(el("td", null, hms(a.start) + "–" + hms(a.end)));
        tr.appendChild(el("td", "key", keyText(a.key)));
        tr.appendChild(el("td", "num", fmtNum(a.value)));
        tr.addEventListener("click", () => showDetail({ rule: r.name, key: a.key, start: a.start, end: a.end,
          title: "Window " + r.name + " · " + keyText(a.key) }));
        tb.appendChild(tr);
      }
      t.appendChild(tb);
      if (!(r.alerts || []).length) box.appendChild(el("p", "empty", "No alerting windows yet."));
      else box.appendChild(t);
    }
    if (!alerting.length) box.appendChild(el("p", "empty", "No alerting rules."));
  }

  function renderRules(rules) {
    const box = document.getElementById("rules");
    const aggregates = rules.filter((r) => r.kind === "aggregate");
    // one panel per aggregate rule, kept across renders (so scroll positions survive)
    for (const r of aggregates) {
      let panel = box.querySelector('[data-rule="' + CSS.escape(r.name) + '"]');
      if (!panel) {
        panel = el("section", "panel rule-panel");
        panel.dataset.rule = r.name;
        box.appendChild(panel);
      }
      clear(panel);
      const latest = (r.windows || [])[r.windows.length - 1];
      const h = el("h2", null, r.description || r.name);
      h.appendChild(el("small", null, r.name + " · " + r.value + " per " + r.group_by.join(", ") +
        (latest ? " · window " + hms(latest.start) + "–" + hms(latest.end) + " UTC" : "")));
      panel.appendChild(h);
      if (!r.rows || !r.rows.length) { panel.appendChild(el("p", "empty", "Waiting for the first closed window.")); continue; }
      if (r.value === "count") panel.appendChild(bars(r));
      else panel.appendChild(sparkTable(r));
    }
  }

  function bars(r) {
    const wrap = el("div", "bars");
    const rows = r.rows.slice(0, 15);
    const max = Math.max(1, ...rows.map((x) => (typeof x.value === "number" ? x.value : 0)));
    for (const x of rows) {
      const row = el("div", "bar-row");
      row.appendChild(el("span", "bar-label", keyText1(x.key)));
      const track = el("span", "bar-track");
      const bar = el("span", "bar");
      bar.style.width = (100 * (typeof x.value === "number" ? x.value : 0) / max).toFixed(1) + "%";
      track.appendChild(bar);
      row.appendChild(track);
      row.appendChild(el("span", "bar-value", fmtNum(x.value)));
      wrap.appendChild(row);
    }
    if (r.rows.length > rows.length) wrap.appendChild(el("p", "more", "+ " + (r.rows.length - rows.length) + " more"));
    return wrap;
  }

  function keyText1(key) {
    const vals = Object.values(key || {});
    return vals.length === 1 ? (vals[0] === null || vals[0] === undefined ? "(unknown)" : String(vals[0])) : keyText(key);
  }

  function sparkTable(r) {
    const wrap = el("div", "scroll tall");
    const t = el("table", "grid");
    const head = el("tr");
    head.appendChild(el("th", null, r.group_by.join(", ")));
    head.appendChild(el("th", "num", r.value));
    head.appendChild(el("th", null, "last " + (r.windows || []).length + " windows"));
    t.appendChild(el("thead")).appendChild(head);
    const tb = el("tbody");
    for (const x of r.rows.slice(0, 25)) {
      const tr = el("tr");
      tr.appendChild(el("td", "key", keyText1(x.key)));
      tr.appendChild(el("td", "num", typeof x.value === "number" ? x.value.toFixed(3) : fmtNum(x.value)));
      const td = el("td", "spark-cell");
      td.appendChild(sparkline(x.history || []));
      tr.appendChild(td);
      tb.appendChild(tr);
    }
    t.appendChild(tb);
    wrap.appendChild(t);
    return wrap;
  }

  function sparkline(values) {
    const c = el("canvas", "spark");
    const w = 140, h = 24, ratio = window.devicePixelRatio || 1;
    c.width = w * ratio; c.height = h * ratio;
    const g = c.getContext("2d");
    g.scale(ratio, ratio);
    const nums = values.map((v) => (typeof v === "number" ? v : null));
    const present = nums.filter((v) => v !== null);
    if (!present.length) return c;
    const lo = Math.min(...present), hi = Math.max(...present);
    const span = hi - lo || 1;
    g.strokeStyle = "#58a6ff"; g.lineWidth = 1.5; g.beginPath();
    let started = false;
    nums.forEach((v, i) => {
      if (v === null) { started = false; return; }
      const x = nums.length === 1 ? w / 2 : 2 + (i * (w - 4)) / (nums.length - 1);
      const y = h - 3 - ((v - lo) / span) * (h - 6);
      if (started) g.lineTo(x, y); else { g.moveTo(x, y); started = true; }
    });
    g.stroke();
    const last = nums[nums.length - 1];
    if (last !== null) {
      g.fillStyle = "#f0f6fc"; g.beginPath();
      g.arc(w - 2, h - 3 - ((last - lo) / span) * (h - 6), 2, 0, 2 * Math.PI); g.fill();
    }
    return c;
  }

  // ---- drill-down: raw records and window rows of one key over a time range ------------------
  async function showDetail(sel, quiet) {
    selected = sel;
    detailShownAt = Date.now();
    const panel = document.getElementById("detail-panel");
    panel.classList.remove("hidden");
    document.getElementById("detail-title").textContent = sel.title + " · " + dayHms(sel.start) + " – " + hms(sel.end) + " UTC";
    const rule = ruleByName(sel.rule);
    const params = { since: sel.start, until: sel.end, limit: 500 };
    const keyParams = {};
    for (const [k, v] of Object.entries(sel.key || {})) keyParams[k] = v;
    const recParams = Object.assign({}, params, (rule && rule.record_filter) || {});
    for (const [k, v] of Object.entries(keyParams)) if (["client_ip", "host", "country", "method", "status"].includes(k)) recParams[k] = v;
    const recTable = document.getElementById("detail-records");
    const winTable = document.getElementById("detail-windows");
    if (!quiet) {  // a refresh keeps what is shown until the new rows come
      fillTable(recTable, [], []);
      fillTable(winTable, [], []);
      document.getElementById("detail-records-note").textContent = "loading…";
      document.getElementById("detail-windows-note").textContent = "loading…";
      panel.scrollIntoView({ behavior: "smooth", block: "nearest" });
    }
    try {
      const recs = await getJSON("api/records", recParams);
      if (selected !== sel) return;
      const cols = ["@timestamp", "client_ip", "host", "status", "method", "request_time", "country", "server"];
      fillTable(recTable, cols, recs.records.map((r) => cols.map((c) => r[c])));
      document.getElementById("detail-records-note").textContent =
        recs.records.length + " newest first" + (rule && rule.record_filter && rule.record_filter.status ? " · status " + rule.record_filter.status : "");
    } catch (e) { document.getElementById("detail-records-note").textContent = "error: " + e.message; }
    try {
      const res = await getJSON("api/results/" + encodeURIComponent(sel.rule), Object.assign({}, params, keyParams));
      if (selected !== sel) return;
      const value = rule ? rule.value : "value";
      fillTable(winTable, ["window start", "end", value], res.results.map((o) => [
        hms(o.window && o.window.start), hms(o.window && o.window.end), o[value]]));
      document.getElementById("detail-windows-note").textContent = res.results.length + " rows from " + sel.rule + ".jsonl";
    } catch (e) { document.getElementById("detail-windows-note").textContent = "error: " + e.message; }
  }

  function fillTable(table, cols, rows) {
    const thead = table.querySelector("thead"), tbody = table.querySelector("tbody");
    clear(thead); clear(tbody);
    if (!cols.length) return;
    const tr = el("tr");
    for (const c of cols) tr.appendChild(el("th", null, c));
    thead.appendChild(tr);
    for (const r of rows) {
      const row = el("tr");
      for (const v of r) row.appendChild(el("td", typeof v === "number" ? "num" : null, v === undefined || v === null ? "" : (typeof v === "number" ? fmtNum(v) : v)));
      tbody.appendChild(row);
    }
  }

  document.getElementById("detail-close").addEventListener("click", () => {
    selected = null;
    document.getElementById("detail-panel").classList.add("hidden");
  });

  stream();
})();
