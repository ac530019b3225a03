// aivcs-ledgerd console: plain DOM, no framework, no network but this origin.
// Every value from the ledger is untrusted: it is written with textContent
// (el() below makes text nodes), never parsed as HTML.
"use strict";

const EVENTS_PAGE = 200;
const RUNS_PAGE = 50;
const PREVIEW_CHARS = 160;
const PAYLOAD_SHOWN_CHARS = 4000;
const TOKEN_KEY = "aivcs-ledgerd-token";
const STATUSES = ["RUN_STATUS_RUNNING", "RUN_STATUS_COMPLETED", "RUN_STATUS_FAILED", "RUN_STATUS_CANCELLED"];

let viewGeneration = 0; // bumped on each navigation; stale async work checks it and stops
let liveFeed = null; // AbortController of the open run page's live feed
let pendingNotice = ""; // shown by the next page (after a promote or rollback)

// ---- DOM helpers -----------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "value") node.value = value;
    else if (key === "checked") node.checked = Boolean(value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(...nodes) {
  const view = document.getElementById("view");
  view.replaceChildren(...nodes);
}

function alertBox(message, kind) {
  const box = document.getElementById("alert");
  if (!message) { box.hidden = true; box.textContent = ""; return; }
  box.className = kind === "info" ? "info" : "";
  box.textContent = message;
  box.hidden = false;
}

function statusName(value) {
  return String(value || "").replace("RUN_STATUS_", "");
}

function statusBadge(value) {
  const name = statusName(value);
  return el("span", { class: "status " + name }, name || "UNSPECIFIED");
}

function when(value) {
  return value ? String(value).replace("T", " ").replace("Z", " UTC") : "";
}

function short(digest) {
  const text = String(digest || "");
  return text.length > 16 ? text.slice(0, 12) + "…" : text;
}

function runLink(runId) {
  return el("a", { href: "#/runs/" + encodeURIComponent(runId), class: "mono" }, runId);
}

function agentLink(name, extra) {
  return el("a", { href: "#/agents/" + encodeURIComponent(name) + (extra || "") }, name);
}

// ---- API -------------------------------------------------------------------

class ApiError extends Error {
  constructor(httpStatus, body) {
    super((body && body.message) || "HTTP " + httpStatus);
    this.httpStatus = httpStatus;
    this.status = (body && body.status) || "";
  }
  toString() { return this.httpStatus + " " + this.status + ": " + this.message; }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function headers(extra) {
  const result = Object.assign({ Accept: "application/json" }, extra || {});
  const current = token();
  if (current) result.Authorization = "Bearer " + current;
  return result;
}

async function api(path, options) {
  const init = Object.assign({ headers: headers() }, options || {});
  if (init.body !== undefined) {
    init.method = init.method || "POST";
    init.headers = headers({ "Content-Type": "application/json" });
    init.body = JSON.stringify(init.body);
  }
  const response = await fetch(path, init);
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const error = new ApiError(response.status, body);
    if (response.status === 401) askToken(error.message);
    throw error;
  }
  return body;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (Array.isArray(value)) value.forEach((item) => search.append(key, item));
    else if (value !== undefined && value !== null && value !== "") search.set(key, value);
  }
  const text = search.toString();
  return text ? "?" + text : "";
}

// ---- token prompt ----------------------------------------------------------

function askToken(reason) {
  const panel = document.getElementById("token-panel");
  panel.hidden = false;
  document.getElementById("token-button").hidden = false;
  if (reason) alertBox(reason);
  document.getElementById("token-input").focus();
}

function setUpToken() {
  const form = document.getElementById("token-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("token-input");
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    input.value = "";
    document.getElementById("token-panel").hidden = true;
    alertBox("");
    route();
  });
  document.getElementById("token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    document.getElementById("token-input").value = "";
  });
  document.getElementById("token-button").addEventListener("click", () => askToken(""));
  if (token()) document.getElementById("token-button").hidden = false;
}

// ---- router ----------------------------------------------------------------

function parseHash() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search] = hash.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(search || "") };
}

function go(path, params) {
  const text = params ? new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "" && v != null)).toString() : "";
  location.hash = "#" + path + (text ? "?" + text : "");
}

function route() {
  viewGeneration += 1;
  if (liveFeed) { liveFeed.abort(); liveFeed = null; }
  alertBox(pendingNotice, "info");
  pendingNotice = "";
  const { parts, params } = parseHash();
  const generation = viewGeneration;
  let page;
  if (parts.length === 0 || (parts[0] === "runs" && parts.length === 1)) page = runsPage(params, generation);
  else if (parts[0] === "runs") page = runPage(parts.slice(1).join("/"), params, generation);
  else if (parts[0] === "agents" && parts.length >= 2) page = agentPage(parts.slice(1).join("/"), params, generation);
  else page = Promise.resolve(show(el("p", {}, "No such page. "), el("a", { href: "#/" }, "Runs")));
  page.catch((error) => {
    if (generation !== viewGeneration) return;
    alertBox(String(error));
  });
}

// ---- runs list -------------------------------------------------------------

const RUN_FILTERS = [
  ["agent_name", "Agent"], ["spec_digest", "Spec digest"], ["git_sha", "Git SHA"],
];

function toRfc3339(local) {
  if (!local) return "";
  const date = new Date(local);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

function toLocalInput(rfc) {
  if (!rfc) return "";
  const date = new Date(rfc);
  if (Number.isNaN(date.getTime())) return "";
  const offset = date.getTimezoneOffset() * 60000;
  return new Date(date.getTime() - offset).toISOString().slice(0, 16);
}

async function runsPage(params, generation) {
  const filters = {};
  for (const [name] of RUN_FILTERS) filters[name] = params.get(name) || "";
  filters.status = params.get("status") || "";
  filters.created_after = params.get("created_after") || "";
  filters.created_before = params.get("created_before") || "";
  const pageToken = params.get("page_token") || "";
  const trail = (params.get("trail") || "").split(",").filter(Boolean); // earlier pages' tokens ("-" = first)

  const form = el("form", { class: "filters", id: "run-filters" },
    RUN_FILTERS.map(([name, label]) => el("label", {}, label, el("input", { name, value: filters[name], size: name === "agent_name" ? 16 : 24 }))),
    el("label", {}, "Status", el("select", { name: "status" },
      el("option", { value: "" }, "any"),
      STATUSES.map((status) => {
        const option = el("option", { value: status }, statusName(status));
        if (status === filters.status) option.selected = true;
        return option;
      }))),
    el("label", {}, "Created after", el("input", { name: "created_after", type: "datetime-local", value: toLocalInput(filters.created_after) })),
    el("label", {}, "Created before", el("input", { name: "created_before", type: "datetime-local", value: toLocalInput(filters.created_before) })),
    el("button", { type: "submit", class: "primary" }, "Apply"),
    el("button", { type: "button", onclick: () => go("/runs") }, "Clear"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const next = {};
    for (const [name] of RUN_FILTERS) next[name] = String(data.get(name) || "").trim();
    next.status = data.get("status") || "";
    next.created_after = toRfc3339(data.get("created_after"));
    next.created_before = toRfc3339(data.get("created_before"));
    go("/runs", next);
  });
  const body = el("tbody", {}, el("tr", {}, el("td", { colspan: 7, class: "muted" }, "Loading…")));
  const pager = el("div", { class: "pager" });
  show(el("h1", {}, "Runs"), form,
    el("table", { id: "runs" }, el("thead", {}, el("tr", {},
      ["Created", "Run", "Agent", "Status", "Events", "Spec", "Git SHA"].map((name) => el("th", {}, name)))), body),
    pager);

  const answer = await api("/v1/runs" + query(Object.assign({}, filters, { page_size: RUNS_PAGE, page_token: pageToken })));
  if (generation !== viewGeneration) return;
  const runs = answer.runs || [];
  body.replaceChildren(...(runs.length ? runs.map((run) => el("tr", { "data-run-id": run.runId },
    el("td", {}, when(run.createdAt)),
    el("td", {}, runLink(run.runId)),
    el("td", {}, agentLink(run.agentName)),
    el("td", {}, statusBadge(run.status)),
    el("td", {}, run.totalEvents),
    el("td", { class: "mono", title: run.specDigest }, short(run.specDigest)),
    el("td", { class: "mono" }, run.gitSha || ""))) : [el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No runs match."))]));
  const base = Object.assign({}, filters);
  if (trail.length) {
    pager.append(el("button", { type: "button", onclick: () => go("/runs", base) }, "First page"));
    pager.append(el("button", { type: "button", onclick: () => {
      const previous = trail.slice(0, -1);
      const back = trail[trail.length - 1];
      go("/runs", Object.assign({}, base, { page_token: back === "-" ? "" : back, trail: previous.join(",") }));
    } }, "Previous"));
  }
  pager.append(el("span", { class: "muted" }, "Page " + (trail.length + 1) + " · newest first"));
  if (answer.nextPageToken) {
    pager.append(el("button", { type: "button", id: "runs-next", onclick: () => {
      go("/runs", Object.assign({}, base, { page_token: answer.nextPageToken, trail: trail.concat([pageToken || "-"]).join(",") }));
    } }, "Next"));
  }
}

// ---- run page --------------------------------------------------------------

function metaList(run) {
  const rows = [
    ["Run", run.runId], ["Agent", agentLink(run.agentName)], ["Status", statusBadge(run.status)],
    ["Spec digest", el("span", { class: "mono" }, run.specDigest)], ["Git SHA", run.gitSha || "—"],
    ["Created", when(run.createdAt)], ["Completed", when(run.completedAt) || "—"],
    ["Events", el("span", { id: "total-events" }, run.totalEvents)], ["Duration", run.durationMs + " ms"],
    ["Success", String(run.success)], ["Reason", run.statusReason || "—"],
    ["Events digest", el("span", { class: "mono" }, run.eventsDigest || "—")],
    ["Final state digest", el("span", { class: "mono" }, run.finalStateDigest || "—")],
    ["Evaluation", JSON.stringify(run.evaluation || {})], ["Tags", JSON.stringify(run.tags || {})],
  ];
  return el("dl", { class: "meta", id: "run-meta" }, rows.map(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]));
}

function payloadText(payload) {
  return JSON.stringify(payload === undefined ? {} : payload, null, 2);
}

function eventItem(event, fresh) {
  const compact = JSON.stringify(event.payload === undefined ? {} : event.payload);
  const details = el("details", {},
    el("summary", { class: "event-head" },
      el("span", { class: "mono" }, "#" + event.seq),
      el("span", {}, when(event.timestamp)),
      el("span", { class: "mono kind" }, event.kind),
      el("span", { class: "preview mono" }, compact.length > PREVIEW_CHARS ? compact.slice(0, PREVIEW_CHARS) + "…" : compact)));
  // Pretty-printed only when opened: a page of events renders without formatting every payload.
  details.addEventListener("toggle", () => {
    if (!details.open || details.dataset.rendered) return;
    details.dataset.rendered = "1";
    const full = payloadText(event.payload);
    const pre = el("pre", { class: "payload" }, full.length > PAYLOAD_SHOWN_CHARS ? full.slice(0, PAYLOAD_SHOWN_CHARS) : full);
    details.append(pre);
    if (full.length > PAYLOAD_SHOWN_CHARS) {
      const more = el("button", { type: "button", class: "expand" }, "Show all (" + full.length + " characters)");
      more.addEventListener("click", () => { pre.textContent = full; more.remove(); });
      details.append(more);
    }
    details.append(el("div", { class: "muted mono" }, "digest " + event.digest));
  });
  return el("li", { class: fresh ? "fresh" : "", "data-seq": event.seq }, details);
}

async function runPage(runId, params, generation) {
  const kinds = (params.get("kinds") || "").split(",").map((k) => k.trim()).filter(Boolean);
  const from = Math.max(1, parseInt(params.get("from") || "1", 10) || 1);
  // The run and its page of events are asked for together: one round trip of waiting, not two.
  const eventsPath = "/v1/runs/" + encodeURIComponent(runId) + "/events" + query({ from_seq: from, limit: EVENTS_PAGE, kinds });
  const pageAnswer = api(eventsPath);
  pageAnswer.catch(() => {}); // a refusal is reported through the run's own answer, or below
  const answer = await api("/v1/runs/" + encodeURIComponent(runId));
  if (generation !== viewGeneration) return;
  let run = answer.run;
  let total = Number(run.totalEvents);

  const meta = el("div", {}, metaList(run));
  const verdict = el("span", { id: "verdict", class: "verdict" });
  const verify = el("button", { type: "button", id: "verify" }, "Verify chain");
  verify.addEventListener("click", async () => {
    verify.disabled = true;
    verdict.className = "verdict";
    verdict.textContent = "verifying…";
    try {
      const result = await api("/v1/runs/" + encodeURIComponent(runId) + ":verify");
      verdict.className = "verdict " + (result.ok ? "ok" : "bad");
      verdict.textContent = result.ok
        ? "OK: " + result.verifiedEvents + " events verified, digest " + short(result.eventsDigest)
        : "BROKEN at seq " + result.firstBrokenSeq + ": " + result.reason + " (" + result.verifiedEvents + " verified)";
    } catch (error) {
      verdict.className = "verdict bad";
      verdict.textContent = String(error);
    } finally {
      verify.disabled = false;
    }
  });
  const kindsInput = el("input", { id: "kinds", value: kinds.join(","), placeholder: "kind, kind", size: 24 });
  const seqInput = el("input", { id: "from-seq", type: "number", min: 1, value: from, size: 8 });
  const filter = el("form", { class: "toolbar" },
    el("label", {}, "Kinds", kindsInput), el("label", {}, "From seq", seqInput),
    el("button", { type: "submit" }, "Show"));
  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    go("/runs/" + encodeURIComponent(runId), { kinds: kindsInput.value.split(",").map((k) => k.trim()).filter(Boolean).join(","), from: seqInput.value || "1" });
  });
  const live = el("span", { id: "live", class: "live" });
  const list = el("ol", { class: "timeline", id: "events" });
  const pagerTop = el("div", { class: "pager" });
  const pagerBottom = el("div", { class: "pager" });
  show(el("h1", {}, "Run ", run.runId), meta,
    el("div", { class: "toolbar" }, verify, verdict,
      el("a", { href: "#/agents/" + encodeURIComponent(run.agentName) + "?spec=" + encodeURIComponent(run.specDigest) }, "Releases of " + run.agentName)),
    el("h2", {}, "Events ", live), filter, pagerTop, list, pagerBottom);

  const page = await pageAnswer;
  if (generation !== viewGeneration) return;
  const events = page.events || [];
  list.replaceChildren(...events.map((event) => eventItem(event, false)));
  if (!events.length) list.append(el("li", { class: "muted empty" }, total ? "No events in this range." : "No events yet."));
  let lastShown = events.length ? Number(events[events.length - 1].seq) : from - 1;
  const full = events.length === EVENTS_PAGE;

  function pagers() {
    for (const pager of [pagerTop, pagerBottom]) {
      const target = (seq) => () => go("/runs/" + encodeURIComponent(runId), { kinds: kinds.join(","), from: seq });
      pager.replaceChildren(
        el("button", { type: "button", disabled: from <= 1, onclick: target(1) }, "First"),
        el("button", { type: "button", disabled: from <= 1, onclick: target(Math.max(1, from - EVENTS_PAGE)) }, "Previous"),
        el("span", { class: "muted" }, events.length ? "seq " + events[0].seq + "–" + lastShown + " of " + total : "of " + total),
        el("button", { type: "button", class: "next", disabled: !full, onclick: target(lastShown + 1) }, "Next"),
        el("button", { type: "button", disabled: kinds.length > 0 || total <= from + EVENTS_PAGE - 1, onclick: target(Math.max(1, total - EVENTS_PAGE + 1)) }, "Last"));
    }
  }
  pagers();

  if (statusName(run.status) !== "RUNNING") return;
  // Follow live: events after the run's head when loaded. Rows are added while this page shows the tail.
  const atTail = !full || lastShown >= total;
  const controller = new AbortController();
  liveFeed = controller;
  live.textContent = "● live";
  const onEvents = (batch) => {
    for (const event of batch.events || []) {
      const seq = Number(event.seq);
      if (seq <= total) continue;
      total = seq;
      if (atTail && (!kinds.length || kinds.includes(event.kind))) {
        const empty = list.querySelector(".empty");
        if (empty) empty.remove();
        list.append(eventItem(event, true));
        lastShown = seq;
      }
    }
    const counter = document.getElementById("total-events");
    if (counter) counter.textContent = String(total);
    pagers();
  };
  const onEnd = (final) => {
    run = final.run;
    meta.replaceChildren(metaList(run));
    live.textContent = "";
    liveFeed = null;
  };
  follow(runId, () => total + 1, onEvents, onEnd, controller.signal).catch((error) => {
    if (controller.signal.aborted || generation !== viewGeneration) return;
    live.textContent = "";
    alertBox("live feed: " + String(error));
  });
}

// Server-Sent Events over fetch, so the bearer token can go in a header (EventSource cannot send one).
async function follow(runId, nextSeq, onEvents, onEnd, signal) {
  while (!signal.aborted) {
    let ended = false;
    try {
      const response = await fetch("/v1/runs/" + encodeURIComponent(runId) + "/events:subscribe" + query({ from_seq: nextSeq() }),
        { headers: headers({ Accept: "text/event-stream" }), signal });
      if (!response.ok) {
        let body = null;
        try { body = await response.json(); } catch (_) { body = null; }
        throw new ApiError(response.status, body);
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let name = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
          }
          if (!data.length) continue;
          const parsed = JSON.parse(data.join("\n"));
          if (name === "events") onEvents(parsed);
          else if (name === "end") { ended = true; onEnd(parsed); return; }
          else if (name === "error") throw new ApiError(HTTP_OF[parsed.status] || 500, parsed);
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.httpStatus !== 503) throw error;
    }
    if (ended) return;
    await new Promise((resolve) => setTimeout(resolve, 1000)); // dropped or daemon restarting: resume
  }
}

const HTTP_OF = { UNAVAILABLE: 503, NOT_FOUND: 404, UNAUTHENTICATED: 401, PERMISSION_DENIED: 403, INVALID_ARGUMENT: 400 };

// ---- agent releases --------------------------------------------------------

async function agentPage(agent, params, generation) {
  const pageToken = params.get("page_token") || "";
  const path = "/v1/agents/" + encodeURIComponent(agent) + "/releases";
  const history = await api(path + query({ page_size: 50, page_token: pageToken }));
  // Every promote and rollback appends an entry, so the newest entry is the current release.
  let current = (history.releases || [])[0] || null;
  if (pageToken) current = (await api(path + ":current")).release;
  if (generation !== viewGeneration) return;

  const currentBox = current
    ? el("dl", { class: "meta", id: "current-release" },
        el("dt", {}, "Spec digest"), el("dd", { class: "mono" }, current.specDigest),
        el("dt", {}, "Version"), el("dd", {}, current.versionLabel || "—"),
        el("dt", {}, "Promoted by"), el("dd", {}, current.promotedBy),
        el("dt", {}, "At"), el("dd", {}, when(current.createdAt)),
        el("dt", {}, "Sequence"), el("dd", {}, current.sequence))
    : el("p", { class: "muted", id: "current-release" }, "No release yet.");
  const releases = history.releases || [];
  const table = el("table", { id: "history" },
    el("thead", {}, el("tr", {}, ["#", "Spec digest", "Version", "Promoted by", "Notes", "At", "Rollback of"].map((name) => el("th", {}, name)))),
    el("tbody", {}, releases.length ? releases.map((release) => el("tr", { "data-sequence": release.sequence },
      el("td", {}, release.sequence), el("td", { class: "mono" }, release.specDigest),
      el("td", {}, release.versionLabel || ""), el("td", {}, release.promotedBy), el("td", {}, release.notes || ""),
      el("td", {}, when(release.createdAt)), el("td", {}, release.rollbackOf || ""))) :
      el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No releases."))));

  const expected = current ? current.specDigest : "";
  const writeDone = (what) => (answer) => {
    pendingNotice = what + ": release " + answer.release.sequence + " (" + short(answer.release.specDigest) + ")";
    const target = "#/agents/" + encodeURIComponent(agent);
    if (location.hash === target) route();
    else location.hash = target;
  };
  const promote = el("form", { id: "promote-form" }, el("h2", {}, "Promote"),
    el("label", {}, "Spec digest", el("input", { name: "spec_digest", required: true, value: params.get("spec") || "", class: "mono", size: 66 })),
    el("label", {}, "Version label", el("input", { name: "version_label" })),
    el("label", {}, "Promoted by", el("input", { name: "promoted_by", required: true })),
    el("label", {}, "Notes", el("textarea", { name: "notes", rows: 2 })),
    el("label", { class: "inline" }, el("input", { type: "checkbox", name: "require_successful_run" }), "require a successful run of this spec"),
    el("button", { type: "submit", class: "primary" }, "Promote"));
  promote.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(promote);
    const body = {
      spec_digest: String(data.get("spec_digest")).trim(), promoted_by: String(data.get("promoted_by")).trim(),
      expected_current_spec_digest: expected, require_successful_run: data.get("require_successful_run") === "on",
    };
    if (String(data.get("version_label")).trim()) body.version_label = String(data.get("version_label")).trim();
    if (String(data.get("notes")).trim()) body.notes = String(data.get("notes"));
    api(path + ":promote", { body }).then(writeDone("Promoted"), (error) => alertBox(String(error)));
  });
  const rollback = el("form", { id: "rollback-form" }, el("h2", {}, "Roll back"),
    el("label", {}, "To spec digest (empty: the release before the current one)", el("input", { name: "to_spec_digest", class: "mono", size: 66 })),
    el("label", {}, "Rolled back by", el("input", { name: "promoted_by", required: true })),
    el("label", {}, "Notes", el("textarea", { name: "notes", rows: 2 })),
    el("button", { type: "submit", class: "primary", disabled: !current }, "Roll back"));
  rollback.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(rollback);
    const body = { promoted_by: String(data.get("promoted_by")).trim(), expected_current_spec_digest: expected };
    if (String(data.get("to_spec_digest")).trim()) body.to_spec_digest = String(data.get("to_spec_digest")).trim();
    if (String(data.get("notes")).trim()) body.notes = String(data.get("notes"));
    api(path + ":rollback", { body }).then(writeDone("Rolled back"), (error) => alertBox(String(error)));
  });
  const pager = el("div", { class: "pager" });
  if (pageToken) pager.append(el("button", { type: "button", onclick: () => go("/agents/" + encodeURIComponent(agent), {}) }, "Newest"));
  if (history.nextPageToken) {
    pager.append(el("button", { type: "button", onclick: () => go("/agents/" + encodeURIComponent(agent), { page_token: history.nextPageToken }) }, "Older"));
  }
  show(el("h1", {}, "Agent ", agent),
    el("p", {}, el("a", { href: "#/runs?agent_name=" + encodeURIComponent(agent) }, "Runs of " + agent)),
    el("h2", {}, "Current release"), currentBox,
    el("h2", {}, "Release history (newest first)"), table, pager,
    el("div", { class: "forms" }, promote, rollback));
}

// ---- start -----------------------------------------------------------------

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => { setUpToken(); route(); });
