// The log page's script (log.html): a virtualized view over a job's whole log.
//
// - Only the rows on screen (plus a margin) are in the DOM; lines come from the server in
//   pages of PAGE lines (GET /jobs/{id}/lines), fetched when they scroll into view, and a
//   bounded number of pages is kept.
// - Folded sections, the timestamp gutter and line numbers come from GET /jobs/{id}/summary;
//   a "row" is a line that is not folded away.
// - Browsers cap an element's height (~33M px): past MAX_SCROLL_PX the scrollbar maps to rows
//   proportionally and the wheel moves by rows, so every line stays reachable.
// - A live log is followed through the trace stream (GET /jobs/{id}/stream), resumed at the
//   last byte offset received after a drop.
// - Auth: a `#grant=…` fragment is exchanged for this job's cookie, then dropped from the URL;
//   without a cookie a sign-in form asks for a token (never put in a URL).
(function () {
  "use strict";

  const PAGE = 500; // lines per fetched page
  const MAX_PAGES = 400; // pages kept (200,000 lines)
  const MARGIN = 30; // rows rendered above and below the screen
  const MAX_SCROLL_PX = 16_000_000; // under Chromium's ~33.5M px element height cap
  const MAX_RENDER_CHARS = 20_000; // longer lines are cut (the raw view has every byte)
  const MAX_LINE_CHARS = 65_536; // kept of a line that grows live, as the server cuts at 64 KiB

  const $ = (id) => document.getElementById(id);
  const logBox = $("log");
  const spacer = $("spacer");
  const rowsBox = $("rows");

  const match = location.pathname.match(/^\/jobs\/(\d+)\/?$/);
  const jobId = match ? match[1] : null;
  const base = `/jobs/${jobId}`;

  const state = {
    rowHeight: 20,
    summary: null,
    total: 0, // lines known
    lastComplete: true, // the last known line ended with \n
    final: false,
    pages: new Map(), // page index -> { lines: string[], used: number }
    inflight: new Map(), // page index -> Promise
    failedAt: new Map(), // page index -> time of the last failed fetch
    sections: [], // from the summary, plus those seen live
    sectionByStart: new Map(), // start line -> section
    hidden: [], // [{ a, b, hiddenUpTo }] folded line ranges, sorted, disjoint
    scaled: false,
    spacerHeight: 0,
    target: null, // line highlighted by #L…
    follow: false,
    stream: null,
    streamOffset: 0,
    decoder: null,
    timeMode: "relative",
    timestamps: false,
    startedMs: 0,
    search: null, // { q, total, matches, truncated, index }
    renderQueued: false,
    useClock: 0,
  };

  // ---------------------------------------------------------------- ANSI rendering

  const PALETTE = [
    "#4d4d4d", "#cd3131", "#0dbc79", "#e5e510", "#2472c8", "#bc3fbc", "#11a8cd", "#e5e5e5",
    "#666666", "#f14c4c", "#23d18b", "#f5f543", "#3b8eea", "#d670d6", "#29b8db", "#ffffff",
  ];
  const CUBE = [0, 95, 135, 175, 215, 255];

  function color256(n) {
    if (n < 16) return PALETTE[n];
    if (n < 232) {
      const i = n - 16;
      return `rgb(${CUBE[Math.floor(i / 36)]}, ${CUBE[Math.floor(i / 6) % 6]}, ${CUBE[i % 6]})`;
    }
    const g = 8 + 10 * (n - 232);
    return `rgb(${g}, ${g}, ${g})`;
  }

  const PLAIN = Object.freeze({});

  // Applies one SGR sequence's parameters to a style; styles are immutable, shared by cells.
  function applySgr(style, params) {
    const s = Object.assign({}, style);
    const p = params.length ? params : [0];
    for (let i = 0; i < p.length; i++) {
      const c = p[i];
      if (c === 0 || Number.isNaN(c)) {
        for (const k of Object.keys(s)) delete s[k];
      } else if (c === 1) s.b = true;
      else if (c === 2) s.dim = true;
      else if (c === 3) s.i = true;
      else if (c === 4) s.u = true;
      else if (c === 7) s.inv = true;
      else if (c === 9) s.st = true;
      else if (c === 22) { delete s.b; delete s.dim; }
      else if (c === 23) delete s.i;
      else if (c === 24) delete s.u;
      else if (c === 27) delete s.inv;
      else if (c === 29) delete s.st;
      else if (c >= 30 && c <= 37) s.fg = PALETTE[c - 30];
      else if (c === 39) delete s.fg;
      else if (c >= 40 && c <= 47) s.bg = PALETTE[c - 40];
      else if (c === 49) delete s.bg;
      else if (c >= 90 && c <= 97) s.fg = PALETTE[c - 90 + 8];
      else if (c >= 100 && c <= 107) s.bg = PALETTE[c - 100 + 8];
      else if (c === 38 || c === 48) {
        const key = c === 38 ? "fg" : "bg";
        if (p[i + 1] === 5 && i + 2 < p.length) {
          const n = p[i + 2];
          if (n >= 0 && n <= 255) s[key] = color256(n);
          i += 2;
        } else if (p[i + 1] === 2 && i + 4 < p.length) {
          const [r, g, b] = [p[i + 2], p[i + 3], p[i + 4]].map((v) => Math.max(0, Math.min(255, v || 0)));
          s[key] = `rgb(${r}, ${g}, ${b})`;
          i += 4;
        } else {
          break; // malformed: ignore the rest
        }
      }
      // anything else (blink, fonts, …): dropped
    }
    return Object.keys(s).length ? s : PLAIN;
  }

  const TIMESTAMP = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z) [0-9a-f]{2}([OE])(\+?) /;
  const MARKER = /section_(start|end):(\d+):([A-Za-z0-9_.\-]+)(\[[^\]\r\n]*\])?\r?(?:\x1b\[0?K)?/g;

  // Splits a raw line into its runner timestamp (if any) and its text without section markers.
  // `cont`: the runner's `+` tag, the line continues the one before it (the runner split a
  // long line): it keeps that line's colours and has no time of its own in the gutter.
  function splitLine(raw) {
    let ts = null;
    let stream = null;
    let cont = false;
    let text = raw;
    const m = TIMESTAMP.exec(raw);
    if (m) {
      ts = Date.parse(m[1]);
      stream = m[2];
      cont = m[3] === "+";
      text = raw.slice(m[0].length);
    }
    // Sections this line ends: a line that only ends sections shows that, not an empty row.
    const ended = [];
    if (text.indexOf("section_") !== -1) {
      text = text.replace(MARKER, (_, kind, __, name) => {
        if (kind === "end") ended.push(name);
        return "";
      });
    }
    return { ts, stream, cont, text, ended };
  }

  // The style in effect at the end of `line` (for a continuation line after it); follows a
  // chain of continuations back at most CONT_DEPTH lines, and lines not loaded count as plain.
  const CONT_DEPTH = 16;
  function styleAtEnd(line, depth = 0) {
    const raw = line >= 1 ? lineText(line) : undefined;
    if (raw === undefined) return PLAIN;
    const parts = splitLine(raw);
    const from = parts.cont && depth < CONT_DEPTH ? styleAtEnd(line - 1, depth + 1) : PLAIN;
    return cellsOf(parts.text, from).style;
  }

  // A terminal line's cells: `\r` returns to column 0 and later text overwrites, ESC[K erases,
  // SGR sets the style, every other escape or control character is dropped.
  function cellsOf(text, initial = PLAIN) {
    const chars = [];
    const styles = [];
    let style = initial;
    let cursor = 0;
    const n = Math.min(text.length, MAX_RENDER_CHARS);
    for (let i = 0; i < n; i++) {
      const ch = text[i];
      const code = text.charCodeAt(i);
      if (ch === "\x1b") {
        const next = text[i + 1];
        if (next === "[") {
          let j = i + 2;
          while (j < text.length && /[0-9;:?<=>]/.test(text[j])) j++;
          const final = text[j];
          const body = text.slice(i + 2, j);
          i = j;
          if (final === "m" && /^[0-9;:]*$/.test(body)) {
            style = applySgr(style, body === "" ? [] : body.split(/[;:]/).map((v) => (v === "" ? 0 : Number(v))));
          } else if (final === "K") {
            const mode = body === "" ? 0 : Number(body);
            if (mode === 0) { chars.length = cursor; styles.length = cursor; }
            else if (mode === 1) for (let k = 0; k < Math.min(cursor + 1, chars.length); k++) { chars[k] = " "; styles[k] = PLAIN; }
            else if (mode === 2) { chars.length = 0; styles.length = 0; }
          } else if (final === "G") {
            cursor = Math.max(0, (Number(body) || 1) - 1);
          }
          // other CSI sequences: dropped
        } else if (next === "]") {
          // OSC (titles, hyperlinks): up to BEL or ESC \
          let j = i + 2;
          while (j < text.length && text[j] !== "\x07" && !(text[j] === "\x1b" && text[j + 1] === "\\")) j++;
          i = text[j] === "\x07" ? j : j + 1;
        } else {
          i += 1; // a two-byte escape: dropped
        }
        continue;
      }
      if (ch === "\r") { cursor = 0; continue; }
      if (ch === "\b") { cursor = Math.max(0, cursor - 1); continue; }
      if (code < 32 && ch !== "\t") continue;
      if (code === 0x7f) continue;
      while (chars.length < cursor) { chars.push(" "); styles.push(PLAIN); }
      chars[cursor] = ch;
      styles[cursor] = style;
      cursor++;
    }
    return { chars, styles, style, cut: text.length > n ? text.length - n : 0 };
  }

  // Appends the rendered text to `el`: runs of one style become a span; search hits a <mark>.
  // `leftOut`: bytes of the line the server did not send (it cuts lines at 64 KiB).
  function renderText(el, text, query, initial = PLAIN, leftOut = 0) {
    const { chars, styles, cut } = cellsOf(text, initial);
    const marks = new Uint8Array(chars.length);
    if (query) {
      const hay = chars.join("").toLowerCase();
      let at = hay.indexOf(query);
      while (at !== -1) {
        marks.fill(1, at, at + query.length);
        at = hay.indexOf(query, at + Math.max(1, query.length));
      }
    }
    let i = 0;
    while (i < chars.length) {
      const s = styles[i];
      const mk = marks[i];
      const rep = chars[i] === "\ufffd";
      let j = i + 1;
      while (j < chars.length && styles[j] === s && marks[j] === mk && (chars[j] === "\ufffd") === rep) j++;
      const str = chars.slice(i, j).join("");
      let node;
      if (s === PLAIN && !mk && !rep) {
        node = document.createTextNode(str);
      } else {
        node = document.createElement(mk ? "mark" : "span");
        let fg = s.fg;
        let bg = s.bg;
        if (s.inv) { [fg, bg] = [bg || "var(--log-bg)", fg || "var(--log-fg)"]; }
        if (fg && !mk) node.style.color = fg;
        if (bg && !mk) node.style.backgroundColor = bg;
        const cls = ["b", "i", "u", "dim", "st"].filter((k) => s[k]);
        if (rep) {
          cls.push("replacement");
          node.title = "bytes that are not UTF-8";
        }
        if (cls.length) node.className = cls.join(" ");
        node.textContent = str;
      }
      el.appendChild(node);
      i = j;
    }
    if (cut || leftOut) {
      const note = document.createElement("span");
      note.className = "notice";
      note.textContent = leftOut
        ? ` … about ${(cut + leftOut).toLocaleString()} more characters (see raw)`
        : ` … ${cut.toLocaleString()} more characters (see raw)`;
      el.appendChild(note);
    }
  }

  // ---------------------------------------------------------------- HTTP

  class Unauthorized extends Error {}

  async function getJson(path) {
    const res = await fetch(base + path, { cache: "no-store", credentials: "same-origin" });
    if (res.status === 401) throw new Unauthorized("not signed in");
    if (!res.ok) {
      let message = `${res.status} ${res.statusText}`;
      try { message = (await res.json()).message || message; } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
    return res.json();
  }

  async function openSession(body) {
    const res = await fetch(`${base}/session`, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (res.status === 204 || res.ok) return null;
    let message = res.status === 404 ? "No such job." : "That did not work.";
    try { message = (await res.json()).message || message; } catch (_) { /* not JSON */ }
    return message;
  }

  // ---------------------------------------------------------------- sections and rows

  function addSection(s) {
    state.sections.push(s);
    if (!state.sectionByStart.has(s.start_line)) state.sectionByStart.set(s.start_line, s);
  }

  // The folded line ranges: a collapsed section hides the lines after its header, through its
  // end line (unless another section's header is on that line); an open one to the end.
  function computeHidden() {
    const ranges = [];
    for (const s of state.sections) {
      if (!s.collapsed) continue;
      let b = s.end_line == null ? state.total : s.end_line;
      if (s.end_line != null && state.sectionByStart.has(s.end_line) && s.end_line !== s.start_line) b -= 1;
      const a = s.start_line + 1;
      if (b >= a) ranges.push([a, b]);
    }
    ranges.sort((x, y) => x[0] - y[0]);
    const merged = [];
    for (const [a, b] of ranges) {
      const last = merged[merged.length - 1];
      if (last && a <= last.b + 1) last.b = Math.max(last.b, b);
      else merged.push({ a, b });
    }
    let hidden = 0;
    for (const r of merged) {
      r.visibleBefore = r.a - 1 - hidden;
      hidden += r.b - r.a + 1;
      r.hiddenUpTo = hidden;
    }
    state.hidden = merged;
  }

  function rowCount() {
    const last = state.hidden[state.hidden.length - 1];
    return state.total - (last ? last.hiddenUpTo : 0);
  }

  // row (0-based) -> line (1-based)
  function rowToLine(row) {
    const h = state.hidden;
    let lo = 0;
    let hi = h.length; // count of ranges with visibleBefore <= row
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (h[mid].visibleBefore <= row) lo = mid + 1;
      else hi = mid;
    }
    return row + 1 + (lo ? h[lo - 1].hiddenUpTo : 0);
  }

  // line -> row; a folded line maps to the row of the header above it
  function lineToRow(line) {
    const h = state.hidden;
    let lo = 0;
    let hi = h.length; // ranges starting at or before the line
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (h[mid].a <= line) lo = mid + 1;
      else hi = mid;
    }
    if (lo === 0) return line - 1;
    const r = h[lo - 1];
    if (line <= r.b) return r.visibleBefore - 1;
    return line - 1 - r.hiddenUpTo;
  }

  // Unfolds every collapsed section hiding `line`.
  function unfoldAround(line) {
    let changed = false;
    for (const s of state.sections) {
      const end = s.end_line == null ? Infinity : s.end_line;
      if (s.collapsed && line > s.start_line && line <= end) {
        s.collapsed = false;
        changed = true;
      }
    }
    if (changed) computeHidden();
  }

  function formatDuration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
    return `${Math.floor(s / 3600)}h ${String(Math.floor(s / 60) % 60).padStart(2, "0")}m`;
  }

  // ---------------------------------------------------------------- line pages

  function lineText(line) {
    const p = Math.floor((line - 1) / PAGE);
    const page = state.pages.get(p);
    if (!page) return undefined;
    page.used = ++state.useClock;
    return page.lines[line - 1 - p * PAGE];
  }

  // Bytes of `line` the server left out (a line longer than 64 KiB), 0 if none.
  function lineCut(line) {
    const page = state.pages.get(Math.floor((line - 1) / PAGE));
    return (page && page.cut && page.cut.get(line)) || 0;
  }

  // Notes `n` more characters of `line` left out of the page (the raw view has them).
  function addCut(line, n) {
    const page = state.pages.get(Math.floor((line - 1) / PAGE));
    if (!page || n <= 0) return;
    if (!page.cut) page.cut = new Map();
    page.cut.set(line, (page.cut.get(line) || 0) + n);
  }

  // Live text for `line`, `seg` after what it holds: kept up to MAX_LINE_CHARS, as the server
  // cuts lines, the rest only counted; a line already cut only counts what comes.
  function extendLine(line, before, seg) {
    if (lineCut(line) > 0) return addCut(line, seg.length);
    const keep = Math.max(0, MAX_LINE_CHARS - before.length);
    setLine(line, before + seg.slice(0, keep));
    addCut(line, seg.length - keep);
  }

  function setLine(line, text) {
    const p = Math.floor((line - 1) / PAGE);
    let page = state.pages.get(p);
    const i = line - 1 - p * PAGE;
    if (!page) {
      if (i !== 0) return; // its page was dropped: fetched again when needed
      page = { lines: [], used: ++state.useClock };
      state.pages.set(p, page);
    }
    if (i > page.lines.length) return;
    page.lines[i] = text;
  }

  function storePage(p, data) {
    if (data.first !== p * PAGE + 1 && data.lines.length) return;
    const existing = state.pages.get(p);
    if (existing && existing.lines.length > data.lines.length) return; // the stream is ahead
    // Lines the server cut at 64 KiB: line number -> bytes it left out.
    const cut = new Map((data.cut || []).map((c) => [c.line, c.bytes]));
    state.pages.set(p, { lines: data.lines, cut, used: ++state.useClock });
    if (state.pages.size > MAX_PAGES) evictPages();
  }

  function evictPages() {
    const pinned = state.stream ? Math.floor((state.total - 1) / PAGE) : Infinity;
    const byAge = [...state.pages.entries()].filter(([p]) => p < pinned).sort((x, y) => x[1].used - y[1].used);
    for (const [p] of byAge.slice(0, state.pages.size - MAX_PAGES)) state.pages.delete(p);
  }

  function fetchPage(p) {
    if (state.inflight.has(p)) return state.inflight.get(p);
    const failed = state.failedAt.get(p);
    if (failed && Date.now() - failed < 2000) return Promise.resolve();
    const promise = getJson(`/lines?from=${p * PAGE + 1}&count=${PAGE}`)
      .then((data) => {
        state.failedAt.delete(p);
        storePage(p, data);
        if (!state.stream && data.total_lines > state.total) {
          state.total = data.total_lines;
          computeHidden();
        }
        hideError("lines");
        scheduleRender();
        return data;
      })
      .catch((e) => {
        state.failedAt.set(p, Date.now());
        if (e instanceof Unauthorized) showSignin("Your session ended: sign in again.");
        else showError("lines", `Could not load lines: ${e.message}. Retrying…`);
        setTimeout(scheduleRender, 2100);
      })
      .finally(() => state.inflight.delete(p));
    state.inflight.set(p, promise);
    return promise;
  }

  // ---------------------------------------------------------------- scrolling

  function viewRows() {
    return logBox.clientHeight / state.rowHeight;
  }

  function updateSpacer() {
    const full = (rowCount() + 1) * state.rowHeight;
    state.scaled = full > MAX_SCROLL_PX;
    state.spacerHeight = Math.min(full, MAX_SCROLL_PX);
    spacer.style.height = `${state.spacerHeight}px`;
  }

  // The (fractional) row at the top of the screen.
  function topRow() {
    if (!state.scaled) return logBox.scrollTop / state.rowHeight;
    const maxScroll = state.spacerHeight - logBox.clientHeight;
    const maxTop = rowCount() + 1 - viewRows();
    return maxScroll > 0 ? (logBox.scrollTop / maxScroll) * maxTop : 0;
  }

  function scrollToRow(row) {
    const maxTop = Math.max(0, rowCount() + 1 - viewRows());
    const r = Math.max(0, Math.min(row, maxTop));
    if (!state.scaled) logBox.scrollTop = r * state.rowHeight;
    else {
      const maxScroll = state.spacerHeight - logBox.clientHeight;
      logBox.scrollTop = maxTop > 0 ? (r / maxTop) * maxScroll : 0;
    }
    scheduleRender();
  }

  function atEnd() {
    return logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - state.rowHeight * 1.5;
  }

  function scrollToEnd() {
    logBox.scrollTop = logBox.scrollHeight;
    scheduleRender();
  }

  function goToLine(line, { highlight = true } = {}) {
    const n = Math.max(1, Math.min(line, state.total || 1));
    unfoldAround(n);
    updateSpacer();
    setFollow(false);
    if (highlight) state.target = n;
    scrollToRow(lineToRow(n) - Math.floor(viewRows() / 3));
  }

  // ---------------------------------------------------------------- rendering

  let lastScrollTop = 0;

  function scheduleRender() {
    if (state.renderQueued) return;
    state.renderQueued = true;
    requestAnimationFrame(() => {
      state.renderQueued = false;
      render();
    });
  }

  function timeLabel(ts) {
    if (ts == null || state.timeMode === "off") return "";
    const d = new Date(ts);
    if (state.timeMode === "utc") return d.toISOString().slice(11, 19);
    if (state.timeMode === "local") {
      return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}:${String(d.getSeconds()).padStart(2, "0")}`;
    }
    const s = Math.max(0, Math.floor((ts - state.startedMs) / 1000));
    return `+${Math.floor(s / 3600)}:${String(Math.floor(s / 60) % 60).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
  }

  function buildRow(line, raw) {
    const row = document.createElement("div");
    row.className = "row";
    row.dataset.line = String(line);
    const gutter = document.createElement("span");
    gutter.className = "gutter";
    const fold = document.createElement("span");
    fold.className = "fold";
    const num = document.createElement("a");
    num.className = "num";
    num.href = `#L${line}`;
    num.textContent = String(line);
    gutter.append(fold, num);
    const text = document.createElement("span");
    text.className = "text";
    let ts = null;
    let cont = false;
    if (raw === undefined) {
      row.classList.add("loading");
      text.textContent = "…";
    } else {
      const parts = splitLine(raw);
      ts = parts.ts;
      cont = parts.cont;
      const initial = cont ? styleAtEnd(line - 1) : PLAIN;
      renderText(text, parts.text, state.search ? state.search.q.toLowerCase() : null, initial, lineCut(line));
      if (parts.ended.length && text.textContent === "") {
        const end = document.createElement("span");
        end.className = "section-end";
        end.textContent = `end of ${parts.ended.join(", ")}`;
        text.appendChild(end);
      }
    }
    if (cont) {
      row.classList.add("cont");
      row.title = `continues line ${line - 1}`;
    }
    if (state.timestamps && state.timeMode !== "off") {
      const t = document.createElement("span");
      t.className = "ts";
      t.textContent = cont ? "\u21b3" : timeLabel(ts);
      if (ts != null) t.title = new Date(ts).toISOString();
      gutter.appendChild(t);
    }
    const section = state.sectionByStart.get(line);
    if (section) {
      row.classList.add("section");
      row.dataset.section = section.name;
      fold.textContent = section.collapsed ? "\u25b8" : "\u25be";
      row.setAttribute("aria-expanded", String(!section.collapsed));
      const d = document.createElement("span");
      d.className = "duration";
      if (section.end_ts != null) d.textContent = formatDuration(section.end_ts - section.start_ts);
      else d.textContent = state.final ? "unfinished" : "running";
      if (section.end_ts != null) d.title = `${section.name}: ${section.end_ts - section.start_ts} s`;
      text.appendChild(d);
    }
    if (line === state.target) row.classList.add("target");
    const search = state.search;
    if (search && search.matches[search.index] === line) row.classList.add("current-match");
    row.append(gutter, text);
    return row;
  }

  function render() {
    if (!state.summary) return;
    updateSpacer();
    const n = rowCount();
    const top = topRow();
    const first = Math.max(0, Math.floor(top) - MARGIN);
    const last = Math.min(n - 1, Math.floor(top + viewRows()) + MARGIN);
    const wanted = new Set();
    const frag = document.createDocumentFragment();
    for (let r = first; r <= last; r++) {
      const line = rowToLine(r);
      const raw = lineText(line);
      if (raw === undefined) wanted.add(Math.floor((line - 1) / PAGE));
      const row = buildRow(line, raw);
      row.style.top = `${logBox.scrollTop + (r - top) * state.rowHeight}px`;
      frag.appendChild(row);
    }
    if (n === 0) {
      const empty = document.createElement("div");
      empty.className = "row notice";
      empty.textContent = state.final ? "This log is empty." : "No output yet: new lines appear here as the job writes them.";
      frag.appendChild(empty);
    }
    rowsBox.replaceChildren(frag);
    for (const p of wanted) fetchPage(p);
    // Fetch the pages next to the screen too, so scrolling a little never shows "…".
    if (n > 0) {
      for (const r of [Math.max(0, first - PAGE / 2), Math.min(n - 1, last + PAGE / 2)]) {
        const p = Math.floor((rowToLine(r) - 1) / PAGE);
        if (!state.pages.has(p)) fetchPage(p);
      }
    }
  }

  // ---------------------------------------------------------------- header

  function formatBytes(n) {
    if (n == null) return "?";
    if (n < 1024) return `${n} B`;
    const units = ["KiB", "MiB", "GiB"];
    let v = n / 1024;
    let u = 0;
    while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
    return `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
  }

  function renderHeader() {
    const s = state.summary;
    const job = s.job || {};
    const trace = job.trace || {};
    $("job-title").textContent = `Job #${job.id ?? jobId}`;
    document.title = `Job #${job.id ?? jobId} · ${job.status || ""} · buildlogs`;
    const status = $("status");
    status.textContent = job.status || "unknown";
    status.className = `badge ${job.status || ""}`;
    const facts = [];
    facts.push(["size", formatBytes(trace.size ?? s.bytes)]);
    facts.push(["lines", state.total.toLocaleString()]);
    if (trace.checksum_valid === true) facts.push(["checksum", "ok"]);
    else if (trace.checksum_valid === false) facts.push(["checksum", "mismatch", "warn"]);
    else facts.push(["checksum", state.final ? "not checked" : "pending"]);
    facts.push(["log", trace.state || "?"]);
    if (trace.partial) facts.push(["partial", `${formatBytes(trace.lost_bytes)} lost`, "warn"]);
    if (job.created_at && job.finished_at) {
      facts.push(["took", formatDuration((Date.parse(job.finished_at) - Date.parse(job.created_at)) / 1000)]);
    }
    if (job.failure_reason) facts.push(["reason", job.failure_reason, "warn"]);
    const dl = $("facts");
    dl.replaceChildren(...facts.map(([k, v, cls]) => {
      const div = document.createElement("div");
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      dd.dataset.fact = k;
      if (cls) dd.className = cls;
      div.append(dt, dd);
      return div;
    }));
    $("raw").hidden = false;
    $("download").hidden = false;
    $("raw").href = `${base}/raw`;
    $("download").href = `${base}/raw?download=1`;
    $("download").setAttribute("download", `job-${jobId}.log`);
    const digits = String(Math.max(state.total, 1)).length;
    logBox.style.setProperty("--num-width", `${digits + 1}ch`);
  }

  // ---------------------------------------------------------------- follow (live)

  function setFollow(on) {
    state.follow = on;
    const b = $("follow");
    b.setAttribute("aria-pressed", String(on));
    b.textContent = on ? "following" : "follow";
  }

  function appendText(text) {
    const segs = text.split("\n");
    const touched = [];
    for (let i = 0; i < segs.length; i++) {
      const seg = segs[i];
      const ends = i < segs.length - 1;
      if (state.lastComplete) {
        if (seg === "" && !ends) break;
        state.total += 1;
        extendLine(state.total, "", seg);
      } else {
        extendLine(state.total, lineText(state.total) ?? "", seg);
      }
      touched.push(state.total);
      state.lastComplete = ends;
    }
    let sectionsChanged = false;
    for (const line of touched) {
      const raw = lineText(line);
      if (raw === undefined) continue;
      if (!state.timestamps && TIMESTAMP.test(raw)) {
        state.timestamps = true;
        $("time-control").hidden = false;
      }
      if (raw.indexOf("section_") === -1 || (!state.lastComplete && line === state.total)) continue;
      for (const m of raw.matchAll(MARKER)) {
        const [, kind, ts, name, opts] = m;
        if (kind === "start" && !state.sections.some((s) => s.start_line === line && s.name === name)) {
          const open = state.sections.filter((s) => s.end_line == null);
          addSection({
            name,
            start_line: line,
            end_line: null,
            start_ts: Number(ts),
            end_ts: null,
            collapsed: /collapsed=true/.test(opts || ""),
            depth: open.length,
          });
          sectionsChanged = true;
        } else if (kind === "end") {
          const open = state.sections.filter((s) => s.end_line == null && s.name === name);
          const s = open[open.length - 1];
          if (s) {
            s.end_line = line;
            s.end_ts = Number(ts);
            sectionsChanged = true;
          }
        }
      }
    }
    computeHidden();
    if (sectionsChanged || touched.length) scheduleRender();
  }

  function decodeBase64(data) {
    const bin = atob(data);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes;
  }

  let streamRetry = 0;

  function openStream() {
    if (state.final) return;
    if (!state.decoder) state.decoder = new TextDecoder("utf-8");
    const es = new EventSource(`${base}/stream?offset=${state.streamOffset}`);
    state.stream = es;
    $("follow").hidden = false;
    es.onopen = () => {
      streamRetry = 0;
      hideError("stream");
    };
    es.addEventListener("append", (ev) => {
      const bytes = decodeBase64(ev.data);
      const offset = Number(ev.lastEventId);
      if (Number.isFinite(offset) && offset > 0) {
        if (offset <= state.streamOffset) return; // already seen (a resumed stream's overlap)
        state.streamOffset = offset;
      } else {
        state.streamOffset += bytes.length;
      }
      appendText(state.decoder.decode(bytes, { stream: true }));
      state.summary.bytes = state.streamOffset;
      if (state.follow) {
        updateSpacer();
        scrollToEnd();
      }
      updateLiveFacts();
    });
    es.addEventListener("end", () => {
      es.close();
      state.stream = null;
      state.final = true;
      const rest = state.decoder.decode();
      if (rest) appendText(rest);
      $("follow").hidden = true;
      setFollow(false);
      refreshSummary();
    });
    es.onerror = () => {
      // Resume ourselves at the last offset seen (EventSource would reuse the first URL).
      es.close();
      if (state.stream !== es) return;
      state.stream = null;
      // A stream's lifetime ends it now and then (BUILDLOGS_STREAM_LIFETIME): only say so
      // when reconnecting fails.
      streamRetry = Math.min(streamRetry + 1, 5);
      if (streamRetry > 1) showError("stream", "Live updates interrupted; reconnecting…");
      // At once after a stream that had opened, then backing off to 4 s while it fails.
      setTimeout(() => {
        if (!state.stream && !state.final) openStream();
      }, streamRetry === 1 ? 50 : 1000 * (streamRetry - 1));
    };
  }

  function updateLiveFacts() {
    const lines = document.querySelector('[data-fact="lines"]');
    if (lines) lines.textContent = state.total.toLocaleString();
    const size = document.querySelector('[data-fact="size"]');
    if (size) size.textContent = formatBytes(state.streamOffset);
  }

  async function refreshSummary() {
    // The job's status and the archive come a moment after the last byte: look a few times.
    for (let i = 0; i < 10; i++) {
      try {
        const s = await getJson("/summary");
        state.summary.job = s.job;
        state.summary.bytes = s.bytes;
        renderHeader();
        const t = (s.job && s.job.trace) || {};
        if (t.state === "archived" || t.state === "expired") return;
      } catch (_) {
        return;
      }
      await new Promise((ok) => setTimeout(ok, 1000 * (i + 1)));
    }
  }

  // ---------------------------------------------------------------- search

  async function runSearch(q, from) {
    return getJson(`/search?q=${encodeURIComponent(q)}&from=${from}&limit=1000`);
  }

  function showSearchCount() {
    const s = state.search;
    const el = $("search-count");
    if (!s) { el.textContent = ""; return; }
    if (s.error) el.textContent = s.error;
    else if (!s.total) el.textContent = "no matches";
    else el.textContent = `${(s.index + 1).toLocaleString()} of ${s.total.toLocaleString()}`;
    el.dataset.line = s.total && s.matches.length ? String(s.matches[s.index]) : "";
    $("search-prev").disabled = !s.total;
    $("search-next").disabled = !s.total;
  }

  async function searchStep(direction) {
    const q = $("q").value;
    if (!q) {
      state.search = null;
      showSearchCount();
      scheduleRender();
      return;
    }
    let s = state.search;
    if (!s || s.q !== q) {
      $("search-count").textContent = "searching…";
      try {
        const data = await runSearch(q, 1);
        const top = rowToLine(Math.floor(topRow()));
        let index = data.matches.findIndex((line) => line >= top);
        if (index === -1) index = 0;
        s = { q, total: data.total, matches: data.matches, truncated: data.truncated, index };
        state.search = s;
      } catch (e) {
        if (e instanceof Unauthorized) return showSignin("Your session ended: sign in again.");
        state.search = { q, total: 0, matches: [], truncated: false, index: 0, error: e.message };
        showSearchCount();
        return;
      }
    } else if (s.total) {
      let index = s.index + direction;
      if (index >= s.matches.length && s.truncated) {
        const more = await runSearch(q, s.matches[s.matches.length - 1] + 1);
        s.matches = s.matches.concat(more.matches);
        s.truncated = more.truncated;
      }
      if (index >= s.matches.length) index = 0; // wrap to the first
      if (index < 0) index = s.matches.length - 1; // wrap to the last fetched
      s.index = index;
    }
    showSearchCount();
    if (s.total && s.matches.length) {
      state.target = null;
      goToLine(s.matches[s.index], { highlight: false });
    }
    scheduleRender();
  }

  // ---------------------------------------------------------------- errors and sign-in

  const errors = new Map();

  function showError(key, message) {
    errors.set(key, message);
    const el = $("error");
    el.textContent = [...errors.values()].join(" ");
    el.hidden = false;
  }

  function hideError(key) {
    if (!errors.delete(key)) return;
    const el = $("error");
    el.textContent = [...errors.values()].join(" ");
    el.hidden = errors.size === 0;
  }

  function showSignin(message) {
    if (state.stream) { state.stream.close(); state.stream = null; }
    state.summary = null;
    $("log").hidden = true;
    $("toolbar").hidden = true;
    $("sign-out").hidden = true;
    $("raw").hidden = true;
    $("download").hidden = true;
    $("job-title").textContent = `Job #${jobId}`;
    $("status").textContent = "signed out";
    $("status").className = "badge";
    $("facts").replaceChildren();
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
    $("token").focus();
  }

  // ---------------------------------------------------------------- start

  async function load() {
    let summary;
    try {
      summary = await getJson("/summary");
    } catch (e) {
      if (e instanceof Unauthorized) return showSignin(state.grantError);
      showError("summary", `Could not load this job: ${e.message}`);
      return;
    }
    $("signin").hidden = true;
    $("sign-out").hidden = false;
    state.summary = summary;
    state.total = summary.lines || 0;
    state.sections = [];
    state.sectionByStart = new Map();
    for (const s of summary.sections || []) addSection(Object.assign({}, s));
    state.timestamps = !!summary.timestamps;
    state.startedMs = Date.parse(summary.started_at || (summary.job && summary.job.created_at) || "") || 0;
    $("time-control").hidden = !state.timestamps;
    computeHidden();
    renderHeader();
    $("toolbar").hidden = false;
    logBox.hidden = false;
    measureRowHeight();

    const wanted = /^#L(\d+)$/.exec(location.hash);
    // The last page (and the one before when it is short) before the first render: the page
    // opens at the end with lines on screen.
    const lastPage = Math.max(0, Math.floor((state.total - 1) / PAGE));
    const first = wanted ? Math.floor((Number(wanted[1]) - 1) / PAGE) : lastPage;
    let tail = null;
    try {
      const loads = [getJson(`/lines?from=${lastPage * PAGE + 1}&count=${PAGE}`)];
      if (first !== lastPage) loads.push(fetchPage(first));
      else if (lastPage > 0 && state.total - lastPage * PAGE < viewRows() + 1) loads.push(fetchPage(lastPage - 1));
      [tail] = await Promise.all(loads);
    } catch (e) {
      if (e instanceof Unauthorized) return showSignin();
      showError("lines", `Could not load lines: ${e.message}`);
    }
    if (tail) {
      storePage(lastPage, tail);
      state.total = Math.max(state.total, tail.total_lines);
      state.lastComplete = tail.last_complete !== false;
      state.final = !!tail.final;
      state.streamOffset = tail.end_offset;
      computeHidden();
    }
    updateSpacer();
    if (wanted) {
      goToLine(Number(wanted[1]));
    } else {
      scrollToEnd();
    }
    render();
    if (tail && !state.final) {
      setFollow(!wanted);
      openStream();
    }
  }

  function measureRowHeight() {
    const probe = document.createElement("div");
    probe.className = "row";
    probe.textContent = "0";
    rowsBox.appendChild(probe);
    const h = probe.getBoundingClientRect().height;
    probe.remove();
    if (h > 0) state.rowHeight = h;
  }

  async function start() {
    if (!jobId) {
      showError("path", "This page lives at /jobs/<id>.");
      return;
    }
    const grant = /^#grant=([^&]+)/.exec(location.hash);
    if (grant) {
      // Drop the grant from the address bar and history before anything else.
      history.replaceState(null, "", location.pathname + location.search);
      const message = await openSession({ grant: decodeURIComponent(grant[1]) });
      if (message) {
        // A cookie from before may still open the page.
        state.grantError = `This read link did not work (${message}). Ask for a new one, or sign in.`;
      }
    }
    load();
  }

  // ---------------------------------------------------------------- events

  logBox.addEventListener("scroll", () => {
    const up = logBox.scrollTop < lastScrollTop - 1;
    lastScrollTop = logBox.scrollTop;
    if (state.stream) {
      if (up && state.follow) setFollow(false);
      else if (!state.follow && atEnd() && !up) setFollow(true);
    }
    scheduleRender();
  }, { passive: true });

  // Past the height cap a pixel is more than a row: move by rows instead.
  logBox.addEventListener("wheel", (e) => {
    if (e.deltaY < 0 && state.follow) setFollow(false); // the reader looks back
    if (!state.scaled || Math.abs(e.deltaY) < Math.abs(e.deltaX)) return;
    e.preventDefault();
    const unit = e.deltaMode === 1 ? 1 : e.deltaMode === 2 ? viewRows() : 1 / state.rowHeight;
    scrollToRow(topRow() + e.deltaY * unit);
  }, { passive: false });

  // Keys in the log: Home/End everywhere; past the height cap, page and line keys move by rows.
  logBox.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const page = Math.max(1, Math.floor(viewRows()) - 1);
    const moves = { PageDown: page, PageUp: -page, ArrowDown: 1, ArrowUp: -1, " ": e.shiftKey ? -page : page };
    if (e.key === "Home") {
      e.preventDefault();
      setFollow(false);
      scrollToRow(0);
    } else if (e.key === "End") {
      e.preventDefault();
      scrollToEnd();
      if (state.stream) setFollow(true);
    } else if (e.key in moves) {
      if (moves[e.key] < 0 && state.follow) setFollow(false);
      if (!state.scaled) return;
      e.preventDefault();
      scrollToRow(topRow() + moves[e.key]);
    }
  });

  // "/" anywhere but a text field: search.
  document.addEventListener("keydown", (e) => {
    if (e.key !== "/" || e.target.closest("input, select, textarea") || $("toolbar").hidden) return;
    e.preventDefault();
    $("q").focus();
    $("q").select();
  });

  rowsBox.addEventListener("click", (e) => {
    const row = e.target.closest(".row.section");
    if (!row || e.target.closest("a") || String(getSelection()).length) return;
    const line = Number(row.dataset.line);
    const s = state.sectionByStart.get(line);
    if (!s) return;
    const before = lineToRow(line);
    const offset = before - topRow();
    s.collapsed = !s.collapsed;
    computeHidden();
    updateSpacer();
    scrollToRow(lineToRow(line) - offset); // the header stays where it was
  });

  window.addEventListener("hashchange", () => {
    const m = /^#L(\d+)$/.exec(location.hash);
    if (m && state.summary) goToLine(Number(m[1]));
  });

  window.addEventListener("resize", scheduleRender);

  $("signin").addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    const message = await openSession({ token });
    if (message) {
      $("signin-error").textContent = message;
      return;
    }
    $("signin").hidden = true;
    load();
  });

  $("sign-out").addEventListener("click", async () => {
    await fetch(`${base}/session`, { method: "DELETE", credentials: "same-origin" });
    showSignin("Signed out.");
  });

  $("search").addEventListener("submit", (e) => {
    e.preventDefault();
    searchStep(1);
  });
  $("q").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && e.shiftKey) {
      e.preventDefault();
      searchStep(-1);
    } else if (e.key === "Escape") {
      $("q").value = "";
      state.search = null;
      showSearchCount();
      scheduleRender();
    }
  });
  $("search-next").addEventListener("click", () => searchStep(1));
  $("search-prev").addEventListener("click", () => searchStep(-1));

  $("time-mode").addEventListener("change", (e) => {
    state.timeMode = e.target.value;
    scheduleRender();
  });

  $("follow").addEventListener("click", () => {
    setFollow(!state.follow);
    if (state.follow) scrollToEnd();
  });
  $("to-top").addEventListener("click", () => {
    setFollow(false);
    scrollToRow(0);
  });
  $("to-end").addEventListener("click", () => {
    scrollToEnd();
    if (state.stream) setFollow(true);
  });
  $("job-title").addEventListener("click", (e) => {
    e.preventDefault();
    scrollToRow(0);
  });

  start();
})();
