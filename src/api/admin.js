// The operator dashboard's script (src/api/admin.rs). Asks for the admin token once per tab
// (kept in sessionStorage, sent only as `Authorization: Bearer …`, never in a URL), then reads
// /admin/api/ every REFRESH_MS and draws it. Everything the server sends is shown as text
// (textContent), never parsed as HTML: dead jobs' errors and payloads are data.
"use strict";

(() => {
  /** How often the views refresh (a hidden tab or a paused page skips the tick). */
  const REFRESH_MS = 2000;
  /** How often relative times ("12s ago") are redrawn from their stored timestamps. */
  const TICK_MS = 1000;
  /** How long a result message ("limit set") stays. */
  const RESULT_MS = 6000;
  /** A retried dead job seen dead again within this long died again after the retry. */
  const RETRY_WATCH_MS = 60000;
  const TOKEN_KEY = "buildlogs-admin-token";
  const BUILDS_API = "/admin/api/builds";
  const BUILDS_PAGE = 50;
  const SVG = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem(TOKEN_KEY);
  let timer = null;
  /** Server clock minus this browser's, from the last answer carrying `now_ms`. */
  let skewMs = 0;
  /** When every view last refreshed without an error (ms, browser clock). */
  let lastOkMs = null;
  /** The last rendered JSON per view, so an unchanged table is not rebuilt under the mouse. */
  const lastRendered = new Map();
  /** queue → its row in the queues table, kept across refreshes (its limit input too). */
  const queueRows = new Map();
  /** Dead job id → when the dashboard re-ran it. */
  const retried = new Map();
  /** The builds list page shown: `before` id of the page (null: the newest). */
  let buildsBefore = null;

  class AuthError extends Error {}

  async function api(method, path, body) {
    const init = { method, cache: "no-store", headers: { Authorization: `Bearer ${token}` } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (_) {
      throw new Error("the server does not answer");
    }
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
    if (!response.ok) {
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    if (json && typeof json.now_ms === "number") skewMs = json.now_ms - Date.now();
    return json;
  }

  const q = (name) => encodeURIComponent(name);
  const serverNow = () => Date.now() + skewMs;

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function millis(ms) {
    if (ms < 1000) return `${Math.round(ms)}ms`;
    if (ms < 60000) return `${Math.floor(ms / 1000)}s`;
    const s = Math.floor(ms / 1000);
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  /** A span of time in its two largest units, zero parts left out: "1h", "2m 5s". */
  function duration(ms) {
    const s = Math.floor(ms / 1000);
    const parts = [[Math.floor(s / 86400), "d"], [Math.floor(s / 3600) % 24, "h"],
      [Math.floor(s / 60) % 60, "m"], [s % 60, "s"]];
    const first = parts.findIndex(([n]) => n > 0);
    if (first < 0) return "0s";
    return parts.slice(first, first + 2).filter(([n]) => n > 0).map(([n, u]) => `${n}${u}`)
      .join(" ");
  }

  /** A long id as its head and tail (where ids differ), the whole id in the tooltip. */
  function shortId(id) {
    return id.length > 18 ? `${id.slice(0, 8)}\u2026${id.slice(-8)}` : id;
  }

  function bytes(n) {
    if (n === null || n === undefined) return "-";
    if (n < 1024) return `${n} B`;
    const units = ["KiB", "MiB", "GiB", "TiB"];
    let v = n / 1024;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i += 1;
    }
    return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
  }

  /** The text of a relative time: "12s ago" / "in 4m 10s". */
  function relative(ms) {
    const d = ms - serverNow();
    if (Math.abs(d) < 1000) return "now";
    return d > 0 ? `in ${millis(d)}` : `${millis(-d)} ago`;
  }

  /** A relative time that keeps ticking (see `tick`); the exact time in the tooltip. */
  function when(ms) {
    const node = el("span", null, "when");
    if (ms === null || ms === undefined) {
      node.textContent = "-";
      return node;
    }
    node.dataset.at = String(ms);
    node.textContent = relative(ms);
    node.title = new Date(ms).toISOString();
    return node;
  }

  /** Redraws every relative time from its stored timestamp, and the "updated" age. */
  function tick() {
    for (const node of document.querySelectorAll("span.when[data-at]")) {
      node.textContent = relative(Number(node.dataset.at));
    }
    const updated = $("updated");
    if (lastOkMs === null) return;
    const ms = Math.max(0, Date.now() - lastOkMs);
    const age = ms < 1000 ? "just now" : `${millis(ms)} ago`;
    const failing = !$("error").hidden;
    updated.textContent = failing ? `stale: last updated ${age}` : `updated ${age}`;
    updated.className = failing ? "stale" : "muted";
    updated.title = new Date(lastOkMs).toLocaleString();
  }

  /** Shows a result message that clears itself after RESULT_MS. */
  function flash(node, text, ok) {
    node.textContent = text;
    node.className = `result ${ok ? "ok" : "error"}`;
    clearTimeout(node.clearTimer);
    node.clearTimer = setTimeout(() => {
      node.textContent = "";
      node.className = "result";
    }, RESULT_MS);
  }

  /** Runs `render` only when `data` differs from what `key` last showed. */
  function renderIfChanged(key, data, render) {
    const json = JSON.stringify(data);
    if (lastRendered.get(key) === json) return;
    lastRendered.set(key, json);
    render(data);
  }

  // ---- queues and limits ----

  const LIMIT_HELP = "enter a whole number of at least 1, or \u201cnone\u201d to remove the limit";

  function queueRow(name) {
    const tr = el("tr");
    const input = el("input", null, "limit");
    input.setAttribute("aria-label", `limit of ${name}`);
    input.inputMode = "numeric";
    input.autocomplete = "off";
    input.addEventListener("input", () => { input.dataset.dirty = "1"; });
    const button = el("button", "set");
    button.type = "submit";
    const form = el("form", null, "limit");
    form.append(input, button);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      setLimit(name, input);
    });
    const limitCell = el("td");
    limitCell.appendChild(form);
    const cells = [];
    for (let i = 0; i < 7; i++) cells.push(el("td", "", "num"));
    tr.append(el("td", name), limitCell, ...cells);
    return { tr, cells, input };
  }

  /** The input shows the queue's limit, unless someone is typing in it. */
  function showLimit(input, limit) {
    if (input.dataset.dirty || document.activeElement === input) return;
    input.value = limit === null ? "none" : String(limit);
  }

  async function setLimit(queue, input) {
    const raw = input.value.trim().toLowerCase();
    const result = $("limit-result");
    let limit;
    if (raw === "none" || raw === "") {
      limit = "none";
    } else if (/^\d+$/.test(raw) && Number(raw) >= 1 && Number(raw) <= 4294967295) {
      limit = Number(raw);
    } else {
      flash(result, `${queue}: \u201c${input.value.trim()}\u201d is not a limit: ${LIMIT_HELP}.`,
        false);
      return;
    }
    try {
      const answer = await api("PUT", `/admin/api/queues/${q(queue)}/limit`, { limit });
      delete input.dataset.dirty;
      input.value = answer.limit === null ? "none" : String(answer.limit);
      flash(result, answer.limit === null
        ? `${queue}: no limit now`
        : `${queue}: at most ${answer.limit} running at once`, true);
      refresh();
    } catch (e) {
      if (e instanceof AuthError) return showLogin(e.message);
      const why = e.status === 400 ? LIMIT_HELP
        : e.status === 403 ? "the read-only token cannot change limits"
          : e.status === 404 ? "this queue is gone" : e.message;
      flash(result, `${queue}: limit not set: ${why}.`, false);
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
      showLimit(row.input, s.limit);
      const values = [s.ready, s.scheduled, s.running, millis(s.latency_ms), s.dead, s.processed,
        s.failed];
      values.forEach((v, i) => { row.cells[i].textContent = String(v); });
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

  // ---- builds ----

  function buildsPath() {
    const params = new URLSearchParams({ state: $("builds-state").value, limit: BUILDS_PAGE });
    if (buildsBefore !== null) params.set("before", buildsBefore);
    return `${BUILDS_API}?${params}`;
  }

  async function refreshBuilds() {
    renderBuilds(await api("GET", buildsPath()));
  }

  function renderBuilds(data) {
    $("builds-older").hidden = data.next_before === null;
    $("builds-older").dataset.before = data.next_before === null ? "" : data.next_before;
    $("builds-newest").hidden = buildsBefore === null;
    renderIfChanged("builds", data.builds, (builds) => {
      const tbody = $("builds").querySelector("tbody");
      tbody.replaceChildren(...builds.map((b) => {
        const link = el("a", `#${b.id}`);
        link.href = b.web_url;
        link.title = "open the log";
        const job = el("td", null, "nowrap");
        job.appendChild(link);
        const status = el("td", b.status, `status-${b.status}`);
        if (b.failure_reason) status.title = b.failure_reason;
        const started = el("td", null, "nowrap");
        started.appendChild(when(Date.parse(b.created_at)));
        const finished = el("td", null, "nowrap");
        finished.appendChild(when(b.finished_at ? Date.parse(b.finished_at) : null));
        const checks = el("td", null, "nowrap");
        if (b.trace.partial) {
          const badge = el("span", `partial: ${bytes(b.trace.lost_bytes)} lost`, "badge warn");
          badge.title = "bytes lost before the archive; a marker line in the log holds their place";
          checks.appendChild(badge);
        }
        if (b.trace.checksum_valid === false) {
          const badge = el("span", "checksum mismatch", "badge bad");
          badge.title = "the runner's CRC32 differs from the log's";
          checks.appendChild(badge);
        }
        if (!checks.firstChild) checks.textContent = b.trace.checksum_valid ? "checksum ok" : "-";
        const tr = el("tr");
        tr.append(job, status, el("td", b.trace.state), el("td", bytes(b.trace.size), "num nowrap"),
          started, finished, checks);
        return tr;
      }));
      $("builds-empty").hidden = builds.length > 0;
    });
  }

  function showBuildsPage(before) {
    buildsBefore = before;
    lastRendered.delete("builds");
    refreshBuilds().catch(viewFailed);
  }

  // ---- jobs waiting to run again ----

  function renderRetries(data) {
    renderIfChanged("retries", data.jobs, (jobs) => {
      const tbody = $("retries").querySelector("tbody");
      tbody.replaceChildren(...jobs.map((job) => {
        const tr = el("tr");
        const id = el("td", shortId(job.id), "id");
        id.title = job.id;
        const next = el("td", null, "nowrap");
        next.appendChild(when(job.run_at_ms));
        // No error: it has not failed (snoozed while the store is down, or enqueued for later).
        const error = job.last_error === null
          ? el("td", job.attempts === 0 ? "not run yet" : "no failure (snoozed)", "muted")
          : el("td", job.last_error, "text");
        tr.append(el("td", job.queue), id, el("td", `${job.attempts}/${job.max_attempts}`, "num"),
          next, error, el("td", job.payload, "text"));
        return tr;
      }));
      $("retries-empty").hidden = jobs.length > 0;
    });
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
    // A job re-run here that is dead again: the retry queued it, and it failed again.
    for (const job of data.jobs) {
      const at = retried.get(job.id);
      if (at !== undefined && job.died_at_ms >= at) {
        retried.delete(job.id);
        flash($("dead-result"), `${job.id}: ran again and died again: ${job.error}`, false);
      }
    }
    renderIfChanged("dead", data, () => {
      const tbody = $("dead").querySelector("tbody");
      tbody.replaceChildren(...data.jobs.map((job) => {
        const tr = el("tr");
        const retry = el("button", "retry");
        retry.addEventListener("click", () => deadAction(data.queue, job.id, "retry"));
        const discard = el("button", "discard");
        discard.addEventListener("click", () => deadAction(data.queue, job.id, "discard"));
        const actions = el("td", null, "nowrap");
        actions.append(retry, " ", discard);
        const died = el("td", null, "nowrap");
        died.appendChild(when(job.died_at_ms));
        const id = el("td", shortId(job.id), "id");
        id.title = job.id;
        tr.append(id, el("td", `${job.attempts}/${job.max_attempts}`, "num"), died,
          el("td", job.error, "text"), el("td", job.payload, "text"), actions);
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
        const answer = await api("POST", `/admin/api/queues/${q(queue)}/dead/${q(id)}/retry`);
        if (answer && answer.retried === true) {
          retried.set(id, serverNow() - 1000);
          setTimeout(() => retried.delete(id), RETRY_WATCH_MS);
          flash(result, `${id}: queued again`, true);
        } else {
          flash(result, `${id}: not queued again`, false);
        }
      } else {
        const answer = await api("DELETE", `/admin/api/queues/${q(queue)}/dead/${q(id)}`);
        flash(result, answer && answer.discarded ? `${id}: discarded` : `${id}: not discarded`,
          Boolean(answer && answer.discarded));
      }
      refresh();
    } catch (e) {
      if (e instanceof AuthError) return showLogin(e.message);
      const why = e.status === 403 ? "the read-only token cannot change anything"
        : e.status === 404 ? "it is no longer in the dead set" : e.message;
      flash(result, `${id}: ${why}`, false);
    }
  }

  // ---- cron, breaker, recovery ----

  function renderCron(data) {
    renderIfChanged("cron", data.schedules, (schedules) => {
      const tbody = $("cron").querySelector("tbody");
      tbody.replaceChildren(...schedules.map((s) => {
        const tr = el("tr");
        const last = el("td", null, "nowrap");
        last.appendChild(when(s.last_fired_ms));
        const next = el("td", null, "nowrap");
        next.appendChild(when(s.next_tick_ms));
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
    renderIfChanged("breaker", [b.open, b.since_ms, b.reason, b.history], () => {
      const state = el("span", b.open ? "open: object store considered down" : "closed",
        b.open ? "open" : "closed");
      definitions("breaker", [
        ["state", state],
        ["last change", b.since_ms === null ? "never opened" : when(b.since_ms)],
        ["reason", b.reason || "-"],
      ]);
      // Its history: each outage with when it began, how long it lasted and why.
      const outages = b.history.filter((c) => c.open);
      $("breaker-history").replaceChildren(...outages.map((c) => {
        const li = el("li");
        const lasted = c.lasted_ms === null ? "still down" : `down ${duration(c.lasted_ms)}`;
        li.append("opened ", when(c.at_ms), `, ${lasted}`);
        if (c.reason) li.append(": ", el("span", c.reason, "text"));
        return li;
      }));
      $("breaker-history-title").hidden = outages.length === 0;
    });
  }

  function renderRecovery(r) {
    const shown = { ...r };
    delete shown.now_ms;
    renderIfChanged("recovery", shown, () => {
      const cursor = r.cursor === null
        ? "never ran"
        : r.cursor === 0
          ? "0 (the next run walks from the first build)"
          : `build ${r.cursor} (the next run resumes above it)`;
      const stale = `${r.stale}${r.stale_more ? "+" : ""} finished over ${duration(r.stale_after_ms)}`
        + " ago, not archived";
      definitions("recovery", [
        ["last step", r.last_step_ms === null ? "never" : when(r.last_step_ms)],
        ["next run", r.schedule ? when(r.schedule.next_tick_ms) : "not scheduled here"],
        ["stale logs", stale],
        ["cursor", cursor],
      ]);
    });
  }

  function renderExpiry(x) {
    renderIfChanged("expiry", [x.archived, x.on, x.keep_ms, x.newest_expires_at_ms], () => {
      if (!x.archived) {
        definitions("expiry", [["state", "no log archived yet"]]);
      } else if (!x.on) {
        definitions("expiry", [
          ["state", el("span", "off", "closed")],
          ["meaning", "archived logs are kept forever (BUILDLOGS_TRACE_EXPIRE_DAYS unset when "
            + "the newest was archived)"],
        ]);
      } else {
        definitions("expiry", [
          ["state", "on"],
          ["kept for", duration(x.keep_ms)],
          ["newest expires", when(x.newest_expires_at_ms)],
        ]);
      }
    });
  }

  async function runRecovery() {
    const result = $("recovery-result");
    try {
      const answer = await api("POST", "/admin/api/recovery/run");
      flash(result, answer.message, answer.queued);
      refresh();
    } catch (e) {
      if (e instanceof AuthError) return showLogin(e.message);
      flash(result, e.status === 403 ? "the read-only token cannot run recovery" : e.message,
        false);
    }
  }

  // ---- backlog chart ----

  function svg(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, String(v));
    return node;
  }

  /** A queue's colour, from its name: the same whichever queues appear or go. */
  function colorOf(name) {
    let h = 2166136261;
    for (let i = 0; i < name.length; i++) {
      h = Math.imul(h ^ name.charCodeAt(i), 16777619) >>> 0;
    }
    return `hsl(${h % 360}, 70%, ${38 + (h >> 9) % 12}%)`;
  }

  /** Axis values: 0 to a round top in 1, 2 or 5 × 10^k steps, whole numbers, all distinct. */
  function niceTicks(max) {
    const rough = Math.max(1, max) / 4;
    const magnitude = 10 ** Math.floor(Math.log10(rough));
    const step = Math.max(1, [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= rough));
    const top = Math.max(step, Math.ceil(max / step) * step);
    const ticks = [];
    for (let v = 0; v <= top; v += step) ticks.push(v);
    return ticks;
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
    const ticks = niceTicks(Math.max(0, ...samples.flatMap((s) => Object.values(s.queues))));
    const max = ticks[ticks.length - 1];
    const x = (t) => left + ((t - t0) / (t1 - t0)) * (w - left - right);
    const y = (v) => top + (1 - v / max) * (h - top - bottom);
    const root = svg("svg", { viewBox: `0 0 ${w} ${h}`, role: "img",
      "aria-label": "backlog per queue over time" });
    for (const v of ticks) {
      root.appendChild(svg("line", { x1: left, x2: w - right, y1: y(v), y2: y(v),
        stroke: v === 0 ? "#c9cdd6" : "#e7e9ef" }));
      const label = svg("text", { x: left - 4, y: y(v) + 4, "text-anchor": "end" });
      label.textContent = String(v);
      root.appendChild(label);
    }
    const span = svg("text", { x: left, y: h - 4 });
    span.textContent = `${millis(data.now_ms - t0)} ago`;
    const now = svg("text", { x: w - right, y: h - 4, "text-anchor": "end" });
    now.textContent = "now";
    root.append(span, now);
    const legend = el("div", null, "legend");
    for (const name of names) {
      const color = colorOf(name);
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
            stroke: color, "stroke-width": 1.8, "data-queue": name }));
        }
      }
      const last = samples[samples.length - 1].queues[name];
      const swatch = el("span", null, "swatch");
      swatch.style.background = color;
      const item = el("span");
      item.dataset.queue = name;
      item.append(swatch, `${name}: ${last === undefined ? "-" : last}`);
      legend.appendChild(item);
    }
    chart.replaceChildren(root, legend);
  }

  // ---- refresh loop and token ----

  /** A view's error outside the refresh loop (a filter or page change). */
  function viewFailed(e) {
    if (e instanceof AuthError) showLogin(e.message);
    else showFailures([e]);
  }

  /** One banner for whatever failed, each distinct reason once; figures marked stale. */
  function showFailures(failures) {
    const error = $("error");
    const main = $("dashboard");
    if (failures.length === 0) {
      error.hidden = true;
      error.textContent = "";
      main.classList.remove("stale");
    } else {
      const reasons = [...new Set(failures.map((e) => e.message))];
      const since = lastOkMs === null ? "" : ` The figures below are from ${
        new Date(lastOkMs).toLocaleTimeString()}.`;
      error.textContent = `Cannot refresh: ${reasons.join("; ")}.${since}`;
      error.hidden = false;
      main.classList.add("stale");
    }
    tick();
  }

  async function refresh() {
    const views = [
      api("GET", "/admin/api/queues").then(renderQueues).then(refreshDead),
      refreshBuilds(),
      api("GET", "/admin/api/retries?limit=50").then(renderRetries),
      api("GET", "/admin/api/backlog").then(renderBacklog),
      api("GET", "/admin/api/breaker").then(renderBreaker),
      api("GET", "/admin/api/recovery").then(renderRecovery),
      api("GET", "/admin/api/expiry").then(renderExpiry),
      api("GET", "/admin/api/cron").then(renderCron),
    ];
    const results = await Promise.allSettled(views);
    const failures = results.filter((r) => r.status === "rejected").map((r) => r.reason);
    const auth = failures.find((e) => e instanceof AuthError);
    if (auth) {
      showLogin(auth.message);
      return false;
    }
    if (failures.length === 0) lastOkMs = Date.now();
    showFailures(failures);
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
      refreshDead().catch(viewFailed);
    });
    $("builds-state").addEventListener("change", () => showBuildsPage(null));
    $("builds-older").addEventListener("click", () => {
      showBuildsPage(Number($("builds-older").dataset.before));
    });
    $("builds-newest").addEventListener("click", () => showBuildsPage(null));
    $("recovery-run").addEventListener("click", runRecovery);
    setInterval(tick, TICK_MS);
    if (token) open();
    else showLogin("");
  });
})();
