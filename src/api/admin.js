// The operator dashboard's script (src/api/admin.rs). Asks for the admin token once per tab
// (kept in sessionStorage, sent only as `Authorization: Bearer …`, never in a URL), then reads
// /admin/api/ every REFRESH_MS and draws it. Everything the server sends is shown as text
// (textContent), never parsed as HTML: dead jobs' errors and payloads are data.
"use strict";

(() => {
  /** How often the views refresh (a hidden tab or a paused page skips the tick). */
  const REFRESH_MS = 2000;
  const TOKEN_KEY = "buildlogs-admin-token";
  const COLORS = ["#2f6fde", "#d9480f", "#2b8a3e", "#ae3ec9", "#e8590c", "#0c8599", "#5c940d",
    "#c2255c"];
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(TOKEN_KEY);
  let timer = null;
  /** The last rendered JSON per view, so an unchanged table is not rebuilt under the mouse. */
  const lastRendered = new Map();
  /** queue → its row in the queues table, kept across refreshes (its limit input too). */
  const queueRows = new Map();

  class AuthError extends Error {}

  async function api(method, path, body) {
    const init = { method, cache: "no-store", headers: { Authorization: `Bearer ${token}` } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    let json = null;
    try {
      json = await response.json();
    } catch (_) {
      // Not JSON (a proxy's error page): the status says enough.
    }
    const message = (json && json.message) || `${response.status} ${response.statusText}`;
    // A 403 on a change is the read-only token's refusal: shown where the change was asked for.
    const refused = response.status === 401 || (response.status === 403 && method === "GET");
    if (refused) throw new AuthError(message);
    if (!response.ok) throw new Error(message);
    return json;
  }

  const q = (name) => encodeURIComponent(name);

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function millis(ms) {
    if (ms < 1000) return `${ms}ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)}s`;
    const s = Math.round(ms / 1000);
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  }

  /** "12s ago" / "in 4m 10s", the exact time in the tooltip. */
  function when(ms, nowMs) {
    const node = el("span");
    if (ms === null || ms === undefined) {
      node.textContent = "-";
      return node;
    }
    const d = ms - nowMs;
    node.textContent = d >= 0 ? `in ${millis(d)}` : `${millis(-d)} ago`;
    node.title = new Date(ms).toISOString();
    return node;
  }

  /** Runs `render` only when `data` differs from what `key` last showed. */
  function renderIfChanged(key, data, render) {
    const json = JSON.stringify(data);
    if (lastRendered.get(key) === json) return;
    lastRendered.set(key, json);
    render(data);
  }

  // ---- queues and limits ----

  function queueRow(name) {
    const tr = el("tr");
    const cells = [el("td", name)];
    for (let i = 0; i < 8; i++) cells.push(el("td", "", "num"));
    cells.forEach((c) => tr.appendChild(c));
    const form = el("form");
    const input = el("input", null, "limit");
    input.placeholder = "none";
    input.setAttribute("aria-label", `limit of ${name}`);
    const button = el("button", "set");
    button.type = "submit";
    form.append(input, " ", button);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      setLimit(name, input);
    });
    const td = el("td");
    td.appendChild(form);
    tr.appendChild(td);
    return { tr, cells };
  }

  async function setLimit(queue, input) {
    const raw = input.value.trim();
    // The server decides what is valid; a value it refuses comes back with its reason.
    const limit = raw === "none" ? "none" : /^\d+$/.test(raw) ? Number(raw) : raw;
    const result = $("limit-result");
    try {
      const answer = await api("PUT", `/admin/api/queues/${q(queue)}/limit`, { limit });
      result.className = "muted";
      result.textContent = answer.limit === null
        ? `${queue}: no limit`
        : `${queue}: at most ${answer.limit} running at once`;
      input.value = "";
      refresh();
    } catch (e) {
      if (e instanceof AuthError) return showLogin(e.message);
      result.className = "error";
      result.textContent = `${queue}: ${e.message}`;
    }
  }

  function renderQueues(data) {
    const tbody = $("queues").querySelector("tbody");
    const seen = new Set();
    for (const s of data.queues) {
      seen.add(s.queue);
      let row = queueRows.get(s.queue);
      if (!row) {
        row = queueRow(s.queue);
        queueRows.set(s.queue, row);
        tbody.appendChild(row.tr);
      }
      const values = [s.ready, s.scheduled, s.running, s.limit === null ? "none" : s.limit,
        millis(s.latency_ms), s.dead, s.processed, s.failed];
      values.forEach((v, i) => { row.cells[i + 1].textContent = String(v); });
    }
    for (const [name, row] of queueRows) {
      if (!seen.has(name)) {
        row.tr.remove();
        queueRows.delete(name);
      }
    }
    $("queues-empty").hidden = data.queues.length > 0;
    renderDeadChoice(data.queues);
  }

  // ---- dead jobs ----

  function renderDeadChoice(queues) {
    const select = $("dead-queue");
    const chosen = select.value;
    const options = queues.map((s) => [s.queue, `${s.queue} (${s.dead})`]);
    renderIfChanged("dead-choice", options, () => {
      select.replaceChildren(...options.map(([value, label]) => {
        const option = el("option", label);
        option.value = value;
        return option;
      }));
      const firstDead = queues.find((s) => s.dead > 0);
      if (queues.some((s) => s.queue === chosen)) select.value = chosen;
      else if (firstDead) select.value = firstDead.queue;
    });
  }

  async function refreshDead() {
    const queue = $("dead-queue").value;
    if (!queue) {
      renderDead({ queue: "", jobs: [] });
      return;
    }
    renderDead(await api("GET", `/admin/api/queues/${q(queue)}/dead?limit=100`));
  }

  function renderDead(data) {
    renderIfChanged("dead", data, () => {
      const tbody = $("dead").querySelector("tbody");
      const now = Date.now();
      tbody.replaceChildren(...data.jobs.map((job) => {
        const tr = el("tr");
        const retry = el("button", "retry");
        retry.addEventListener("click", () => deadAction(data.queue, job.id, "retry"));
        const discard = el("button", "discard");
        discard.addEventListener("click", () => deadAction(data.queue, job.id, "discard"));
        const actions = el("td");
        actions.append(retry, " ", discard);
        const died = el("td");
        died.appendChild(when(job.died_at_ms, now));
        tr.append(el("td", job.id, "text"), el("td", `${job.attempts}/${job.max_attempts}`, "num"),
          died, el("td", job.error, "text"), el("td", job.payload, "text"), actions);
        return tr;
      }));
      $("dead-empty").hidden = data.jobs.length > 0 || !data.queue;
    });
  }

  async function deadAction(queue, id, action) {
    if (action === "discard" && !window.confirm(`Delete dead job ${id} of ${queue} for good?`)) {
      return;
    }
    const result = $("dead-result");
    try {
      if (action === "retry") {
        await api("POST", `/admin/api/queues/${q(queue)}/dead/${q(id)}/retry`);
        result.textContent = `${id}: queued again`;
      } else {
        await api("DELETE", `/admin/api/queues/${q(queue)}/dead/${q(id)}`);
        result.textContent = `${id}: discarded`;
      }
      result.className = "muted";
      refresh();
    } catch (e) {
      if (e instanceof AuthError) return showLogin(e.message);
      result.className = "error";
      result.textContent = `${id}: ${e.message}`;
    }
  }

  // ---- cron, breaker, recovery ----

  function renderCron(data) {
    renderIfChanged("cron", data.schedules, (schedules) => {
      const tbody = $("cron").querySelector("tbody");
      tbody.replaceChildren(...schedules.map((s) => {
        const tr = el("tr");
        const last = el("td");
        last.appendChild(when(s.last_fired_ms, data.now_ms));
        const next = el("td");
        next.appendChild(when(s.next_tick_ms, data.now_ms));
        tr.append(el("td", s.name), el("td", s.expression, "text"), el("td", s.queue), last,
          next);
        return tr;
      }));
    });
  }

  function definitions(id, pairs) {
    $(id).replaceChildren(...pairs.flatMap(([term, value]) => {
      const dd = el("dd");
      if (value instanceof Node) dd.appendChild(value);
      else dd.textContent = String(value);
      return [el("dt", term), dd];
    }));
  }

  function renderBreaker(b) {
    const state = el("span", b.open ? "open: object store considered down" : "closed",
      b.open ? "open" : "closed");
    definitions("breaker", [
      ["state", state],
      ["since", b.since_ms === null ? "never opened" : when(b.since_ms, b.now_ms)],
      ["reason", b.reason || "-"],
    ]);
  }

  function renderRecovery(r) {
    const cursor = r.cursor === null
      ? "never ran"
      : r.cursor === 0
        ? "0 (the next run walks from the first build)"
        : `build ${r.cursor} (the next run resumes above it)`;
    definitions("recovery", [["cursor", cursor]]);
  }

  // ---- backlog chart ----

  function svg(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, String(v));
    return node;
  }

  function renderBacklog(data) {
    const chart = $("chart");
    const samples = data.samples;
    if (samples.length === 0) {
      chart.replaceChildren(el("p",
        `No samples yet: the server takes one every ${millis(data.interval_ms)}.`, "muted"));
      return;
    }
    const names = [...new Set(samples.flatMap((s) => Object.keys(s.queues)))].sort();
    const [w, h, left, right, top, bottom] = [800, 200, 48, 8, 8, 20];
    const t0 = samples[0].at_ms;
    const t1 = Math.max(samples[samples.length - 1].at_ms, t0 + data.interval_ms);
    const max = Math.max(1, ...samples.flatMap((s) => Object.values(s.queues)));
    const x = (t) => left + ((t - t0) / (t1 - t0)) * (w - left - right);
    const y = (v) => top + (1 - v / max) * (h - top - bottom);
    const root = svg("svg", { viewBox: `0 0 ${w} ${h}`, role: "img",
      "aria-label": "backlog per queue over time" });
    for (const v of [0, max / 2, max]) {
      root.appendChild(svg("line", { x1: left, x2: w - right, y1: y(v), y2: y(v),
        stroke: "#e7e9ef" }));
      const label = svg("text", { x: left - 4, y: y(v) + 4, "text-anchor": "end" });
      label.textContent = String(Math.round(v));
      root.appendChild(label);
    }
    const span = svg("text", { x: left, y: h - 4 });
    span.textContent = `${millis(data.now_ms - t0)} ago`;
    const now = svg("text", { x: w - right, y: h - 4, "text-anchor": "end" });
    now.textContent = "now";
    root.append(span, now);
    const legend = el("div", null, "legend");
    names.forEach((name, i) => {
      const color = COLORS[i % COLORS.length];
      // A gap longer than a few intervals (failed samples, a restart) breaks the line.
      let points = [];
      const segments = [points];
      let previous = null;
      for (const s of samples) {
        if (previous !== null && s.at_ms - previous > 3 * data.interval_ms) {
          points = [];
          segments.push(points);
        }
        previous = s.at_ms;
        if (name in s.queues) points.push(`${x(s.at_ms).toFixed(1)},${y(s.queues[name]).toFixed(1)}`);
      }
      for (const segment of segments.filter((p) => p.length > 0)) {
        if (segment.length === 1) {
          const [cx, cy] = segment[0].split(",");
          root.appendChild(svg("circle", { cx, cy, r: 2.5, fill: color }));
        } else {
          root.appendChild(svg("polyline", { points: segment.join(" "), fill: "none",
            stroke: color, "stroke-width": 1.8 }));
        }
      }
      const last = samples[samples.length - 1].queues[name];
      const swatch = el("span", null, "swatch");
      swatch.style.background = color;
      const item = el("span");
      item.append(swatch, `${name}: ${last === undefined ? "-" : last}`);
      legend.appendChild(item);
    });
    chart.replaceChildren(root, legend);
  }

  // ---- refresh loop and token ----

  async function refresh() {
    const views = [
      api("GET", "/admin/api/queues").then(renderQueues).then(refreshDead),
      api("GET", "/admin/api/backlog").then(renderBacklog),
      api("GET", "/admin/api/breaker").then(renderBreaker),
      api("GET", "/admin/api/recovery").then(renderRecovery),
      api("GET", "/admin/api/cron").then(renderCron),
    ];
    const results = await Promise.allSettled(views);
    const failures = results.filter((r) => r.status === "rejected").map((r) => r.reason);
    const auth = failures.find((e) => e instanceof AuthError);
    if (auth) {
      showLogin(auth.message);
      return false;
    }
    const error = $("error");
    error.hidden = failures.length === 0;
    error.textContent = failures.map((e) => e.message).join("; ");
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    return true;
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      if (!document.hidden && !$("paused").checked) await refresh();
      if (token) schedule();
    }, REFRESH_MS);
  }

  function showLogin(message) {
    clearTimeout(timer);
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $("dashboard").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token").focus();
  }

  async function open() {
    $("login").hidden = true;
    $("dashboard").hidden = false;
    $("forget").hidden = false;
    if (await refresh()) schedule();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login").addEventListener("submit", (event) => {
      event.preventDefault();
      token = $("token").value.trim();
      $("token").value = "";
      sessionStorage.setItem(TOKEN_KEY, token);
      open();
    });
    $("forget").addEventListener("click", () => showLogin(""));
    $("dead-queue").addEventListener("change", () => {
      lastRendered.delete("dead");
      refreshDead().catch((e) => {
        if (e instanceof AuthError) showLogin(e.message);
      });
    });
    if (token) open();
    else showLogin("");
  });
})();
