// skyjoin dashboard: plain JavaScript, no dependencies, no build step.
// It reads only the public API: GET /v1/events (first load, and polling
// when the stream is not available), GET /v1/stream (Server-Sent Events)
// and GET /v1/stats (temperature by country, when it answers). With auth
// on, it asks for an API key once and signs in with POST /v1/session.
"use strict";
(() => {
  const MAX_RECORDS = 3000; // kept in memory
  const FEED_ROWS = 30;
  const MAP_POINTS = 600;
  const POLL_MS = 2000;
  const STREAM_RETRY_MS = 30000;

  // Condition groups of WMO weather codes (WMO 4677 as Open-Meteo uses it).
  const GROUPS = [
    { key: "clear", label: "clear", color: "#f5c542", codes: [0, 1] },
    { key: "cloudy", label: "cloudy", color: "#9fb0c8", codes: [2, 3] },
    { key: "fog", label: "fog", color: "#b39ddb", codes: [45, 48] },
    { key: "drizzle", label: "drizzle", color: "#4dd0c1", codes: [51, 53, 55, 56, 57] },
    { key: "rain", label: "rain", color: "#3b82f6", codes: [61, 63, 65, 66, 67, 80, 81, 82] },
    { key: "snow", label: "snow", color: "#f4f7ff", codes: [71, 73, 75, 77, 85, 86] },
    { key: "thunder", label: "thunder", color: "#ff4fa3", codes: [95, 96, 99] },
    { key: "none", label: "no weather", color: "#5b6478", codes: [] },
  ];
  const byCode = new Map();
  GROUPS.forEach((g) => g.codes.forEach((c) => byCode.set(c, g)));
  const groupOf = (r) => (r.weather ? byCode.get(r.weather.code) || GROUPS[1] : GROUPS[GROUPS.length - 1]);

  const $ = (id) => document.getElementById(id);
  // From props.js, loaded first; without it the feed shows no properties.
  const propSummary = globalThis.skyjoinPropSummary || (() => "");
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };

  // ---- state -------------------------------------------------------------
  const seen = new Set();
  let records = []; // oldest first
  let total = 0;
  let fresh = new Set();
  let statsByCountry = null; // from /v1/stats, when it answers

  function add(list, isFresh) {
    let added = 0;
    for (const r of list) {
      if (!r || typeof r !== "object" || !r.event_id || seen.has(r.event_id)) continue;
      seen.add(r.event_id);
      records.push(r);
      if (isFresh) fresh.add(r.event_id);
      added++;
    }
    if (!added) return;
    total += added;
    records.sort((a, b) => (a.seq || 0) - (b.seq || 0) || String(a.processed_at).localeCompare(String(b.processed_at)));
    if (records.length > MAX_RECORDS) {
      for (const r of records.splice(0, records.length - MAX_RECORDS)) seen.delete(r.event_id);
    }
    scheduleRender();
  }

  // ---- data sources --------------------------------------------------------
  function setStatus(mode, text) {
    const s = $("status");
    s.dataset.mode = mode;
    s.textContent = text;
  }

  // ---- sign-in, when the server runs with auth ------------------------------
  // A 401 shows a form that asks once for an API key (read and stream
  // scopes); POST /v1/session turns it into an HttpOnly session cookie,
  // which fetch and EventSource then send by themselves. The key is kept
  // nowhere: not in storage, not in a URL.
  class AuthRequired extends Error {}
  let signingIn = false;
  function needSignIn() {
    if (signingIn) return;
    signingIn = true;
    stopPolling();
    setStatus("offline", "sign in with an API key");
    $("signin").hidden = false;
    $("signin-key").focus();
  }
  $("signin").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("signin-key");
    const key = input.value.trim();
    input.value = "";
    if (!key) return;
    let resp;
    try {
      resp = await fetch("/v1/session", { method: "POST", headers: { Authorization: `Bearer ${key}` } });
    } catch (err) {
      $("signin-error").textContent = "API unreachable";
      return;
    }
    if (!resp.ok) {
      $("signin-error").textContent = resp.status === 401 ? "key not accepted" : `sign-in refused (${resp.status})`;
      return;
    }
    $("signin-error").textContent = "";
    $("signin").hidden = true;
    signingIn = false;
    start();
  });

  async function fetchEvents(limit) {
    const resp = await fetch(`/v1/events?limit=${limit}`, { headers: { Accept: "application/json" } });
    if (resp.status === 401) {
      needSignIn();
      throw new AuthRequired();
    }
    if (!resp.ok) throw new Error(`GET /v1/events: ${resp.status}`);
    const body = await resp.json();
    const evs = Array.isArray(body) ? body : body.events || body.records || [];
    return evs.slice().reverse(); // the API lists newest first
  }

  let pollTimer = null;
  function startPolling() {
    if (pollTimer || signingIn) return;
    setStatus("polling", "polling /v1/events");
    const tick = async () => {
      try {
        add(await fetchEvents(200), true);
        if ($("status").dataset.mode !== "live") setStatus("polling", "polling /v1/events");
      } catch (e) {
        if (!(e instanceof AuthRequired)) setStatus("offline", "API unreachable");
      }
    };
    pollTimer = setInterval(tick, POLL_MS);
    tick();
  }
  function stopPolling() {
    clearInterval(pollTimer);
    pollTimer = null;
  }

  function onStreamData(ev) {
    let data;
    try {
      data = JSON.parse(ev.data);
    } catch (e) {
      return;
    }
    const list = Array.isArray(data) ? data : data && (data.records || data.events) ? data.records || data.events : [data];
    add(list, true);
  }

  function startStream() {
    if (signingIn) return;
    if (!("EventSource" in window)) return startPolling();
    let opened = false;
    const es = new EventSource("/v1/stream");
    // `event: record` per stored record; a slow client gets `event: dropped`
    // and EventSource reconnects with Last-Event-ID.
    ["message", "record"].forEach((t) => es.addEventListener(t, onStreamData));
    es.addEventListener("dropped", () => setStatus("polling", "stream dropped · resuming"));
    es.addEventListener("open", () => {
      opened = true;
      stopPolling();
      setStatus("live", "live · /v1/stream");
    });
    es.addEventListener("error", () => {
      if (!opened || es.readyState === EventSource.CLOSED) {
        // No stream (yet): poll, and try the stream again later.
        es.close();
        startPolling();
        setTimeout(startStream, STREAM_RETRY_MS);
      } else {
        setStatus("polling", "stream reconnecting…");
      }
    });
  }

  // GET /v1/stats: {"groups": [{"key", "count", "avg_temp_c", "min_temp_c",
  // "max_temp_c", "bucket"...}]}; group_by=country over the last hour for the
  // temperatures, group_by=time with 1-minute buckets for the rate. Until it
  // answers (or if it cannot), both are computed from the records on the page.
  const num = (v) => (typeof v === "number" && isFinite(v) ? v : undefined);
  async function getStats(params) {
    const resp = await fetch(`/v1/stats?${new URLSearchParams(params)}`, { headers: { Accept: "application/json" } });
    if (resp.status === 401) {
      needSignIn();
      throw new AuthRequired();
    }
    if (!resp.ok) throw new Error(`GET /v1/stats: ${resp.status}`);
    const body = await resp.json();
    return Array.isArray(body.groups) ? body.groups : [];
  }
  let statsRate = null; // [30] counts per minute, oldest first
  async function fetchStats() {
    const now = Date.now();
    try {
      const groups = await getStats({ group_by: "country", since: new Date(now - 3600e3).toISOString() });
      const out = [];
      for (const g of groups) {
        const mean = num(g.avg_temp_c);
        if (!g.key || mean === undefined) continue;
        out.push({ name: String(g.key), mean, min: num(g.min_temp_c), max: num(g.max_temp_c), n: num(g.count) || 0 });
      }
      statsByCountry = out;
    } catch (e) {
      statsByCountry = null;
    }
    try {
      const start = Math.floor(now / 60000) * 60000 - 29 * 60000;
      const groups = await getStats({ group_by: "time", bucket: "1m", since: new Date(start).toISOString() });
      const b = new Array(30).fill(0);
      for (const g of groups) {
        const t = Date.parse(g.bucket || g.key);
        const i = Math.floor((t - start) / 60000);
        if (i >= 0 && i < 30) b[i] += num(g.count) || 0;
      }
      statsRate = { start, buckets: b };
    } catch (e) {
      statsRate = null;
    }
    scheduleRender();
  }

  // ---- rendering -------------------------------------------------------------
  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      render();
    });
  }

  function render() {
    renderFeed();
    renderRate();
    renderTemps();
    drawMap();
    renderKPIs();
    fresh = new Set();
  }

  const fmtTime = (s) => {
    const d = new Date(s);
    return isNaN(d) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  };
  const fmtTemp = (t) => (typeof t === "number" ? `${t.toFixed(1)}°C` : "–");

  // who names a record's user: the name, else the username, else the id;
  // the PII policy drops names and hashes usernames ("h1:...") by default.
  function who(u) {
    if (!u) return "?";
    const username = u.username && !u.username.startsWith("h1:") ? u.username : "";
    return u.name || username || u.id || "?";
  }

  function renderFeed() {
    const feed = $("feed");
    const rows = records.slice(-FEED_ROWS).reverse();
    $("feed-empty").hidden = rows.length > 0;
    const items = rows.map((r) => {
      const li = el("li", fresh.has(r.event_id) ? "fresh" : "");
      li.dataset.eventId = r.event_id;
      li.append(el("span", "t", fmtTime(r.processed_at || r.occurred_at)));
      li.append(el("span", "who", who(r.user)));
      const g = groupOf(r);
      const wx = el("span", "wx");
      const chip = el("i", "chip");
      chip.style.background = g.color;
      wx.append(chip, document.createTextNode(r.weather ? fmtTemp(r.weather.temperature_c) : "no weather"));
      wx.append(el("small", "", r.weather ? r.weather.condition : (r.enrichment && r.enrichment.status) || ""));
      li.append(wx);
      const loc = r.location || {};
      li.append(el("span", "where", [loc.city, loc.country].filter(Boolean).join(", ") + ` · ${r.event_type || ""}`));
      // The record's properties, as text: user data is never HTML.
      const props = propSummary(r.properties);
      if (props) {
        const p = el("span", "props", props);
        p.title = JSON.stringify(r.properties);
        li.append(p);
      }
      return li;
    });
    feed.replaceChildren(...items);
  }

  function ts(r) {
    const t = Date.parse(r.occurred_at || r.processed_at);
    return isNaN(t) ? null : t;
  }

  // perMinute counts events per minute over the last 30 minutes: the
  // store's counts from /v1/stats plus the records streamed in since then.
  function perMinute() {
    const now = Date.now();
    const start = Math.floor(now / 60000) * 60000 - 29 * 60000;
    const buckets = new Array(30).fill(0);
    if (statsRate && statsRate.start === start) return statsRate.buckets.slice();
    for (const r of records) {
      const t = ts(r);
      if (t === null || t < start) continue;
      const i = Math.min(29, Math.floor((t - start) / 60000));
      buckets[i]++;
    }
    return buckets;
  }

  function renderRate() {
    const b = perMinute();
    const max = Math.max(1, ...b);
    const bars = b.map((n, i) => {
      const d = el("div");
      d.style.height = `${(100 * n) / max}%`;
      d.title = `${n} events, ${29 - i} min ago`;
      return d;
    });
    $("rate").replaceChildren(...bars);
  }

  function countriesFromRecords() {
    const m = new Map();
    for (const r of records) {
      if (!r.weather || !r.location || !r.location.country) continue;
      const t = r.weather.temperature_c;
      const c = m.get(r.location.country) || { name: r.location.country, sum: 0, n: 0, min: Infinity, max: -Infinity };
      c.sum += t;
      c.n++;
      c.min = Math.min(c.min, t);
      c.max = Math.max(c.max, t);
      m.set(c.name, c);
    }
    return [...m.values()].map((c) => ({ name: c.name, mean: c.sum / c.n, min: c.min, max: c.max, n: c.n }));
  }

  function tempColor(t) {
    // blue (-20) .. teal (5) .. yellow (20) .. red (38)
    const stops = [[-20, [80, 120, 255]], [5, [77, 208, 193]], [20, [245, 197, 66]], [38, [255, 70, 70]]];
    if (t <= stops[0][0]) return `rgb(${stops[0][1]})`;
    for (let i = 1; i < stops.length; i++) {
      if (t <= stops[i][0]) {
        const [t0, c0] = stops[i - 1], [t1, c1] = stops[i];
        const f = (t - t0) / (t1 - t0);
        return `rgb(${c0.map((v, k) => Math.round(v + f * (c1[k] - v))).join(",")})`;
      }
    }
    return `rgb(${stops[stops.length - 1][1]})`;
  }

  function renderTemps() {
    const rows = (statsByCountry || countriesFromRecords()).sort((a, b) => b.n - a.n || a.name.localeCompare(b.name)).slice(0, 14);
    rows.sort((a, b) => b.mean - a.mean);
    $("temp-source").textContent = statsByCountry ? "mean, min–max · /v1/stats, last hour" : "mean, min–max · records on this page";
    $("rate-source").textContent = statsRate ? "last 30 min, by occurred_at · /v1/stats" : "last 30 min, by occurred_at · records on this page";
    const lo = Math.min(-10, ...rows.map((r) => (r.min === undefined ? r.mean : r.min)));
    const hi = Math.max(35, ...rows.map((r) => (r.max === undefined ? r.mean : r.max)));
    const x = (t) => `${(100 * (t - lo)) / (hi - lo)}%`;
    const cells = [];
    for (const r of rows) {
      cells.push(el("span", "name", r.name));
      const track = el("span", "track");
      const zero = el("i", "zero");
      zero.style.left = x(0);
      track.append(zero);
      if (r.min !== undefined && r.max !== undefined) {
        const range = el("i", "range");
        range.style.left = x(r.min);
        range.style.width = `calc(${x(r.max)} - ${x(r.min)})`;
        track.append(range);
      }
      const mean = el("i", "mean");
      mean.style.left = x(r.mean);
      mean.style.background = tempColor(r.mean);
      mean.title = `${r.name}: mean ${fmtTemp(r.mean)} over ${r.n} events`;
      track.append(mean);
      cells.push(track, el("span", "val", fmtTemp(r.mean)));
    }
    if (!cells.length) cells.push(el("span", "empty", "no weather yet"));
    $("temps").replaceChildren(...cells);
  }

  function renderKPIs() {
    $("kpi-total").textContent = total.toLocaleString();
    const b = perMinute();
    $("kpi-rate").textContent = (b[28] || b[29] || 0).toLocaleString();
    const recent = records.slice(-200).filter((r) => r.weather);
    $("kpi-temp").textContent = recent.length ? (recent.reduce((s, r) => s + r.weather.temperature_c, 0) / recent.length).toFixed(1) : "–";
    $("kpi-countries").textContent = new Set(records.map((r) => r.location && r.location.country).filter(Boolean)).size;
  }

  // ---- the map: equirectangular, land from /assets/world.json ---------------
  const LAT_TOP = 84, LAT_BOTTOM = -60;
  let world = null;
  let landLayer = null; // offscreen canvas with ocean, graticule and land

  function project(lon, lat, w, h) {
    return [((lon + 180) / 360) * w, ((LAT_TOP - lat) / (LAT_TOP - LAT_BOTTOM)) * h];
  }

  function drawLand(w, h, dpr) {
    const c = document.createElement("canvas");
    c.width = w * dpr;
    c.height = h * dpr;
    const g = c.getContext("2d");
    g.scale(dpr, dpr);
    g.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--ocean") || "#10223d";
    g.fillRect(0, 0, w, h);
    g.strokeStyle = "rgba(120,150,200,0.12)";
    g.lineWidth = 1;
    g.beginPath();
    for (let lon = -180; lon <= 180; lon += 30) {
      const [x] = project(lon, 0, w, h);
      g.moveTo(x, 0);
      g.lineTo(x, h);
    }
    for (let lat = -60; lat <= 80; lat += 20) {
      const [, y] = project(0, lat, w, h);
      g.moveTo(0, y);
      g.lineTo(w, y);
    }
    g.stroke();
    if (world) {
      g.fillStyle = "#2c3b57";
      g.strokeStyle = "#3d5078";
      g.beginPath();
      for (const ring of world.rings) {
        for (let i = 0; i < ring.length; i += 2) {
          const [x, y] = project(ring[i], ring[i + 1], w, h);
          if (i === 0) g.moveTo(x, y);
          else g.lineTo(x, y);
        }
        g.closePath();
      }
      g.fill("evenodd");
      g.stroke();
    }
    return c;
  }

  let landKey = "";
  function drawMap() {
    const canvas = $("map");
    const w = canvas.clientWidth, h = canvas.clientHeight;
    if (!w || !h) return;
    const dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const key = `${w}x${h}@${dpr}/${world ? 1 : 0}`;
    if (key !== landKey) {
      landLayer = drawLand(w, h, dpr);
      landKey = key;
    }
    const g = canvas.getContext("2d");
    g.setTransform(1, 0, 0, 1, 0, 0);
    g.drawImage(landLayer, 0, 0);
    g.scale(dpr, dpr);
    const pts = records.slice(-MAP_POINTS);
    let drawn = 0;
    pts.forEach((r, i) => {
      const loc = r.location || {};
      if (typeof loc.latitude !== "number" || typeof loc.longitude !== "number") return;
      const [x, y] = project(loc.longitude, loc.latitude, w, h);
      const age = (pts.length - 1 - i) / Math.max(1, pts.length - 1); // 0 newest .. 1 oldest
      const grp = groupOf(r);
      g.globalAlpha = 1 - 0.6 * age;
      g.fillStyle = grp.color;
      g.beginPath();
      g.arc(x, y, i >= pts.length - 10 ? 4.5 : 3, 0, 2 * Math.PI);
      g.fill();
      if (i >= pts.length - 10) {
        g.globalAlpha = 0.9;
        g.strokeStyle = "#ffffff";
        g.lineWidth = 1;
        g.stroke();
      }
      drawn++;
    });
    g.globalAlpha = 1;
    canvas.dataset.points = String(drawn);
  }

  function renderLegend() {
    const items = GROUPS.map((gr) => {
      const li = el("li");
      const i = el("i");
      i.style.background = gr.color;
      li.append(i, document.createTextNode(gr.label));
      return li;
    });
    $("legend").replaceChildren(...items);
  }

  // ---- start -----------------------------------------------------------------
  renderLegend();
  window.addEventListener("resize", scheduleRender);
  fetch("/assets/world.json")
    .then((r) => r.json())
    .then((w) => {
      world = w;
      landKey = "";
      scheduleRender();
    })
    .catch(() => {}); // graticule and points only
  function start() {
    fetchEvents(1000)
      .then((evs) => add(evs, false))
      .catch((e) => {
        if (!(e instanceof AuthRequired)) setStatus("offline", "API unreachable");
      })
      .finally(() => {
        scheduleRender();
        startStream();
      });
    fetchStats();
  }
  start();
  setInterval(() => signingIn || fetchStats(), 10000);
  setInterval(scheduleRender, 5000); // the per-minute bars move on with time
})();
