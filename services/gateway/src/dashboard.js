"use strict";
// The trader's page: the widest cross-exchange spreads now (GET /api/spreads/widest, every
// second), a chart of the selected pair with its 97th/3rd percentile bands (the engine's
// window over /ws "charts", then live points), the active signals (/ws "signals") and each
// exchange's health (GET /api/exchanges). Everything comes from this gateway; uPlot is
// served by it too. With authentication on, open the page as /#token=<token>.
(function () {
  const WIDEST_EVERY_MS = 1000;
  const EXCHANGES_EVERY_MS = 2000;
  const MAX_CHART_POINTS = 5000;
  const $ = (id) => document.getElementById(id);

  const state = {
    widest: [],
    selected: null,          // {symbol, a, b}
    userSelected: false,
    chart: null,             // uPlot instance
    chartData: [[], [], [], []],
    signals: new Map(),      // symbol -> signal frame
    exchanges: [],
    ws: null,
    lastFrameMs: 0,
  };
  window.dashboard = state; // for tests and the curious

  // The token, if any: from the URL fragment once, then from this tab's session storage.
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.get("token")) {
    sessionStorage.setItem("spreadagg-token", fragment.get("token"));
    history.replaceState(null, "", location.pathname);
  }
  const token = sessionStorage.getItem("spreadagg-token");
  const authHeaders = token ? { Authorization: "Bearer " + token } : {};

  function fmt(x, digits) {
    return typeof x === "number" && isFinite(x) ? x.toFixed(digits) : "\u2013";
  }
  function signClass(x) {
    return typeof x !== "number" ? "" : x > 0 ? "pos" : x < 0 ? "neg" : "";
  }
  function td(text, cls) {
    const e = document.createElement("td");
    e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function setStatus(text, live) {
    $("status").textContent = text;
    $("status").className = "status " + (live ? "live" : "down");
  }
  function notice(text) { $("notice").textContent = text || ""; }

  // The tradeable side of a pair: buy where it is cheap, sell where it is dear.
  function best(p) {
    return p.a_to_b_pct >= p.b_to_a_pct
      ? { pct: p.a_to_b_pct, buy: p.exchange_a, sell: p.exchange_b }
      : { pct: p.b_to_a_pct, buy: p.exchange_b, sell: p.exchange_a };
  }

  function matchesFilter(p) {
    const f = $("filter").value.trim().toUpperCase();
    if (!f) return true;
    return p.symbol.includes(f) || p.exchange_a.toUpperCase() === f || p.exchange_b.toUpperCase() === f;
  }

  async function getJson(path) {
    const res = await fetch(path, { headers: authHeaders, cache: "no-store" });
    if (!res.ok) throw new Error(path + ": HTTP " + res.status);
    return res.json();
  }

  async function refreshWidest() {
    try {
      const body = await getJson("/api/spreads/widest?limit=200");
      state.widest = body.items || [];
      renderWidest();
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
      if (!state.userSelected && !state.selected && state.widest.length) {
        const p = state.widest[0];
        select({ symbol: p.symbol, a: p.exchange_a, b: p.exchange_b }, false);
      }
    } catch (e) { notice(String(e.message || e)); }
    setTimeout(refreshWidest, WIDEST_EVERY_MS);
  }

  function renderWidest() {
    const body = document.createElement("tbody");
    const nowMs = Date.now();
    const rows = state.widest.filter(matchesFilter).slice(0, 25);
    for (const p of rows) {
      const b = best(p);
      const tr = document.createElement("tr");
      const outside = p.bid_bid_pct > p.upper_band || p.bid_bid_pct < p.lower_band;
      const ageS = (nowMs - p.ts_ns / 1e6) / 1000;
      tr.append(td(p.symbol), td(b.buy + " \u2192 " + b.sell), td(fmt(b.pct, 4), signClass(b.pct)),
        td(fmt(p.bid_bid_pct, 4), signClass(p.bid_bid_pct) + (outside ? " out" : "")),
        td(fmt(p.lower_band, 4)), td(fmt(p.upper_band, 4)), td(fmt(p.staleness_ms, 0)),
        td(fmt(ageS, 1), ageS > 5 ? "muted" : ""));
      const s = state.selected;
      if (s && s.symbol === p.symbol && s.a === p.exchange_a && s.b === p.exchange_b) tr.className = "selected";
      tr.onclick = () => select({ symbol: p.symbol, a: p.exchange_a, b: p.exchange_b }, true);
      body.append(tr);
    }
    if (!rows.length) {
      const tr = document.createElement("tr");
      const cell = td(state.widest.length ? "No pair matches the filter." : "Waiting for the first spread points\u2026", "muted");
      cell.colSpan = 8;
      tr.append(cell);
      body.append(tr);
    }
    $("widest").replaceChild(body, $("widest").tBodies[0]);
  }

  async function refreshExchanges() {
    try {
      const body = await getJson("/api/exchanges");
      state.exchanges = body.exchanges || [];
      const box = $("exchanges");
      box.replaceChildren();
      for (const x of state.exchanges) {
        const chip = document.createElement("div");
        chip.className = "chip " + x.state;
        const name = document.createElement("b");
        name.textContent = x.exchange + " " + x.state;
        const detail = document.createElement("span");
        detail.className = "muted";
        detail.textContent = x.state === "unseen" ? "no tick yet"
          : fmt(x.ticks_per_s, 1) + " ticks/s, " + x.symbols + " symbols, last " + fmt(x.last_tick_age_ms / 1000, 1) + " s ago";
        chip.append(name, detail);
        box.append(chip);
      }
    } catch (e) { notice(String(e.message || e)); }
    setTimeout(refreshExchanges, EXCHANGES_EVERY_MS);
  }

  function renderSignals() {
    const body = document.createElement("tbody");
    const nowMs = Date.now();
    const active = [...state.signals.values()]
      .filter((s) => s.signal === "entry" && (!s.expires_ts_ns || s.expires_ts_ns / 1e6 > nowMs))
      .sort((x, y) => y.deviation_pct - x.deviation_pct);
    for (const s of active) {
      const tr = document.createElement("tr");
      tr.append(td(s.symbol), td(s.cheap_exchange + " \u2192 " + s.expensive_exchange),
        td(fmt(s.deviation_pct, 4), "pos"), td(fmt(s.cheap_bid, 6)), td(fmt(s.expensive_bid, 6)),
        td(fmt((nowMs - s.ts_ns / 1e6) / 1000, 0)), td(fmt((s.expires_ts_ns / 1e6 - nowMs) / 1000, 0)));
      body.append(tr);
    }
    if (!active.length) {
      const tr = document.createElement("tr");
      const cell = td("No active signal.", "muted");
      cell.colSpan = 7;
      tr.append(cell);
      body.append(tr);
    }
    $("signals").replaceChild(body, $("signals").tBodies[0]);
  }

  // --- chart ---------------------------------------------------------------------------

  function makeChart() {
    const el = $("chart");
    const opts = {
      width: Math.max(320, el.clientWidth),
      height: 380,
      scales: { x: { time: true } },
      axes: [
        { stroke: "#8b939c", grid: { stroke: "#262c34" } },
        { stroke: "#8b939c", grid: { stroke: "#262c34" }, size: 72,
          values: (u, v) => v.map((x) => x.toFixed(3) + "%") },
      ],
      series: [
        {},
        { label: "bid/bid %", stroke: "#58a6ff", width: 1.5 },
        { label: "upper band (97%)", stroke: "#f85149", width: 1, dash: [6, 4] },
        { label: "lower band (3%)", stroke: "#3fb950", width: 1, dash: [6, 4] },
      ],
    };
    state.chart = new uPlot(opts, state.chartData, el);
    window.addEventListener("resize", () => state.chart.setSize({ width: Math.max(320, el.clientWidth), height: 380 }));
  }

  function chartFromWindow(c) {
    const xs = [], ys = [], up = [], lo = [];
    for (let i = 0; i < c.ts_ns.length; i++) {
      xs.push(c.ts_ns[i] / 1e9); ys.push(c.spread_pct[i]); up.push(c.upper_band[i]); lo.push(c.lower_band[i]);
    }
    state.chartData = [xs, ys, up, lo];
    state.chart.setData(state.chartData);
  }

  function chartAppend(p) {
    const [xs, ys, up, lo] = state.chartData;
    const x = p.ts_ns / 1e9;
    if (xs.length && x <= xs[xs.length - 1]) return; // already in the window (merge by time)
    xs.push(x); ys.push(p.bid_bid_pct); up.push(p.upper_band); lo.push(p.lower_band);
    if (xs.length > MAX_CHART_POINTS) { xs.shift(); ys.shift(); up.shift(); lo.shift(); }
    state.chart.setData(state.chartData);
  }

  function chartRequest(op, s) {
    return JSON.stringify({ op: op, channel: "charts", symbol: s.symbol, exchanges: [s.a, s.b], id: "chart" });
  }

  function select(s, byUser) {
    const old = state.selected;
    if (old && old.symbol === s.symbol && old.a === s.a && old.b === s.b) return;
    state.userSelected = state.userSelected || byUser;
    state.selected = s;
    $("chart-title").textContent = s.symbol + "  " + s.a + " / " + s.b + "  (bid/bid %, bands over the last 200 points)";
    state.chartData = [[], [], [], []];
    state.chart.setData(state.chartData);
    const ws = state.ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      if (old) ws.send(chartRequest("unsubscribe", old));
      ws.send(chartRequest("subscribe", s));
    }
    renderWidest();
  }

  // --- live feed -----------------------------------------------------------------------

  let retryMs = 500;
  function connect() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const q = token ? "?access_token=" + encodeURIComponent(token) : "";
    const ws = new WebSocket(proto + "//" + location.host + "/ws" + q);
    state.ws = ws;
    ws.onopen = () => {
      retryMs = 500;
      setStatus("live", true);
      ws.send(JSON.stringify({ op: "subscribe", channel: "signals", symbol: "*", id: "signals" }));
      if (state.selected) ws.send(chartRequest("subscribe", state.selected));
    };
    ws.onmessage = (ev) => onMessage(ev.data);
    ws.onclose = (ev) => {
      setStatus("disconnected (" + ev.code + (ev.reason ? " " + ev.reason : "") + "), retrying", false);
      state.ws = null;
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, 10000);
    };
  }

  function isSelected(p) {
    const s = state.selected;
    return s && p.symbol === s.symbol && p.exchange_a === s.a && p.exchange_b === s.b;
  }

  function onMessage(text) {
    let m;
    try { m = JSON.parse(text); } catch (_) { return; }
    state.lastFrameMs = Date.now();
    if (m.type === "spread") {
      if (isSelected(m)) chartAppend(m);
    } else if (m.type === "signal") {
      if (m.signal === "entry") state.signals.set(m.symbol, m); else state.signals.delete(m.symbol);
      renderSignals();
    } else if (m.type === "snapshot") {
      if (m.channel === "signals") {
        state.signals.clear();
        for (const s of m.items) state.signals.set(s.symbol, s);
        renderSignals();
      } else if (m.channel === "charts" && m.items.length && state.selected &&
                 m.symbol === state.selected.symbol && m.exchanges[0] === state.selected.a) {
        chartFromWindow(m.items[0]);
      }
    } else if (m.type === "error") {
      notice("Gateway: " + m.code + ": " + m.message);
    }
  }

  $("filter").addEventListener("input", renderWidest);
  setInterval(renderSignals, 1000); // keeps "since" and "expires in" current
  makeChart();
  connect();
  refreshWidest();
  refreshExchanges();
})();
