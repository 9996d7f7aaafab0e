// shunter dashboard: plain JavaScript, no build step, no dependencies.
//
// Everything shown comes from the HTTP API (/v1/...). Live changes arrive on
// /v1/events, read with fetch() rather than EventSource so that the token can
// travel as an Authorization header; the running step's log is read from
// /v1/builds/{id}/logs?follow=true the same way. The token pasted into the top
// bar is kept in sessionStorage (this browser tab only).
"use strict";

(() => {
  const TOKEN_KEY = "shunter.token";
  const FINAL_BUILD = new Set(["SUCCEED", "FAILED", "CANCELED", "QUEUE_TIMEOUT"]);
  const FAILING = new Set(["FAILED", "CANCELED", "QUEUE_TIMEOUT", "HEARTBEAT_TIMEOUT", "EXEC_TIMEOUT"]);
  const NOT_ENDED = new Set(["QUEUE", "RUNNING", "DEPENDENT_WAITING"]);
  const STEP_ICON = { SUCCEED: "✓", RUNNING: "●", FAILED: "✕", EXEC_TIMEOUT: "⏱", QUEUE: "○", CANCELED: "⊘",
                      SKIP: "↷", UNEXEC: "–" };
  const MAX_LOG_LINES = 20000;
  const BUILDS_SHOWN = 200;

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    route: { name: "builds" },
    builds: new Map(),        // id -> build (list view), patched by events
    pipelines: [],
    lastEventId: null,
    events: null,             // AbortController of the events stream
    log: null,                // the followed log: {key, controller, auto}
    open: new Set(),          // <details> kept open across re-renders
    timers: new Map(),
    filters: { pipeline: "", status: "" },
  };

  // -- small helpers ------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else if (name === "class") el.className = value;
      else if (value === true) el.setAttribute(name, "");
      else el.setAttribute(name, String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const $ = (selector) => document.querySelector(selector);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function badge(status, extra) {
    return h("span", { class: `badge s-${status}`, "data-status": status, ...(extra || {}) }, status || "—");
  }

  function buildLink(id) {
    return h("a", { href: `#/builds/${encodeURIComponent(id)}`, class: "mono" }, id);
  }

  function parseTime(text) {
    if (!text) return null;
    const ms = Date.parse(text);
    return Number.isNaN(ms) ? null : ms;
  }

  function span(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return `${seconds}s`;
    const m = Math.floor(seconds / 60), s = seconds % 60;
    if (m < 60) return `${m}m ${String(s).padStart(2, "0")}s`;
    const hours = Math.floor(m / 60);
    return `${hours}h ${String(m % 60).padStart(2, "0")}m`;
  }

  function ago(text) {
    const ms = parseTime(text);
    return h("span", { class: "ago", "data-time": text || "", title: text || "" }, ms === null ? "—" : agoText(ms));
  }
  function agoText(ms) {
    const seconds = (Date.now() - ms) / 1000;
    return seconds < 2 ? "just now" : `${span(seconds)} ago`;
  }

  function deadline(text, testid) {
    const ms = parseTime(text);
    const clock = ms === null ? "—" : new Date(ms).toLocaleTimeString();
    return h("span", { class: "deadline", "data-deadline": text || "", "data-testid": testid, title: text || "" },
      clock, " ", h("span", { class: "muted countdown" }, ms === null ? "" : `(${countdownText(ms)})`));
  }
  function countdownText(ms) {
    const seconds = (ms - Date.now()) / 1000;
    return seconds >= 0 ? `in ${span(seconds)}` : `${span(-seconds)} late`;
  }

  function duration(started, finished) {
    const a = parseTime(started);
    if (a === null) return h("span", { class: "muted" }, "—");
    const b = parseTime(finished);
    return h("span", { class: "dur", "data-started": started, "data-finished": finished || "" },
      span(((b === null ? Date.now() : b) - a) / 1000));
  }

  function tick() {
    for (const el of document.querySelectorAll(".ago[data-time]")) {
      const ms = parseTime(el.dataset.time);
      if (ms !== null) el.textContent = agoText(ms);
    }
    for (const el of document.querySelectorAll(".deadline[data-deadline] .countdown")) {
      const ms = parseTime(el.parentElement.dataset.deadline);
      if (ms !== null) el.textContent = `(${countdownText(ms)})`;
    }
    for (const el of document.querySelectorAll(".dur[data-started]")) {
      if (el.dataset.finished) continue;
      const ms = parseTime(el.dataset.started);
      if (ms !== null) el.textContent = span((Date.now() - ms) / 1000);
    }
  }

  function toast(message, bad) {
    const el = h("div", { class: `toast${bad ? " bad" : ""}`, role: "status" }, message);
    $("#toasts").append(el);
    setTimeout(() => el.remove(), bad ? 8000 : 4000);
  }

  // Run fn once, delay ms after the last call with this key (events come in bursts).
  function soon(key, fn, delay = 120) {
    clearTimeout(state.timers.get(key));
    state.timers.set(key, setTimeout(() => { state.timers.delete(key); fn(); }, delay));
  }

  // -- the API ----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      const message = body && typeof body === "object" && body.message ? body.message : `HTTP ${status}`;
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  function headers(extra) {
    const result = { accept: "application/json", ...(extra || {}) };
    if (state.token) result.authorization = `Bearer ${state.token}`;
    return result;
  }

  async function api(method, path, body) {
    const init = { method, headers: headers(), cache: "no-store" };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let data = text;
    try { data = text ? JSON.parse(text) : null; } catch (_) { /* plain text */ }
    if (response.status === 401 || response.status === 403) needToken(response.status);
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  function listOf(data) {
    // A list answer, or a page of one ({"items": [...]}) should the API paginate.
    if (Array.isArray(data)) return data;
    if (data && Array.isArray(data.items)) return data.items;
    return [];
  }

  function needToken(status) {
    $("#token-form").classList.add("needed");
    setConn("token", status === 401 ? "token needed" : "token lacks the role");
  }

  function setConn(kind, text) {
    $("#conn").dataset.state = kind;
    $("#conn-text").textContent = text;
  }

  // -- live events ---------------------------------------------------------------------

  async function streamEvents() {
    let backoff = 500;
    for (;;) {
      const controller = new AbortController();
      state.events = controller;
      try {
        const extra = { accept: "text/event-stream" };
        if (state.lastEventId !== null) extra["last-event-id"] = String(state.lastEventId);
        const response = await fetch("v1/events", { headers: headers(extra), signal: controller.signal,
                                                     cache: "no-store" });
        if (response.status === 401 || response.status === 403) {
          needToken(response.status);
          await response.body.cancel();
          await waitForAbort(controller.signal);   // a new token restarts the stream
          continue;
        }
        if (!response.ok) throw new Error(`events: HTTP ${response.status}`);
        setConn("live", "live");
        backoff = 500;
        refresh();   // catch up with what changed while not connected
        await readEvents(response.body, onEvent);
      } catch (error) {
        if (error && error.name === "AbortError" && controller.signal.aborted) continue;
      }
      if (controller.signal.aborted) continue;
      setConn("reconnecting", "reconnecting");
      await Promise.race([sleep(backoff), waitForAbort(controller.signal)]);
      backoff = Math.min(backoff * 2, 5000);
    }
  }

  function waitForAbort(signal) {
    return new Promise((resolve) => {
      if (signal.aborted) resolve();
      else signal.addEventListener("abort", resolve, { once: true });
    });
  }

  async function readEvents(body, handle) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let id = null, data = null;
        for (const line of block.split("\n")) {
          if (line.startsWith("id:")) id = Number(line.slice(3).trim());
          else if (line.startsWith("data:")) data = line.slice(5).trim();
        }
        if (id !== null && !Number.isNaN(id)) state.lastEventId = id;
        if (data) {
          try { handle(JSON.parse(data)); } catch (error) { /* a bad event must not stop the stream */ }
        }
      }
    }
  }

  function onEvent(event) {
    const route = state.route;
    if (event.kind === "build" && event.build_id) {
      const known = state.builds.get(event.build_id);
      if (known) {
        state.builds.set(event.build_id, { ...known, status: event.status, reason: event.reason });
        if (route.name === "builds") patchBuildRow(event.build_id);
      }
      if (route.name === "builds") soon("view", refresh, 250);
    }
    if (route.name === "build" && event.build_id === route.id) soon("view", refresh, 80);
    if (route.name === "queue" && ["build", "job", "group"].includes(event.kind)) soon("view", refresh, 200);
    if (route.name === "nodes" && ["node", "job"].includes(event.kind)) soon("view", refresh, 200);
    if (route.name === "pipelines" && event.kind === "build") soon("view", refreshPipelineCounts, 400);
    soon("stats", loadStats, 300);
  }

  // -- stats strip ----------------------------------------------------------------------

  async function loadStats() {
    let stats;
    try { stats = await api("GET", "v1/stats"); } catch (_) { return; }
    const cell = (n, label, kind) => h("div", { class: `stat ${kind || ""}`, "data-stat": label },
      h("div", { class: "n" }, n), h("div", { class: "l" }, label));
    $("#stats").replaceChildren(
      cell(stats.builds_running, "builds running", "run"),
      cell(stats.builds_queued, "builds queued", "wait"),
      cell(stats.builds_finished, "builds finished"),
      cell(stats.jobs_running, "jobs running", "run"),
      cell(stats.jobs_queued, "jobs waiting", "wait"),
      cell(stats.slots_held, "slots held"),
      cell(`${stats.agents_busy}/${stats.agents}`, "agents busy"),
      cell(stats.agents_locked, "agents locked"),
      cell(stats.agents_lost, "agents lost"),
    );
  }

  // -- routing --------------------------------------------------------------------------

  function parseRoute() {
    const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
    if (parts[0] === "builds" && parts[1]) return { name: "build", id: parts[1] };
    if (["pipelines", "queue", "nodes"].includes(parts[0])) return { name: parts[0] };
    return { name: "builds" };
  }

  function onRoute() {
    const route = parseRoute();
    const changed = JSON.stringify(route) !== JSON.stringify(state.route);
    state.route = route;
    for (const tab of document.querySelectorAll(".tabs a")) {
      const name = route.name === "build" ? "builds" : route.name;
      tab.classList.toggle("active", tab.dataset.tab === name);
    }
    if (changed) {
      stopLog();
      $("#view").replaceChildren(h("p", { class: "muted" }, "Loading…"));
    }
    refresh();
  }

  let refreshing = null;
  async function refresh() {
    if (refreshing) { refreshing.again = true; return; }
    refreshing = { again: false };
    try {
      const views = { builds: viewBuilds, build: viewBuild, pipelines: viewPipelines, queue: viewQueue, nodes: viewNodes };
      await views[state.route.name](state.route);
    } catch (error) {
      if (!(error instanceof ApiError && (error.status === 401 || error.status === 403))) {
        $("#view").replaceChildren(h("div", { class: "panel" }, h("div", { class: "empty" },
          `Could not load this page: ${error.message}`)));
      }
    } finally {
      const again = refreshing.again;
      refreshing = null;
      if (again) refresh();
    }
  }

  // -- builds list ----------------------------------------------------------------------------

  async function viewBuilds() {
    const [builds, pipelines] = await Promise.all([api("GET", "v1/builds"), api("GET", "v1/pipelines")]);
    state.pipelines = listOf(pipelines);
    state.builds = new Map(listOf(builds).map((b) => [b.id, b]));
    if (state.route.name !== "builds") return;
    const { pipeline, status } = state.filters;
    const shown = [...state.builds.values()]
      .filter((b) => (!pipeline || b.pipeline_id === pipeline) && (!status || b.status === status))
      .sort(newestFirst).slice(0, BUILDS_SHOWN);
    const filter = (name, options) => h("select", { "aria-label": name, onchange: (e) => {
      state.filters[name] = e.target.value; refresh(); } },
      h("option", { value: "" }, name === "pipeline" ? "all pipelines" : "any status"),
      options.map((o) => h("option", { value: o, selected: state.filters[name] === o }, o)));
    const table = shown.length === 0
      ? h("div", { class: "empty" }, state.builds.size ? "No build matches." :
          h("span", {}, "No builds yet. ", h("a", { href: "#/pipelines" }, "Run a pipeline"), "."))
      : h("table", { id: "builds" },
          h("thead", {}, h("tr", {}, ["Build", "Status", "Pipeline", "Run", "Queued", "Duration", "Reason"]
            .map((t) => h("th", {}, t)))),
          h("tbody", {}, shown.map(buildRow)));
    $("#view").replaceChildren(h("section", { class: "panel" },
      h("header", {}, h("h2", {}, "Builds"), h("span", { class: "muted small" },
        state.builds.size > shown.length ? `newest ${shown.length} of ${state.builds.size}` : `${shown.length}`),
        h("div", { class: "spacer" }),
        h("div", { class: "filters" }, filter("pipeline", state.pipelines.map((p) => p.id)),
          filter("status", ["QUEUE", "RUNNING", "SUCCEED", "FAILED", "CANCELED", "QUEUE_TIMEOUT"]))),
      table));
  }

  function newestFirst(a, b) {
    return (parseTime(b.queued_at) || 0) - (parseTime(a.queued_at) || 0) || b.number - a.number;
  }

  function buildRow(b) {
    const where = b.status === "QUEUE" && b.queue_position
      ? h("span", { class: "chip warn" }, `#${b.queue_position} in ${b.group}`) : null;
    return h("tr", { "data-build-id": b.id },
      h("td", {}, buildLink(b.id)),
      h("td", { class: "status" }, badge(b.status), " ", where),
      h("td", {}, b.pipeline_id),
      h("td", { class: "num" }, b.execute_count > 1 ? `#${b.execute_count}` : "1"),
      h("td", { class: "num" }, ago(b.queued_at)),
      h("td", { class: "num" }, duration(b.started_at, b.finished_at)),
      h("td", { class: "reason" }, b.reason || ""));
  }

  function patchBuildRow(id) {
    const row = document.querySelector(`#builds tr[data-build-id="${CSS.escape(id)}"]`);
    const build = state.builds.get(id);
    if (row && build) row.replaceWith(buildRow(build));
  }

  // -- pipelines ----------------------------------------------------------------------------

  async function viewPipelines() {
    if (document.querySelector("form.submit")) return refreshPipelineCounts();  // keep what is being typed
    state.pipelines = listOf(await api("GET", "v1/pipelines"));
    if (state.route.name !== "pipelines") return;
    if (document.querySelector("form.submit")) return refreshPipelineCounts();  // opened meanwhile
    if (state.pipelines.length === 0) {
      $("#view").replaceChildren(h("section", { class: "panel" }, h("header", {}, h("h2", {}, "Pipelines")),
        h("div", { class: "empty" }, "No pipelines registered. Register one with ",
          h("code", {}, "shunter apply pipeline.yml"), " or PUT /v1/pipelines/{id}.")));
      return;
    }
    $("#view").replaceChildren(h("div", { class: "grid", id: "pipelines" }, state.pipelines.map(pipelineCard)));
  }

  async function refreshPipelineCounts() {
    let pipelines;
    try { pipelines = listOf(await api("GET", "v1/pipelines")); } catch (_) { return; }
    for (const p of pipelines) {
      const el = document.querySelector(`[data-pipeline="${CSS.escape(p.id)}"] .count`);
      if (el) el.textContent = `${p.builds} build${p.builds === 1 ? "" : "s"}`;
    }
  }

  function pipelineCard(p) {
    const body = h("div", { class: "body" });
    const run = h("button", { class: "btn primary small", "data-action": "run", onclick: () => {
      if (!body.querySelector("form.submit")) body.prepend(submitForm(p));
    } }, "▶ Run");
    body.append(...[
      h("div", { class: "row small" }, h("span", { class: "muted" }, "stages"),
        p.stages.length ? p.stages.map((s) => h("span", { class: "chip" }, s)) : h("span", { class: "muted" }, "—")),
      h("div", { class: "row small" }, h("span", { class: "muted" }, "jobs"), p.jobs.map((j) => h("span", { class: "chip" }, j))),
      p.group ? h("div", { class: "row small" }, h("span", { class: "muted" }, "group"), h("code", {}, p.group)) : null,
      detailsKept(`source:${p.id}`, h("summary", { class: "small muted" }, "YAML"), h("pre", { class: "log" }, p.source)),
    ].filter(Boolean));
    return h("section", { class: "panel", "data-pipeline": p.id },
      h("header", {}, h("h2", {}, p.name), h("code", { class: "muted" }, p.id), h("div", { class: "spacer" }),
        h("a", { class: "count small", href: "#/" , onclick: () => { state.filters.pipeline = p.id; } },
          `${p.builds} build${p.builds === 1 ? "" : "s"}`), run),
      body);
  }

  function submitForm(p) {
    const rows = h("div", { class: "vars" });
    const addRow = (name, value) => {
      const remove = h("button", { type: "button", class: "btn small ghost", title: "remove" }, "✕");
      const key = h("input", { type: "text", placeholder: "NAME", value: name, "aria-label": "variable name" });
      const val = h("input", { type: "text", placeholder: "value", value, "aria-label": `value of ${name || "variable"}`,
                               "data-var": name });
      remove.addEventListener("click", () => { key.remove(); val.remove(); remove.remove(); });
      rows.append(key, val, remove);
    };
    for (const [name, value] of Object.entries(p.variables || {})) addRow(name, value);
    const form = h("form", { class: "submit", "data-testid": "submit-form" },
      h("h3", {}, "Run ", p.name), h("p", { class: "muted small" },
        Object.keys(p.variables || {}).length ? "Variables (declared ones are prefilled with their defaults):"
          : "This pipeline declares no variables."),
      rows,
      h("div", { class: "row" },
        h("button", { type: "button", class: "btn small ghost", onclick: () => addRow("", "") }, "+ variable"),
        h("button", { type: "submit", class: "btn primary", "data-action": "submit" }, "Submit build"),
        h("button", { type: "button", class: "btn", onclick: () => form.remove() }, "Close")));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const variables = {};
      const inputs = [...rows.querySelectorAll("input")];
      for (let i = 0; i + 1 < inputs.length; i += 2) {
        const name = inputs[i].value.trim();
        if (name) variables[name] = inputs[i + 1].value;
      }
      try {
        const build = await api("POST", `v1/pipelines/${encodeURIComponent(p.id)}/builds`, { variables });
        toast(`Build ${build.id} submitted (${build.status})`);
        location.hash = `#/builds/${encodeURIComponent(build.id)}`;
      } catch (error) {
        toast(`Submit refused: ${error.message}`, true);
      }
    });
    return form;
  }

  function detailsKept(key, summary, ...content) {
    const el = h("details", { open: state.open.has(key), class: key.split(":")[0] }, summary, ...content);
    el.addEventListener("toggle", () => { if (el.open) state.open.add(key); else state.open.delete(key); });
    return el;
  }

  // -- one build --------------------------------------------------------------------------------

  async function viewBuild(route) {
    const id = route.id;
    const [build, waiting, groups] = await Promise.all([
      api("GET", `v1/builds/${encodeURIComponent(id)}`),
      api("GET", `v1/jobs/waiting?build=${encodeURIComponent(id)}`).catch(() => []),
      api("GET", "v1/groups").catch(() => []),
    ]);
    if (state.route.name !== "build" || state.route.id !== id) return;
    let entry = null;
    for (const group of listOf(groups)) {
      for (const item of group.queue) if (item.build_id === id) entry = { ...item, group: group.name };
    }
    const waits = new Map(listOf(waiting).map((w) => [w.job_id, w]));
    let page = $("#build-page");
    if (!page || page.dataset.build !== id) {
      page = h("div", { id: "build-page", "data-build": id },
        h("section", { class: "panel", id: "build-summary" }),
        h("section", { class: "panel", id: "build-stages" }),
        logPanel());
      $("#view").replaceChildren(page);
    }
    $("#build-summary").replaceChildren(...buildSummary(build, entry));
    $("#build-stages").replaceChildren(
      h("header", {}, h("h2", {}, "Stages"), h("span", { class: "muted small" }, "click a step to see its log")),
      h("div", { class: "stages" }, build.stages.map((stage) => stageColumn(build, stage, waits))));
    followFromBuild(build);
  }

  function buildSummary(b, entry) {
    const finished = FINAL_BUILD.has(b.status);
    const act = (label, body, cls, enabled, name) => h("button", { class: `btn ${cls || ""}`, disabled: !enabled,
      "data-action": name, onclick: () => retryOrCancel(b.id, body) }, label);
    const meta = [
      ["pipeline", b.pipeline_id], ["number", b.number], ["run", b.execute_count],
      ["group", b.group || "—"], ["queued", ago(b.queued_at)], ["started", ago(b.started_at)],
      ["duration", duration(b.started_at, b.finished_at)],
    ];
    const parts = [h("div", { class: "build-head" },
      h("div", { class: "main" },
        h("div", { class: "title" }, h("h1", {}, b.id), badge(b.status, { id: "build-status" })),
        h("div", { class: "meta" }, meta.map(([k, v]) => h("div", { "data-meta": k }, h("span", {}, k), " ",
          h("span", {}, v)))),
        Object.keys(b.variables || {}).length ? h("div", { class: "row small vars-line" },
          h("span", { class: "muted" }, "variables"),
          Object.entries(b.variables).map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`))) : null),
      h("div", { class: "actions" },
        act("↻ Retry", {}, "", finished, "retry"),
        act("↻ Retry failed", { failed_only: true }, "", finished && b.status !== "SUCCEED", "retry-failed"),
        act("■ Cancel", null, "danger", !finished, "cancel")))];
    if (b.status === "QUEUE" && (entry || b.queue_position)) {
      const position = entry ? entry.position : b.queue_position;
      parts.push(h("div", { class: "queue-note", id: "queue-note" },
        "Queued in group ", h("code", {}, b.group), " at position ",
        h("strong", { id: "queue-position" }, position),
        entry ? [", deadline ", deadline(entry.deadline, "queue-deadline")] : null,
        entry && entry.waiting_for && entry.waiting_for.length
          ? [", waiting for ", entry.waiting_for.map((w, i) => [i ? ", " : "", buildLink(w)])] : null, "."));
    }
    if (b.reason) parts.push(h("div", { class: `reason-line${b.status === "SUCCEED" ? "" : " bad"}` }, b.reason));
    return parts;
  }

  async function retryOrCancel(id, body, what) {
    const cancel = body === null;
    try {
      const build = await api("POST", `v1/builds/${encodeURIComponent(id)}/${cancel ? "cancel" : "retry"}`,
        cancel ? {} : body);
      toast(cancel ? `Cancelling ${id}` : `Retrying ${what || id}: ${build.status}`);
      soon("view", refresh, 50);
    } catch (error) {
      toast(`${cancel ? "Cancel" : "Retry"} refused: ${error.message}`, true);
    }
  }

  function stageColumn(b, stage, waits) {
    return h("div", { class: "stage", "data-stage": stage.name },
      h("div", { class: "stage-head" }, h("span", {}, stage.name), badge(stage.status)),
      stage.jobs.map((job) => jobCard(b, job, waits.get(job.id))));
  }

  function jobCard(b, job, wait) {
    const where = job.agent ? `on ${job.agent}` : job.node ? `on ${job.node}` : null;
    // A finished build retries any job (a new run); a running one only a job that failed.
    const retryable = FINAL_BUILD.has(b.status) || FAILING.has(job.status);
    const card = h("div", { class: "job", "data-job": job.id, "data-status": job.status },
      h("div", { class: "job-head" }, h("span", { class: "name" }, job.name || job.id), badge(job.status),
        h("span", { class: "spacer" }),
        h("button", { class: "btn small", title: `retry job ${job.id}`, disabled: !retryable, "data-action": "retry-job",
                      onclick: () => retryOrCancel(b.id, { job: job.id }, `job ${job.id}`) }, "↻ job")),
      where ? h("div", { class: "where" }, where, job.attempts.length > 1 ? ` · attempt ${job.attempts.length}` : "") : null);
    if (wait) {
      card.append(h("div", { class: `why${wait.blocked_by === "no-node" ? " bad" : ""}`, "data-testid": "job-waiting" },
        h("strong", {}, `#${wait.position} waiting`), wait.blocked_by ? [" (", wait.blocked_by, ")"] : "", ": ",
        wait.reason, " · deadline ", deadline(wait.deadline)));
    } else if (job.reason && job.status !== "SUCCEED") {
      card.append(h("div", { class: `why${FAILING.has(job.status) ? " bad" : ""}` }, job.reason));
    }
    card.append(h("ul", { class: "steps" }, job.steps.map((step) => stepRow(b, job, step))));
    if (job.attempts.length) {
      const head = (...titles) => h("thead", {}, h("tr", {}, titles.map((t) => h("th", {}, t))));
      const jobRows = job.attempts.map((a) => h("tr", {},
        h("td", {}, a.number, a.retry_of ? h("span", { class: "muted", title: "retries attempt" }, ` ←${a.retry_of}`) : ""),
        h("td", {}, badge(a.status)), h("td", { class: "mono" }, a.agent || "—"),
        h("td", { class: "num" }, duration(a.started_at, a.finished_at)),
        h("td", { class: "reason" }, a.reason || "")));
      const stepRows = job.steps.flatMap((step) => step.attempts.map((a) => h("tr", {},
        h("td", { class: "mono" }, step.id, h("span", { class: "muted" }, ` #${a.number}`),
          a.retry_of ? h("span", { class: "muted", title: "retries attempt" }, ` ←${a.retry_of}`) : ""),
        h("td", {}, badge(a.status)), h("td", { class: "num" }, a.exit_code === null || a.exit_code === undefined
          ? "—" : `exit ${a.exit_code}`),
        h("td", { class: "num" }, duration(a.started_at, a.finished_at)),
        h("td", { class: "reason" }, a.reason || ""))));
      card.append(detailsKept(`attempts:${b.id}:${job.id}`, h("summary", {}, `attempts (${job.attempts.length})`),
        h("table", { class: "job-attempts" }, head("#", "status", "agent", "took", "reason"), h("tbody", {}, jobRows)),
        stepRows.length ? h("table", { class: "step-attempts" }, head("step", "status", "exit", "took", "reason"),
          h("tbody", {}, stepRows)) : null));
    }
    return card;
  }

  function stepRow(b, job, step) {
    const last = step.attempts[step.attempts.length - 1];
    const key = `${job.id}\u0000${step.id}`;
    const selected = state.log && state.log.key === key;
    // Only a step that failed or never ran can be retried (the server says so too).
    const failing = ["FAILED", "EXEC_TIMEOUT", "CANCELED", "UNEXEC"].includes(step.status) && job.status !== "RUNNING";
    const row = h("li", { class: `step${selected ? " selected" : ""}`, "data-step": step.id, "data-status": step.status,
                          onclick: () => selectLog(b.id, job.id, step.id, false) },
      h("span", { class: `icon s-${step.status}`, title: step.status }, STEP_ICON[step.status] || "·"),
      h("span", { class: "label", title: step.name }, step.name || step.id),
      step.attempts.length > 1 ? h("span", { class: "chip" }, `×${step.attempts.length}`) : null,
      last ? h("span", { class: "dur" }, duration(last.started_at, last.finished_at)) : null,
      h("button", { class: "btn small ghost retry", title: `retry step ${step.id}`, disabled: !failing,
                    "data-action": "retry-step", onclick: (e) => {
                      e.stopPropagation(); retryOrCancel(b.id, { job: job.id, step: step.id }, `step ${step.id}`);
                    } }, "↻"));
    if (step.reason && step.status !== "SUCCEED") {
      return [row, h("li", { class: "step-reason" }, step.reason)];
    }
    return row;
  }

  // -- the followed log ---------------------------------------------------------------------------

  function logPanel() {
    return h("section", { class: "panel log-panel", id: "log-panel" },
      h("header", {}, h("span", { class: "title", id: "log-title" }, "Log"),
        h("span", { class: "follow", id: "log-state" }, ""), h("div", { class: "spacer" }),
        h("label", { class: "small muted" }, h("input", { type: "checkbox", id: "log-auto", checked: true,
          onchange: (e) => { if (e.target.checked && state.log) state.log.auto = true; soon("view", refresh, 10); } }),
          " follow the running step")),
      h("pre", { class: "log", id: "log" }, h("span", { class: "muted" }, "No step selected.")));
  }

  function followFromBuild(build) {
    // Pick the step to show: the user's choice, else the running step (or the last one that ran).
    if (state.log && !state.log.auto) return;
    if (!$("#log-auto") || !$("#log-auto").checked) return;
    let pick = null, lastRun = null;
    for (const stage of build.stages) {
      for (const job of stage.jobs) {
        for (const step of job.steps) {
          if (step.status === "RUNNING" && !pick) pick = [job.id, step.id];
          if (step.attempts.length) lastRun = [job.id, step.id];
        }
      }
    }
    pick = pick || lastRun;
    if (!pick) return;
    const key = `${pick[0]}\u0000${pick[1]}`;
    if (state.log && state.log.key === key && state.log.build === build.id) {
      // Same step: follow again only if its stream ended while it still runs (a retry started it anew).
      if (!state.log.ended || !NOT_ENDED.has(stepStatus(build, pick[0], pick[1]))) return;
    }
    selectLog(build.id, pick[0], pick[1], true);
  }

  function stepStatus(build, jobId, stepId) {
    for (const stage of build.stages) for (const job of stage.jobs) {
      if (job.id === jobId) for (const step of job.steps) if (step.id === stepId) return step.status;
    }
    return null;
  }

  function stopLog() {
    if (state.log && state.log.controller) state.log.controller.abort();
    state.log = null;
  }

  async function selectLog(buildId, jobId, stepId, auto) {
    stopLog();
    if (!auto && $("#log-auto")) $("#log-auto").checked = false;
    const controller = new AbortController();
    const log = { key: `${jobId}\u0000${stepId}`, build: buildId, controller, auto, ended: false };
    state.log = log;
    for (const el of document.querySelectorAll(".step.selected")) el.classList.remove("selected");
    const row = document.querySelector(`.job[data-job="${CSS.escape(jobId)}"] .step[data-step="${CSS.escape(stepId)}"]`);
    if (row) row.classList.add("selected");
    const pre = $("#log");
    pre.replaceChildren();
    pre.dataset.job = jobId;
    pre.dataset.step = stepId;
    $("#log-title").textContent = `Log · ${jobId} / ${stepId}`;
    const status = $("#log-state");
    status.dataset.live = "yes";
    status.textContent = "following";
    const url = `v1/builds/${encodeURIComponent(buildId)}/logs?job=${encodeURIComponent(jobId)}` +
                `&step=${encodeURIComponent(stepId)}&follow=true`;
    try {
      const response = await fetch(url, { headers: headers({ accept: "text/plain" }), signal: controller.signal,
                                          cache: "no-store" });
      if (!response.ok) {
        const text = await response.text();
        let message = text;
        try { message = JSON.parse(text).message; } catch (_) { /* plain */ }
        throw new Error(message);
      }
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let partial = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const text = partial + value;
        const cut = text.lastIndexOf("\n");
        partial = cut < 0 ? text : text.slice(cut + 1);
        if (cut >= 0) appendLog(pre, text.slice(0, cut + 1));
      }
      if (partial) appendLog(pre, partial);
      if (state.log === log) {
        log.ended = true;
        status.dataset.live = "no";
        status.textContent = "ended";
        if (!pre.childNodes.length) pre.append(h("span", { class: "muted" }, "(no output)"));
      }
    } catch (error) {
      if (controller.signal.aborted) return;
      if (state.log === log) {
        log.ended = true;
        status.dataset.live = "no";
        status.textContent = `not following: ${error.message}`;
      }
    }
  }

  function appendLog(pre, text) {
    const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 24;
    const fragment = document.createDocumentFragment();
    let plain = "";
    for (const line of text.split(/(?<=\n)/)) {
      if (line.startsWith("=== ")) {
        if (plain) { fragment.append(plain); plain = ""; }
        const ended = / ended: (\S+) ===/.exec(line);
        const cls = ended ? `end${FAILING.has(ended[1]) ? " bad" : ""}` : "hdr";
        fragment.append(h("span", { class: cls }, line));
      } else {
        plain += line;
      }
    }
    if (plain) fragment.append(plain);
    pre.append(fragment);
    while (pre.childNodes.length > MAX_LOG_LINES) pre.firstChild.remove();
    if (stick) pre.scrollTop = pre.scrollHeight;
  }

  // -- queue: groups and waiting jobs ---------------------------------------------------------------

  async function viewQueue() {
    const [groups, waiting] = await Promise.all([api("GET", "v1/groups"), api("GET", "v1/jobs/waiting")]);
    if (state.route.name !== "queue") return;
    const groupList = listOf(groups).sort((a, b) => a.name.localeCompare(b.name));
    const jobs = listOf(waiting);
    const groupPanels = groupList.length === 0
      ? [h("section", { class: "panel" }, h("header", {}, h("h2", {}, "Concurrency groups")),
          h("div", { class: "empty" }, "No group in use."))]
      : groupList.map(groupPanel);
    const head = ["Build", "Job", "Pool", "Position", "Blocked by", "Reason", "Waiting", "Deadline"];
    const rows = jobs.map((w) => h("tr", { "data-build-id": w.build_id, "data-job": w.job_id },
      h("td", {}, buildLink(w.build_id)),
      h("td", { class: "mono" }, w.job_id, w.attempt > 1 ? h("span", { class: "muted" }, ` #${w.attempt}`) : ""),
      h("td", {}, w.pool || "—"),
      h("td", { class: "num" }, w.position || "—"),
      h("td", {}, w.blocked_by
        ? h("span", { class: `chip ${w.blocked_by === "no-node" ? "bad" : "warn"}` }, w.blocked_by) : "—"),
      h("td", { class: "reason" }, w.reason),
      h("td", { class: "num" }, ago(w.since)),
      h("td", { class: "num" }, deadline(w.deadline))));
    const table = jobs.length === 0 ? h("div", { class: "empty" }, "No job is waiting.")
      : h("table", {}, h("thead", {}, h("tr", {}, head.map((t) => h("th", {}, t)))), h("tbody", {}, rows));
    $("#view").replaceChildren(
      h("div", { id: "groups" }, groupPanels),
      h("section", { class: "panel", id: "waiting-jobs" },
        h("header", {}, h("h2", {}, "Jobs waiting"),
          h("span", { class: "muted small" }, "for a slot, an agent or a mutex")),
        table));
  }

  function groupPanel(g) {
    const limits = [`max-parallel ${g.max_parallel}`, `queue ${g.queue.length}/${g.queue_length}`,
                    `timeout ${g.queue_timeout_minutes}m`, `on full: ${g.on_queue_full}`,
                    g.cancel_in_progress ? "cancel-in-progress" : null].filter(Boolean);
    const head = ["Position", "Build", "Pipeline", "Queued", "Deadline", "Waits for"];
    const rows = g.queue.map((q) => h("tr", { "data-build-id": q.build_id },
      h("td", { class: "num" }, h("strong", {}, q.position)),
      h("td", {}, buildLink(q.build_id)),
      h("td", {}, q.pipeline_id || "—"),
      h("td", { class: "num" }, ago(q.queued_at)),
      h("td", { class: "num" }, deadline(q.deadline)),
      h("td", {}, (q.waiting_for || []).length
        ? q.waiting_for.map((w, i) => [i ? ", " : "", buildLink(w)]) : h("span", { class: "muted" }, "a free slot"))));
    const queue = g.queue.length === 0 ? h("div", { class: "empty" }, "Queue empty.")
      : h("table", {}, h("thead", {}, h("tr", {}, head.map((t) => h("th", {}, t)))), h("tbody", {}, rows));
    const running = g.running.length ? g.running.map((id) => buildLink(id)) : h("span", { class: "muted" }, "none");
    return h("section", { class: "panel", "data-group": g.name },
      h("header", {}, h("h2", {}, "Group ", h("code", {}, g.name)), limits.map((l) => h("span", { class: "chip" }, l))),
      h("div", { class: "body" }, h("div", { class: "row" }, h("span", { class: "muted" }, "running:"), running)),
      queue);
  }

  // -- nodes ---------------------------------------------------------------------------------------

  async function viewNodes() {
    const nodes = listOf(await api("GET", "v1/nodes"));
    if (state.route.name !== "nodes") return;
    if (nodes.length === 0) {
      $("#view").replaceChildren(h("section", { class: "panel" }, h("header", {}, h("h2", {}, "Nodes")),
        h("div", { class: "empty" }, "No build node.")));
      return;
    }
    $("#view").replaceChildren(h("div", { id: "nodes" }, nodes.map(nodePanel)));
  }

  function nodePanel(n) {
    const kind = n.kind || "local";
    const connected = n.connected === undefined ? true : n.connected;
    const seen = n.last_seen || n.last_heartbeat || null;
    const busy = n.agents.filter((a) => a.status !== "idle").length;
    const locked = n.agents.filter((a) => a.locked_by).length;
    return h("section", { class: "panel", "data-node": n.name },
      h("header", {}, h("h2", { class: "mono" }, n.name), h("span", { class: "chip" }, kind),
        h("span", { class: `chip ${connected ? "ok" : "bad"}` }, connected ? "connected" : "disconnected"),
        n.draining ? h("span", { class: "chip warn" }, "draining") : null,
        n.agents_wanted !== null && n.agents_wanted !== undefined && n.agents_wanted !== n.agents.length
          ? h("span", { class: "chip warn" }, `resizing to ${n.agents_wanted}`) : null,
        h("span", { class: "muted small" }, `pool ${n.pool}`),
        n.labels.length ? n.labels.map((l) => h("span", { class: "chip" }, l)) : null,
        h("div", { class: "spacer" }),
        h("span", { class: "small muted" }, `${busy}/${n.agents.length} busy · ${locked} locked · last heartbeat `,
          seen ? ago(seen) : (kind === "local" ? "in process" : "—"))),
      h("div", { class: "body" }, h("div", { class: "agents" }, n.agents.map((a) => {
        const build = a.job ? a.job.split("/")[0] : null;
        return h("div", { class: `agent${a.status !== "idle" ? " busy" : ""}${a.locked_by ? " locked" : ""}`,
                          "data-agent": a.name },
          h("div", { class: "row" }, h("span", { class: "an" }, a.name),
            h("span", { class: `badge${a.status === "idle" ? "" : " s-RUNNING"}` }, a.status)),
          h("div", { class: "small muted" }, a.job ? ["runs ", build ? buildLink(build) : "", " ", a.job.slice(
            (build || "").length)] : "idle"),
          a.locked_by ? h("div", { class: "small" }, "locked by ", buildLink(a.locked_by)) : null);
      }))),
      Object.keys(n.running || {}).length ? h("div", { class: "body small muted" }, "running here: ",
        Object.entries(n.running).map(([k, v]) => h("span", { class: "chip" }, `${k} ×${v}`))) : null);
  }

  // -- start ----------------------------------------------------------------------------------------

  function start() {
    const input = $("#token");
    input.value = state.token;
    $("#token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      state.token = input.value.trim();
      if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
      else sessionStorage.removeItem(TOKEN_KEY);
      $("#token-form").classList.remove("needed");
      toast(state.token ? "Token set for this browser tab" : "Token cleared");
      if (state.events) state.events.abort();
      loadStats();
      refresh();
    });
    $("#token-clear").addEventListener("click", () => { input.value = ""; $("#token-form").requestSubmit(); });
    window.addEventListener("hashchange", onRoute);
    setInterval(tick, 1000);
    setInterval(() => { if (document.visibilityState === "visible") { loadStats(); refresh(); } }, 5000);
    onRoute();
    loadStats();
    streamEvents();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
