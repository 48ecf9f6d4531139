// The admin page: plain JavaScript, no build step. It signs in by exchanging a token for a session cookie,
// calls the admin API with that cookie (writes add the session's CSRF token), and follows the event stream.
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const enc = encodeURIComponent;
const REASONS = {400: "Bad request", 401: "Not signed in", 403: "Not allowed", 404: "Not found", 409: "Conflict",
  412: "Changed meanwhile", 413: "Too large", 422: "Refused", 500: "Server error", 503: "Unavailable"};
const SIDE_EFFECTS = "steps with side effects";
const state = {session: null, events: [], source: null, editor: null, timer: null, refresh: null, dirty: false};

// ------------------------------------------------------------------ calling the API

class ApiError extends Error {
  constructor(status, data) {
    const reason = REASONS[status] || `HTTP ${status}`;
    const line = data && data.line ? ` (line ${data.line})` : "";
    super(`${status} ${reason}: ${(data && data.error) || "no details"}${line}`);
    this.status = status;
    this.data = data || {};
  }
}

async function api(method, path, body, headers = {}) {
  const sent = {...headers};
  if (body !== undefined) sent["Content-Type"] = "application/json";
  if (method !== "GET" && state.session && state.session.csrf) sent["X-CSRF-Token"] = state.session.csrf;
  let response;
  try {
    response = await fetch(path, {method, headers: sent, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body)});
  } catch (err) {
    throw new ApiError(0, {error: "cannot reach the server; check that it is running"});
  }
  const text = await response.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch (err) { data = {error: text.slice(0, 300)}; } }
  if (response.status === 401 && path !== "/api/session") signedOut(`Signed out: ${(data && data.error) || "the session ended"}`);
  if (!response.ok) throw new ApiError(response.status, data);
  return {data, headers: response.headers};
}

function say(text, kind = "ok") {
  const box = $("#message");
  box.textContent = text;
  box.className = text ? kind : "";
}

const isAdmin = () => !!state.session && state.session.roles.includes("admin");

// ------------------------------------------------------------------ signing in and out

async function signIn(event) {
  event.preventDefault();
  try {
    const {data} = await api("POST", "/api/session", {token: $("#token").value.trim()});
    $("#token").value = "";
    started(data);
  } catch (err) { say(err.message, "bad"); }
}

function started(session) {
  state.session = session;
  $("#nav").hidden = false;
  $("#signout").hidden = false;
  showWho();
  clearInterval(state.timer);
  state.timer = setInterval(showWho, 15000);
  listen();
  say("");
  if (!location.hash || location.hash === "#/") location.hash = "#/components"; else render();
}

function showWho() {
  const s = state.session;
  if (!s) return;
  const left = s.expires_at ? Math.round(s.expires_at - Date.now() / 1000) : null;
  if (left !== null && left <= 0) { signedOut("Your session expired: sign in again with a token."); return; }
  const until = s.expires_at ? new Date(s.expires_at * 1000).toLocaleTimeString() : "?";
  $("#who").textContent = `${s.subject} (${s.roles.join(", ")}) · session ends ${until}` +
    (left !== null ? ` (in ${Math.max(1, Math.round(left / 60))} min)` : "");
}

function signedOut(message) {
  state.session = null;
  clearInterval(state.timer);
  if (state.source) { state.source.close(); state.source = null; }
  live(false);
  $("#nav").hidden = true;
  $("#signout").hidden = true;
  $("#who").textContent = "";
  $("#view").innerHTML = SIGN_IN;
  $("#signin").addEventListener("submit", signIn);
  $("#token").focus();
  if (message) say(message, "bad");
}

async function signOut() {
  try { await api("DELETE", "/api/session"); } catch (err) { /* signed out anyway */ }
  signedOut("");
  say("Signed out.");
}

// ------------------------------------------------------------------ live events

function live(on) {
  const badge = $("#live");
  badge.textContent = on ? "live" : "offline";
  badge.classList.toggle("off", !on);
}

function listen() {
  if (state.source) state.source.close();
  const source = new EventSource("/api/events?recent=1");
  state.source = source;
  source.onopen = () => live(true);
  source.onerror = () => live(false);  // EventSource reconnects by itself, sending Last-Event-ID
  for (const kind of ["component", "config", "replica", "dead_letter", "reset"]) {
    source.addEventListener(kind, (message) => received(Number(message.lastEventId), kind, JSON.parse(message.data)));
  }
}

function received(id, kind, data) {
  if (state.events.some((e) => e.id === id)) return;
  state.events.unshift({id, kind, data});
  state.events.length = Math.min(state.events.length, 300);
  const route = location.hash;
  const affects = {
    component: ["#/components", "#/pipelines", "#/timeline"],
    config: ["#/pipelines", "#/components", "#/timeline"],
    replica: ["#/components", "#/timeline"],
    dead_letter: ["#/queue", "#/timeline"],
    reset: ["#/"],
  }[kind] || [];
  const detail = route.startsWith("#/components/") && data.id && route === `#/components/${data.id}`;
  if (detail) { refreshSide(data); return; }
  if (affects.some((prefix) => route === prefix || (prefix === "#/" && route.startsWith(prefix)))) {
    clearTimeout(state.refresh);
    state.refresh = setTimeout(() => { if (location.hash === route) render({keepMessage: true}); }, 150);
  }
}

function summary(kind, d) {
  if (kind === "component") {
    if (d.kind === "committed") return `${d.id} v${d.version} serving (${(d.sha256 || "").slice(0, 12)})`;
    if (d.kind === "removed") return `${d.id} removed`;
    if (d.kind === "refused") return `${d.id} refused${d.line ? " at line " + d.line : ""}: ${d.error}`;
  }
  if (kind === "config") return "config reloaded";
  if (kind === "replica" && !d.components.length) return "serves no component";
  if (kind === "replica") return `serves ${d.components.length} component(s): ` +
    d.components.map((c) => `${c.id} v${c.version ?? "?"}${c.status === "error" ? " (error)" : ""}`).join(", ");
  if (kind === "dead_letter") return `job ${d.id} of ${d.pipeline} is a dead letter: ${d.error}`;
  if (kind === "reset") return "events were missed while disconnected; views reloaded";
  return JSON.stringify(d);
}

// ------------------------------------------------------------------ routing

const views = {
  components: componentsView, executions: executionsView, pipelines: pipelinesView,
  queue: queueView, timeline: timelineView, audit: auditView,
};

class Stale extends Error {}

async function render(options = {}) {
  if (!state.session) return;
  options = {...options, seq: (state.seq = (state.seq || 0) + 1)};
  const [path, query] = location.hash.replace(/^#\//, "").split("?");
  const [section, ...rest] = path.split("/");
  const params = new URLSearchParams(query || "");
  for (const link of $$("#nav a")) {
    const active = link.getAttribute("href") === `#/${section}`;
    link.classList.toggle("active", active);
    if (active) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  if (!options.keepMessage) say("");
  const view = views[section];
  if (!view) { location.hash = "#/components"; return; }
  try {
    await view(rest.map(decodeURIComponent), params, options);
    if (state.flash) { say(...state.flash); state.flash = null; }
  } catch (err) {
    if (err instanceof Stale) return;  // a newer render took over
    if (err.status !== 401) say(err.message, "bad");
  }
}

// Put a view on the page, unless a newer render started meanwhile (its answer would be overwritten).
function show(html, options) {
  if (options && options.seq !== state.seq) throw new Stale();
  state.editor = null;
  $("#view").innerHTML = html;
}

// A message to show once the view the page is going to has rendered.
function flash(text, kind = "ok") {
  state.flash = [text, kind];
}

// ------------------------------------------------------------------ components

async function componentsView([id], params, options) {
  if (id) return componentView(id, options);
  const {data} = await api("GET", "/api/dynamic/components");
  const rows = data.components.map((c) => `<tr>
    <td><a href="#/components/${enc(c.id)}">${esc(c.id)}</a></td>
    <td class="${c.status === "serving" ? "ok" : "bad"}">${esc(c.status)}</td>
    <td>${esc(c.version ?? "")}</td><td><code>${esc((c.sha256 || "").slice(0, 12))}</code></td>
    <td>${esc((c.step_types || []).join(", "))}</td><td class="hide-narrow">${esc((c.endpoints || []).join(", "))}</td>
    <td>${esc(c.in_flight ?? "")}</td><td>${replicaCells(c)}</td>
    <td class="bad">${esc(c.last_error ? c.last_error.error : "")}</td></tr>`).join("");
  show(`<h2>Components</h2>
    ${isAdmin() ? `<div class="row"><a href="#/components/new" id="new-component">New component</a></div>` : ""}
    <div class="scroll"><table><caption class="muted">Each replica's version is highlighted when it differs.</caption>
    <thead><tr><th>id</th><th>status</th><th>version</th><th>sha256</th><th>step types</th><th class="hide-narrow">endpoints</th>
    <th>in flight</th><th>replicas</th><th>last error</th></tr></thead>
    <tbody>${rows || `<tr><td colspan="9" class="muted">No component yet.</td></tr>`}</tbody></table></div>`, options);
}

function replicaCells(c) {
  return (c.replicas || []).map((r) => {
    const diverged = r.status !== "serving" || r.sha256 !== c.sha256 || (r.version !== null && r.version !== c.version);
    return `<span class="${diverged ? "diverged bad" : "ok"}" title="${esc(r.error || "")}">${esc(r.replica)}: v${esc(r.version ?? "?")}` +
      `${r.status !== "serving" ? " (error)" : ""}</span>`;
  }).join("<br>");
}

const TEMPLATE = `from server import hookimpl


async def hello(ctx):
    return {"hello": ctx.data.get("name", "world")}


@hookimpl
def register_steps(register):
    register("step.hello", hello)
`;

async function componentView(id, options) {
  const isNew = id === "new";
  let component = null, etag = null;
  if (!isNew) {
    const answer = await api("GET", `/api/dynamic/components/${enc(id)}`);
    component = answer.data;
    etag = answer.headers.get("ETag");
  }
  if (options.keepEditor && state.editor) return;
  const admin = isAdmin();
  show(`<h2>${isNew ? "New component" : `Component <code>${esc(id)}</code>`}</h2>
    <div id="status-line">${component ? statusLine(component) : ""}</div>
    <div class="split"><div class="main">
      ${isNew ? `<label for="cid">Component id (lower case, digits, _)</label><input id="cid" required pattern="[a-z0-9][a-z0-9_]{0,63}">` : ""}
      <label for="source">Source${admin ? " (Ctrl-S saves; Ctrl-] and Ctrl-[ indent; Tab leaves the editor)" : " (read-only)"}</label>
      <textarea id="source"></textarea>
      <div id="verdict" aria-live="polite"></div>
      ${admin ? `<div class="row"><button id="validate" type="button">Validate</button>
        <button id="save" class="primary" type="button">Save</button>
        ${isNew ? "" : `<button id="delete" class="danger" type="button">Delete…</button>`}</div>` :
        `<p class="muted">Read-only: a viewer cannot change components.</p>`}
    </div><div class="side" id="side"></div></div>`, options);
  const editor = CodeMirror.fromTextArea($("#source"), {
    mode: "python", lineNumbers: true, indentUnit: 4, readOnly: !admin, gutters: ["CodeMirror-linenumbers", "errors"],
    extraKeys: {Tab: false, "Shift-Tab": false, "Ctrl-S": () => save(id, isNew), "Cmd-S": () => save(id, isNew)},
  });
  editor.setValue(isNew ? TEMPLATE : (component.source || ""));
  editor.on("change", () => { state.dirty = true; });
  state.editor = editor;
  state.dirty = false;
  state.etag = etag;
  state.marked = null;
  if (admin) {
    $("#validate").addEventListener("click", () => validate(id, isNew));
    $("#save").addEventListener("click", () => save(id, isNew));
    if (!isNew) $("#delete").addEventListener("click", () => remove(component));
  }
  if (component && component.last_error && component.last_error.line) markLine(component.last_error.line);
  if (!isNew) await history(id);
}

function statusLine(c) {
  const error = c.last_error ? `<div class="refusal">Last refused version: ${esc(c.last_error.error)}</div>` : "";
  return `<p><span class="${c.status === "serving" ? "ok" : "bad"}">${esc(c.status)}</span>
    ${c.version ? `· v${esc(c.version)} · <code>${esc((c.sha256 || "").slice(0, 12))}</code>` : ""}
    · step types: ${esc((c.step_types || []).join(", ") || "none")}
    · used by: ${esc((c.used_by || []).join(", ") || "no pipeline")} · in flight: ${esc(c.in_flight ?? 0)}</p>
    <div class="muted">${replicaCells(c)}</div>${error}`;
}

async function refreshSide(event) {
  const id = event.id;
  try {
    const {data} = await api("GET", `/api/dynamic/components/${enc(id)}`);
    $("#status-line").innerHTML = statusLine(data);
    await history(id);
    if (event.kind === "committed" && state.dirty && data.sha256 !== (state.etag || "").replace(/"/g, "")) {
      say(`Version ${data.version} of ${id} was saved elsewhere while you edit: saving now would answer 412.`, "bad");
    } else if (!state.dirty && event.kind === "committed") {
      state.editor.setValue(data.source || "");
      state.dirty = false;
      state.etag = `"${data.sha256}"`;
    }
  } catch (err) {
    if (event.kind === "removed") { say(`${id} was deleted.`, "bad"); location.hash = "#/components"; }
  }
}

async function history(id) {
  let versions = [];
  try { versions = (await api("GET", `/api/dynamic/components/${enc(id)}/versions`)).data.versions; } catch (err) { /* none stored */ }
  const side = $("#side");
  if (!side) return;
  const rows = versions.map((v, i) => `<tr><td>v${esc(v.version)}${v.deleted ? " (deleted)" : ""}</td>
    <td>${esc(v.who)}</td><td><span class="badge">${esc(v.origin)}</span></td>
    <td title="${esc(v.at)}">${esc(new Date(v.at).toLocaleString())}</td>
    <td><input type="radio" name="from" value="${esc(v.version)}" aria-label="diff from v${esc(v.version)}" ${i === 1 ? "checked" : ""}></td>
    <td><input type="radio" name="to" value="${esc(v.version)}" aria-label="diff to v${esc(v.version)}" ${i === 0 ? "checked" : ""}></td></tr>`).join("");
  side.innerHTML = `<h3>History</h3><div class="scroll"><table><thead><tr><th>version</th><th>who</th><th>from</th><th>when</th>
    <th>from</th><th>to</th></tr></thead><tbody>${rows || `<tr><td colspan="6" class="muted">No stored version.</td></tr>`}</tbody></table></div>
    ${versions.length > 1 ? `<div class="row"><button id="show-diff" type="button">Show diff</button></div>` : ""}<div id="diff" class="diff"></div>`;
  if (versions.length > 1) $("#show-diff").addEventListener("click", () => diff(id));
}

async function diff(id) {
  const from = ($("input[name=from]:checked") || {}).value, to = ($("input[name=to]:checked") || {}).value;
  try {
    const {data} = await api("GET", `/api/dynamic/components/${enc(id)}/diff?from=${enc(from)}&to=${enc(to)}`);
    const lines = data.diff.split("\n").map((line) => {
      const kind = line.startsWith("@@") ? "hunk" : line.startsWith("+") && !line.startsWith("+++") ? "add" :
        line.startsWith("-") && !line.startsWith("---") ? "del" : "";
      return `<span class="${kind}">${esc(line) || " "}</span>`;
    }).join("\n");
    $("#diff").innerHTML = `<p>v${esc(data.from)} → v${esc(data.to)}: <span class="ok">+${esc(data.added)}</span>
      <span class="bad">−${esc(data.removed)}</span></p>${data.diff ? `<pre>${lines}</pre>` : `<p class="muted">No difference.</p>`}`;
  } catch (err) { say(err.message, "bad"); }
}

function markLine(line) {
  const editor = state.editor;
  if (!editor) return;
  clearMark();
  if (!line) return;
  const index = Math.min(line, editor.lineCount()) - 1;
  const marker = document.createElement("span");
  marker.className = "cm-error-marker";
  marker.textContent = "●";
  marker.title = `line ${line}`;
  editor.addLineClass(index, "background", "cm-error-line");
  editor.setGutterMarker(index, "errors", marker);
  editor.scrollIntoView({line: index, ch: 0}, 80);
  state.marked = index;
}

function clearMark() {
  if (state.marked !== null && state.editor) state.editor.removeLineClass(state.marked, "background", "cm-error-line");
  if (state.editor) state.editor.clearGutter("errors");
  state.marked = null;
}

function verdict(ok, text) {
  $("#verdict").innerHTML = `<div class="${ok ? "valid" : "refusal"}">${esc(text)}</div>`;
}

function targetId(id, isNew) {
  return isNew ? $("#cid").value.trim() : id;
}

async function validate(id, isNew) {
  const cid = targetId(id, isNew) || "new_component";
  try {
    const {data} = await api("POST", `/api/dynamic/components/${enc(cid)}/validate`, {source: state.editor.getValue()});
    if (data.valid) {
      clearMark();
      verdict(true, `Valid: it would provide ${data.step_types.join(", ") || "no step type"}.`);
    } else {
      markLine(data.line);
      verdict(false, `Would be refused${data.line ? ` at line ${data.line}` : ""}: ${data.error}`);
    }
  } catch (err) { verdict(false, err.message); }
}

async function save(id, isNew) {
  const source = state.editor.getValue();
  const cid = targetId(id, isNew);
  try {
    let answer;
    if (isNew) {
      if (!cid) { verdict(false, "Give the component an id first."); $("#cid").focus(); return; }
      answer = await api("POST", "/api/dynamic/components", {id: cid, source});
    } else {
      answer = await api("PUT", `/api/dynamic/components/${enc(id)}`, {source}, state.etag ? {"If-Match": state.etag} : {});
    }
    clearMark();
    state.dirty = false;
    state.etag = `"${answer.data.sha256}"`;
    verdict(true, `Saved: v${answer.data.version} is serving.`);
    const saved = `Saved ${cid}: version ${answer.data.version} serves now.`;
    if (isNew) { flash(saved); location.hash = `#/components/${enc(cid)}`; return; }
    say(saved);
    $("#status-line").innerHTML = statusLine({...answer.data, used_by: []});
    await history(id);
  } catch (err) {
    if (err.status === 422) {
      markLine(err.data.line);
      verdict(false, `Refused${err.data.line ? ` at line ${err.data.line}` : ""}; the previous version still serves. ${err.data.error}`);
    } else if (err.status === 412) {
      verdict(false, `${err.message}. Copy your edit, reload the page to get their version, and apply it again.`);
    } else verdict(false, err.message);
  }
}

async function remove(component) {
  const users = component.used_by || [];
  const body = `<p>Delete component <code>${esc(component.id)}</code> on every replica and remove its file?</p>` +
    (users.length ? `<p class="bad">These pipelines will answer 503 until a component provides their step types again:
      <b>${users.map(esc).join(", ")}</b>.</p>` : `<p>No pipeline uses its step types.</p>`);
  if (!await confirmDialog("Delete component", body, "Delete")) return;
  try {
    await api("DELETE", `/api/dynamic/components/${enc(component.id)}`);
    flash(`Deleted ${component.id}.`);
    location.hash = "#/components";
  } catch (err) { say(err.message, "bad"); }
}

function confirmDialog(title, html, action) {
  const dialog = $("#confirm");
  $("#confirm-title").textContent = title;
  $("#confirm-body").innerHTML = html;
  $("#confirm-ok").textContent = action;
  dialog.returnValue = "";
  dialog.showModal();
  $("#confirm-ok").focus();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), {once: true}));
}

// ------------------------------------------------------------------ executions

const TRIGGER_TYPES = ["http", "event", "schedule", "manual", "messaging"];

async function executionsView([id], params, options) {
  if (id) return executionView(id, options);
  const {data: pipelines} = await api("GET", "/api/pipelines");
  const query = new URLSearchParams();
  for (const key of ["pipeline", "status", "workflow_type", "error", "since", "until"]) {
    if (params.get(key)) query.set(key, params.get(key));
  }
  query.set("limit", "25");
  const choices = (values, chosen) => `<option value="">any</option>` +
    values.map((v) => `<option ${v === chosen ? "selected" : ""}>${esc(v)}</option>`).join("");
  const local = (iso) => iso ? new Date(new Date(iso).getTime() - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 16) : "";
  show(`<h2>Executions</h2><form id="filters" class="row">
    <div><label for="f-pipeline">pipeline</label><select id="f-pipeline" name="pipeline">${choices(pipelines.pipelines.map((p) => p.name), params.get("pipeline"))}</select></div>
    <div><label for="f-status">status</label><select id="f-status" name="status">${choices(["success", "error", "timeout"], params.get("status"))}</select></div>
    <div><label for="f-type">trigger type</label><select id="f-type" name="workflow_type">${choices(TRIGGER_TYPES, params.get("workflow_type"))}</select></div>
    <div><label for="f-since">since</label><input id="f-since" name="since" type="datetime-local" value="${esc(local(params.get("since")))}"></div>
    <div><label for="f-until">until</label><input id="f-until" name="until" type="datetime-local" value="${esc(local(params.get("until")))}"></div>
    <div><label for="f-error">error contains</label><input id="f-error" name="error" value="${esc(params.get("error") || "")}"></div>
    <button type="submit" class="primary">Filter</button></form>
    <div class="scroll"><table><thead><tr><th>started</th><th>pipeline</th><th>trigger</th><th>status</th><th>ms</th><th>error</th></tr></thead>
    <tbody id="rows"></tbody></table></div><div class="row"><button id="more" type="button" hidden>Load more</button></div>`, options);
  $("#filters").addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = new URLSearchParams();
    for (const field of $$("#filters [name]")) {
      let value = field.value.trim();
      if (value && field.type === "datetime-local") value = new Date(value).toISOString();
      if (value) chosen.set(field.name, value);
    }
    location.hash = `#/executions?${chosen}`;
  });
  await page(`/api/executions?${query}`);
}

async function page(link) {
  const {data} = await api("GET", link);
  const rows = data.executions.map((e) => `<tr class="clickable" tabindex="0" data-id="${esc(e.id)}">
    <td>${esc(new Date(e.started_at).toLocaleString())}</td><td>${esc(e.pipeline)}</td><td>${esc(e.workflow_type)}</td>
    <td class="${e.status === "success" ? "ok" : "bad"}">${esc(e.status)}</td><td>${esc(e.duration_ms)}</td>
    <td class="bad">${esc(e.error ? e.error.error : "")}</td></tr>`).join("");
  const body = $("#rows");
  body.insertAdjacentHTML("beforeend", rows);
  if (!body.children.length) body.innerHTML = `<tr><td colspan="6" class="muted">No execution matches.</td></tr>`;
  for (const row of $$("tr.clickable", body)) {
    if (row.dataset.bound) continue;
    row.dataset.bound = "1";
    const open = () => { location.hash = `#/executions/${enc(row.dataset.id)}`; };
    row.addEventListener("click", open);
    row.addEventListener("keydown", (event) => { if (event.key === "Enter") open(); });
  }
  const more = $("#more");
  more.hidden = !data.next;
  more.onclick = () => page(data.next);
}

function fold(value) {
  if (value === undefined || value === null) return `<span class="muted">none</span>`;
  const text = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  if (text.length <= 240) return `<pre>${esc(text)}</pre>`;
  return `<details><summary>${esc(text.replace(/\s+/g, " ").slice(0, 80))}… (${text.length} characters)</summary><pre>${esc(text)}</pre></details>`;
}

async function executionView(id, options) {
  let data = null;
  for (let attempt = 0; attempt < 10 && data === null; attempt++) {
    try { data = (await api("GET", `/api/executions/${enc(id)}`)).data; } catch (err) {
      if (err.status !== 404 || attempt === 9) throw err;
      await new Promise((resolve) => setTimeout(resolve, 300));  // recorded within about half a second
    }
  }
  const steps = data.steps.map((s) => `<tr><td>${esc(s.name)}</td><td><code>${esc(s.type)}</code></td>
    <td class="${s.status === "success" ? "ok" : "bad"}">${esc(s.status)}</td><td>${esc(s.duration_ms)}</td>
    <td>${s.error ? `<div class="bad">${esc(s.error)}</div>` : fold(s.output)}</td></tr>`).join("");
  const versions = Object.entries(data.components).map(([c, v]) => `<a href="#/components/${enc(c)}">${esc(c)}</a> v${esc(v)}`).join(", ");
  show(`<h2>Execution <code>${esc(data.id)}</code></h2>
    <p><span class="${data.status === "success" ? "ok" : "bad"}">${esc(data.status)}</span> · pipeline <b>${esc(data.pipeline)}</b>
    · ${esc(data.workflow_type)} · ${esc(new Date(data.started_at).toLocaleString())} · ${esc(data.duration_ms)} ms
    ${data.rerun_of ? ` · re-run of <a href="#/executions/${enc(data.rerun_of)}">${esc(data.rerun_of)}</a>` : ""}</p>
    ${data.error ? `<div class="refusal">${esc(data.error.error)}${data.error.step ? ` (step ${esc(data.error.step)})` : ""}</div>` : ""}
    ${isAdmin() ? `<div class="row"><button id="rerun" type="button">Re-run with the same payload</button></div>` : ""}
    <h3>Steps</h3><div class="scroll"><table><thead><tr><th>step</th><th>type</th><th>status</th><th>ms</th><th>output or error</th></tr></thead>
    <tbody>${steps || `<tr><td colspan="5" class="muted">No step ran.</td></tr>`}</tbody></table></div>
    <h3>Trigger payload</h3>${fold(data.payload)}
    ${data.redacted ? `<p class="muted">Values under secret-looking keys are shown as [redacted].</p>` : ""}
    ${data.truncated ? `<p class="warn">Some values were over the size cap and are folded.</p>` : ""}
    <h3>Result</h3>${fold(data.result)}
    <h3>Component versions</h3><p>${versions || `<span class="muted">No component step ran.</span>`}</p>`, options);
  if (isAdmin()) $("#rerun").addEventListener("click", () => rerun(data));
}

async function rerun(execution) {
  if (execution.side_effects.length) {
    const body = `<p>Pipeline <b>${esc(execution.pipeline)}</b> has ${SIDE_EFFECTS}: <b>${execution.side_effects.map(esc).join(", ")}</b>.
      Re-running sends the recorded payload again and repeats them.</p>`;
    if (!await confirmDialog("Re-run with side effects?", body, "Re-run")) return;
  }
  try {
    const {data} = await api("POST", `/api/executions/${enc(execution.id)}/rerun`, {});
    flash(`Re-run ${data.id}: ${data.status}.`, data.status === "success" ? "ok" : "bad");
    location.hash = `#/executions/${enc(data.id)}`;
  } catch (err) { say(err.message, "bad"); }
}

// ------------------------------------------------------------------ pipelines

async function pipelinesView(rest, params, options) {
  const {data} = await api("GET", "/api/pipelines");
  show(`<h2>Pipelines</h2>${data.pipelines.map((p) => {
    const r = p.recent;
    const rate = r.success_rate === null ? "–" : `${Math.round(r.success_rate * 1000) / 10} %`;
    const compensation = p.steps.filter((s) => s.compensation).map((s) => esc(s.name)).join(", ");
    return `<section class="pipeline"><h3 class="${p.available ? "" : "bad"}">${esc(p.name)}</h3>
      <p class="muted">${esc(p.trigger.type)} ${esc(JSON.stringify(p.trigger.config))} · on error: ${esc(p.on_error)}</p>
      <div class="stats"><div><b>${esc(r.count)}</b>recent runs</div><div><b>${rate}</b>succeeded</div>
      <div><b>${r.p95_ms === null ? "–" : esc(r.p95_ms) + " ms"}</b>p95 duration</div></div>
      <div class="graph">${graph(p)}</div>${compensation ? `<p class="muted">compensation: ${compensation}</p>` : ""}</section>`;
  }).join("") || `<p class="muted">No pipeline.</p>`}`, options);
}

function graph(p) {
  const steps = p.steps.filter((s) => !s.compensation);
  const nodes = [{name: `trigger: ${p.trigger.type}`, kind: "trigger"}, ...steps.map((s) => ({...s, kind: "step"})), {name: "end", kind: "end"}];
  const index = Object.fromEntries(steps.map((s, i) => [s.name, i + 1]));
  index.end = nodes.length - 1;
  const y = (i) => 10 + i * 46, width = 250;
  const edges = [[0, 1, false]];
  steps.forEach((s, i) => {
    const routed = s.next.length > 1;
    for (const target of s.next) if (target in index) edges.push([i + 1, index[target], routed]);
  });
  const lines = edges.map(([from, to, routed], n) => {
    if (to === from + 1 && !routed) return `<line x1="125" y1="${y(from) + 30}" x2="125" y2="${y(to)}" stroke="#667085" marker-end="url(#arrow)"/>`;
    const bend = width + 20 + 14 * Math.abs(to - from) + 6 * (n % 3);
    return `<path d="M ${width} ${y(from) + 15} C ${bend} ${y(from) + 15}, ${bend} ${y(to) + 15}, ${width} ${y(to) + 15}"
      fill="none" stroke="${routed ? "#6941c6" : "#667085"}" stroke-dasharray="${routed ? "4 3" : ""}" marker-end="url(#arrow)"/>`;
  }).join("");
  const boxes = nodes.map((node, i) => {
    const fill = node.kind === "step" ? (node.available ? "#eef3fd" : "#fde2e0") : "#f1f3f5";
    const label = node.kind === "step" ? `${node.name} (${node.type})` : node.name;
    return `<rect x="0" y="${y(i)}" width="${width}" height="30" rx="5" fill="${fill}" stroke="#9aa4b2"/>
      <text x="8" y="${y(i) + 19}">${esc(label.length > 38 ? label.slice(0, 37) + "…" : label)}</text>`;
  }).join("");
  const height = y(nodes.length) + 4, full = width + 40 + 14 * nodes.length;
  return `<svg viewBox="0 0 ${full} ${height}" width="${full}" height="${height}" role="img" aria-label="flow of ${esc(p.name)}">
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
    <path d="M 0 0 L 10 5 L 0 10 z" fill="#667085"/></marker></defs>${lines}${boxes}</svg>`;
}

// ------------------------------------------------------------------ queue, timeline, audit

async function queueView(rest, params, options) {
  const [{data: queue}, {data: dead}] = await Promise.all([api("GET", "/api/queue?limit=100"), api("GET", "/api/queue/dead?limit=100")]);
  const jobs = queue.jobs.map((j) => `<tr><td><code>${esc(j.id)}</code></td><td>${esc(j.pipeline)}</td><td>${esc(j.workflow_type)}</td>
    <td>${esc(j.status)}</td><td>${esc(j.attempts)}</td><td>${esc(new Date(j.enqueued_at).toLocaleString())}</td></tr>`).join("");
  const letters = dead.dead.map((j) => `<tr><td><code>${esc(j.id)}</code></td><td>${esc(j.pipeline)}</td><td>${esc(j.attempts)}</td>
    <td class="bad">${esc(j.error)}</td>${isAdmin() ? `<td><button type="button" data-requeue="${esc(j.id)}">Re-queue</button></td>` : ""}</tr>`).join("");
  show(`<h2>Queue</h2><div class="stats"><div><b>${esc(queue.depth)}</b>waiting or running</div>
    <div><b>${esc(queue.oldest_age_seconds)} s</b>oldest job</div><div><b>${esc(queue.dead)}</b>dead letters</div>
    <div><b>${esc(queue.backend)}</b>backend</div></div>
    <h3>Jobs</h3><div class="scroll"><table><thead><tr><th>id</th><th>pipeline</th><th>type</th><th>status</th><th>attempts</th><th>enqueued</th></tr></thead>
    <tbody>${jobs || `<tr><td colspan="6" class="muted">Nothing waits.</td></tr>`}</tbody></table></div>
    <h3>Dead letters</h3><div class="scroll"><table><thead><tr><th>id</th><th>pipeline</th><th>attempts</th><th>last error</th>${isAdmin() ? "<th></th>" : ""}</tr></thead>
    <tbody>${letters || `<tr><td colspan="5" class="muted">No dead letter.</td></tr>`}</tbody></table></div>`, options);
  for (const button of $$("[data-requeue]")) {
    button.addEventListener("click", async () => {
      try {
        await api("POST", `/api/queue/dead/${enc(button.dataset.requeue)}/retry`, {});
        say(`Job ${button.dataset.requeue} is back in the queue.`);
        await render({keepMessage: true});
      } catch (err) { say(err.message, "bad"); }
    });
  }
}

async function timelineView(rest, params, options) {
  const items = state.events.map((e) => `<li><time>${esc(new Date(e.data.at * 1000).toLocaleTimeString())}</time>
    <span class="badge">${esc(e.kind === "component" ? e.data.kind : e.kind)}</span> <span class="muted">${esc(e.data.replica)}</span>
    <span class="${e.data.kind === "refused" || e.kind === "dead_letter" ? "bad" : ""}">${esc(summary(e.kind, e.data))}</span></li>`).join("");
  show(`<h2>Timeline</h2><p class="muted">What this replica saw, newest first; it updates as it happens.</p>
    <ul class="timeline" id="timeline">${items || `<li class="muted">Nothing yet.</li>`}</ul>`, options);
}

async function auditView(rest, params, options) {
  const query = new URLSearchParams({limit: "50"});
  for (const key of ["component", "actor"]) if (params.get(key)) query.set(key, params.get(key));
  show(`<h2>Audit log</h2><form id="audit-filters" class="row">
    <div><label for="a-component">component</label><input id="a-component" name="component" value="${esc(params.get("component") || "")}"></div>
    <div><label for="a-actor">actor</label><input id="a-actor" name="actor" value="${esc(params.get("actor") || "")}"></div>
    <button type="submit" class="primary">Filter</button></form>
    <div class="scroll"><table><thead><tr><th>when</th><th>actor</th><th>action</th><th>target</th><th>detail</th><th>from</th></tr></thead>
    <tbody id="audit-rows"></tbody></table></div><div class="row"><button id="audit-more" type="button" hidden>Load more</button></div>`, options);
  $("#audit-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = new URLSearchParams();
    for (const field of $$("#audit-filters [name]")) if (field.value.trim()) chosen.set(field.name, field.value.trim());
    location.hash = `#/audit?${chosen}`;
  });
  const load = async (link) => {
    const {data} = await api("GET", link);
    $("#audit-rows").insertAdjacentHTML("beforeend", data.entries.map((e) => `<tr><td>${esc(new Date(e.at).toLocaleString())}</td>
      <td>${esc(e.actor)}</td><td>${esc(e.action)}</td><td>${esc(e.target || "")}</td>
      <td><code>${esc(e.detail ? JSON.stringify(e.detail) : "")}</code></td><td>${esc(e.client_address || "")}</td></tr>`).join(""));
    const more = $("#audit-more");
    more.hidden = !data.next;
    more.onclick = () => load(data.next);
  };
  await load(`/api/audit?${query}`);
}

// ------------------------------------------------------------------ start

const SIGN_IN = $("#view").innerHTML;
$("#signin").addEventListener("submit", signIn);
$("#signout").addEventListener("click", signOut);
window.addEventListener("hashchange", () => render());
api("GET", "/api/session").then(({data}) => started(data)).catch(() => { $("#token").focus(); });
