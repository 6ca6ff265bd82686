// pxetwist web page: the catalog, machines, leases and a live boot timeline, all through
// the JSON API of docs/API.md (the same routes the `pxetwist` command uses).
// Every text from the server goes into the page with textContent, never innerHTML.
"use strict";

const TOKEN_KEY = "pxetwist.token";
const ROOT = new URL("..", window.location.href);
const STEPS = [
  ["dhcp", "DHCP"], ["tftp", "TFTP"], ["script", "Script"], ["kernel", "Kernel"],
  ["initrd", "Initrd"], ["template", "Answer file"], ["installed", "Installed"],
];
const FAILED_STAGES = new Set(["dhcp.nak", "dhcp.decline", "tftp.error"]);
const EVENTS_KEPT = 2000;
const EVENTS_SHOWN = 12;

const state = {
  events: new Map(),   // seq -> event
  lastSeq: 0,
  machines: [],
  machinesNext: null,
  machinesTotal: 0,
  entries: [],
  liveSource: null,
};

// -- small helpers ------------------------------------------------------------------------

function $(selector) { return document.querySelector(selector); }

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function shown(value) {
  return value === null || value === undefined || value === "" ? "–" : String(value);
}

function clockTime(seconds) {
  if (!seconds) return "–";
  return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
}

function dateTime(seconds) {
  if (!seconds) return "–";
  const d = new Date(seconds * 1000);
  return d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + clockTime(seconds);
}

class ApiError extends Error {
  constructor(status, reason) {
    super(reason);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(new URL(path, ROOT), init);
  } catch (error) {
    throw new ApiError(0, "cannot reach the server (" + error.message + ")");
  }
  let data = null;
  try { data = await response.json(); } catch (error) { data = null; }
  if (!response.ok) {
    const reason = data && typeof data.error === "string" ? data.error : response.statusText;
    throw new ApiError(response.status, reason || "no reason given");
  }
  return data;
}

// -- messages -----------------------------------------------------------------------------

let messageTimer = null;

function say(text, kind) {
  const box = $("#message");
  clearTimeout(messageTimer);
  box.replaceChildren(el("span", { text }),
    el("button", { type: "button", class: "quiet close", "aria-label": "dismiss",
                   onclick: () => { box.hidden = true; } }, "×"));
  box.className = "message " + (kind || "info");
  box.hidden = false;
  if (kind !== "error") messageTimer = setTimeout(() => { box.hidden = true; }, 4000);
}

function failed(what, error) {
  const token = $("#token");
  if (error.status === 401) {
    say(what + " refused (401): " + error.message +
        ". Enter the server's API token at the top and try again.", "error");
    token.classList.add("wanted");
    token.focus();
  } else if (error.status === 403) {
    say(what + " refused (403): " + error.message + ".", "error");
  } else if (error.status) {
    say(what + " failed (" + error.status + "): " + error.message, "error");
  } else {
    say(what + " failed: " + error.message, "error");
  }
}

// -- token --------------------------------------------------------------------------------

function showTokenState() {
  const input = $("#token");
  const set = Boolean(sessionStorage.getItem(TOKEN_KEY));
  input.value = "";
  input.placeholder = set ? "token set for this tab" : "for changes";
  input.classList.toggle("set", set);
  $("#token-forget").hidden = !set;
}

function setUpToken() {
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("#token").value.trim();
    if (!value) { say("Type the API token first.", "error"); return; }
    sessionStorage.setItem(TOKEN_KEY, value);
    $("#token").classList.remove("wanted");
    showTokenState();
    say("Token kept for this tab (session storage).", "info");
  });
  $("#token-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
    say("Token forgotten.", "info");
  });
  showTokenState();
}

// -- catalog ------------------------------------------------------------------------------

async function loadCatalog() {
  let data;
  try {
    data = await api("GET", "containers");
  } catch (error) {
    failed("Loading the catalog", error);
    return;
  }
  const first = state.entries.length === 0;
  state.entries = data.entries;
  renderCatalog(data.entries);
  if (first && state.machines.length) renderMachines();  // the entry choices arrived
  renderProblems(data.errors || []);
}

function renderProblems(problems) {
  $("#problems").hidden = problems.length === 0;
  $("#problem-list").replaceChildren(...problems.map((p) =>
    el("li", {}, el("code", { text: p.path }), p.key ? " [" + p.key + "]" : "", ": ",
       el("span", { text: p.error }))));
}

function renderCatalog(entries) {
  const enabled = entries.filter((e) => e.pxe).length;
  $("#catalog-count").textContent = entries.length + " entries, " + enabled + " in the menu";
  const box = $("#catalog");
  if (entries.length === 0) {
    box.replaceChildren(el("p", { class: "muted", text: "No entries in the catalog folders." }));
    return;
  }
  box.replaceChildren(...entries.map(entryCard));
}

function entryCard(entry) {
  const badge = el("span", { class: "badge " + (entry.pxe ? "on" : "off"),
                             text: entry.pxe ? "PXE enabled" : "PXE disabled" });
  const toggle = el("button", {
    type: "button", class: "toggle", role: "switch",
    "aria-checked": entry.pxe ? "true" : "false",
    "aria-label": (entry.pxe ? "Take out of" : "Put in") + " the PXE menu: " + entry.id,
    onclick: () => toggleEntry(entry, toggle),
  }, el("span", { class: "knob" }));
  const what = entry.kernel ? entry.kernel + (entry.initrd.length ? " + " +
    entry.initrd.join(", ") : "") : (entry.file || "");
  const label = el("input", { name: "label", value: entry.label, maxlength: 80,
                              "aria-label": "menu label" });
  const order = el("input", { name: "order", type: "number", step: 1,
                              value: entry.order === null ? "" : String(entry.order),
                              placeholder: "–", "aria-label": "menu order" });
  const isDefault = el("input", { name: "default", type: "checkbox", defaultChecked: entry.default });
  const args = el("input", { name: "kernel_args", value: entry.kernel_args,
                             placeholder: entry.kind === "linux" ? "extra kernel arguments" :
                               "(linux entries only)", "aria-label": "extra kernel arguments" });
  const form = el("form", { class: "edit", onsubmit: (event) => {
    event.preventDefault();
    saveEntry(entry, { label, order, isDefault, args }, form);
  } },
    el("label", { class: "wide" }, el("span", { text: "Label" }), label),
    el("label", { class: "narrow" }, el("span", { text: "Order" }), order),
    el("label", { class: "check" }, isDefault, el("span", { text: "default" })),
    el("label", { class: "wide" }, el("span", { text: "Kernel args" }), args),
    el("button", { type: "submit", class: "save" }, "Save"));
  return el("article", { class: "card" + (entry.pxe ? "" : " disabled"),
                         dataset: { entry: entry.id } },
    el("div", { class: "titles" },
      el("h3", { text: entry.label || entry.name }),
      el("div", { class: "meta" }, el("code", { text: entry.id }), " · ", entry.kind,
         entry.default ? el("span", { class: "badge default", text: "default" }) : null),
      what ? el("p", { class: "files", text: what }) : null),
    el("div", { class: "switch" }, badge, toggle),
    form);
}

// Whether the operator is busy in the catalog (focus there, or a field changed, unsaved).
function catalogBeingEdited() {
  const box = $("#catalog");
  if (box.contains(document.activeElement)) return true;
  return [...box.querySelectorAll("input")].some((input) =>
    input.type === "checkbox" ? input.checked !== input.defaultChecked
      : input.value !== input.defaultValue);
}

async function toggleEntry(entry, button) {
  button.disabled = true;
  try {
    const answer = await api("POST", "pxe/" + encodeURIComponent(entry.id) + "/toggle");
    say(answer.id + ": PXE " + (answer.pxe ? "enabled" : "disabled") + ".", "info");
  } catch (error) {
    failed("Toggling " + entry.id, error);
  }
  await loadCatalog();
}

async function saveEntry(entry, fields, form) {
  const changes = {};
  if (fields.label.value !== entry.label) changes.label = fields.label.value;
  const orderText = fields.order.value.trim();
  const order = orderText === "" ? null : Number(orderText);
  if (order !== null && !Number.isInteger(order)) {
    say("Order must be a whole number (or empty).", "error");
    return;
  }
  if (order !== entry.order) changes.order = order;
  if (fields.isDefault.checked !== entry.default) changes.default = fields.isDefault.checked;
  if (fields.args.value !== entry.kernel_args) changes.kernel_args = fields.args.value;
  if (Object.keys(changes).length === 0) {
    say(entry.id + ": nothing changed.", "info");
    return;
  }
  form.querySelector("button.save").disabled = true;
  try {
    await api("POST", "pxe/" + encodeURIComponent(entry.id) + "/menu", changes);
    say(entry.id + ": saved.", "info");
    await loadCatalog();
  } catch (error) {
    failed("Saving " + entry.id, error);
    form.querySelector("button.save").disabled = false;
  }
}

async function rescan() {
  try {
    const answer = await api("POST", "catalog/refresh");
    say("Rescanned: " + answer.entries + " entries, " + answer.errors + " broken.", "info");
  } catch (error) {
    failed("Rescanning", error);
  }
  await loadCatalog();
}

// -- machines and leases ------------------------------------------------------------------

function cells(row, values, labels) {
  values.forEach((value, i) => {
    row.append(value instanceof Node ? el("td", { "data-label": labels[i] }, value)
      : el("td", { "data-label": labels[i], text: shown(value) }));
  });
  return row;
}

const MACHINE_LABELS = ["MAC", "State", "Entry", "IP", "Arch", "Last seen", "Last stage",
                        "Install", "Boot"];
const LEASE_LABELS = ["IP", "MAC", "State", "Hostname", "Expires"];
//: Machines asked for per page of GET /machines (docs/API.md: ?limit=&after=).
const MACHINES_PAGE = 200;

// The first pages of /machines, as many records as are shown now (at least one page):
// the page never loads thousands of records every 10 s.
async function loadMachines() {
  if ($("#machines").contains(document.activeElement)) return;  // an assignment in progress
  const wanted = Math.max(MACHINES_PAGE, state.machines.length);
  let machines = [];
  let after = null;
  let data;
  try {
    do {
      const query = "machines?limit=" + Math.min(MACHINES_PAGE, wanted - machines.length) +
        (after ? "&after=" + encodeURIComponent(after) : "");
      data = await api("GET", query);
      machines = machines.concat(data.machines);
      after = data.next;
    } while (after && machines.length < wanted);
  } catch (error) {
    return;
  }
  state.machines = machines;
  state.machinesNext = after;
  state.machinesTotal = data.total;
  renderMachines();
}

async function moreMachines() {
  if (!state.machinesNext) return;
  let data;
  try {
    data = await api("GET", "machines?limit=" + MACHINES_PAGE + "&after=" +
                     encodeURIComponent(state.machinesNext));
  } catch (error) {
    failed("Loading more machines", error);
    return;
  }
  state.machines = state.machines.concat(data.machines);
  state.machinesNext = data.next;
  state.machinesTotal = data.total;
  renderMachines();
}

function renderMachines() {
  const body = $("#machines tbody");
  const total = state.machinesTotal || state.machines.length;
  $("#machines-count").textContent = total + " seen" +
    (state.machines.length < total ? ", " + state.machines.length + " shown" : "");
  $("#machines-more").hidden = !state.machinesNext;
  if (state.machines.length === 0) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 9, class: "muted",
      text: "No machine has asked for anything yet." })));
  } else {
    body.replaceChildren(...state.machines.map((m) => cells(
      el("tr", { dataset: { mac: m.mac }, class: "clickable", title: "show its timeline",
                 onclick: () => { pickMachine(m.mac); } }),
      [el("code", { text: m.mac }), el("span", { class: "state " + m.state, text: m.state }),
       m.entry ? m.entry + (m.once ? " (once)" : " (permanent)") : null, m.ip, m.arch,
       dateTime(m.last_seen), m.last_stage, installData(m), assignForm(m)],
      MACHINE_LABELS)));
  }
  updateMachinePicker();
}

// A machine's install data: hostname, vars, and a preview link for each template of its
// entry (GET /machines/{mac}/templates/{name}, rendered for it).
function installData(machine) {
  const entry = state.entries.find((e) => e.id === machine.entry);
  const names = entry && entry.templates ? entry.templates : [];
  const hyphen = machine.mac.replaceAll(":", "-");
  const vars = Object.entries(machine.vars || {}).map(([k, v]) => k + "=" + v).join(" ");
  const box = el("div", { class: "install" },
    machine.hostname ? el("span", { class: "hostname", text: machine.hostname }) : null,
    vars ? el("code", { class: "vars", text: vars }) : null,
    ...names.map((name) => el("a", {
      class: "preview", target: "_blank", rel: "noopener", text: "preview " + name,
      href: new URL("machines/" + hyphen + "/templates/" + encodeURIComponent(name),
                    ROOT).href })));
  box.addEventListener("click", (event) => event.stopPropagation());
  return box;
}

// "k=v k2=v2" as an object (values without spaces; the API and CLI take any value).
function parseVars(text) {
  const vars = {};
  for (const part of text.split(/\s+/).filter(Boolean)) {
    const at = part.indexOf("=");
    if (at < 1) throw new Error("vars: " + JSON.stringify(part) + " is not key=value");
    vars[part.slice(0, at)] = part.slice(at + 1);
  }
  return vars;
}

// What a machine boots: an entry once (until it reports installed) or for good, or its disk.
function assignForm(machine) {
  const entry = el("select", { name: "entry", "aria-label": "boot entry for " + machine.mac },
    el("option", { value: "", text: "local disk" }),
    ...state.entries.map((e) => el("option", { value: e.id, text: e.label || e.name || e.id })));
  entry.value = machine.entry || "";
  const mode = el("select", { name: "mode", "aria-label": "one-shot or permanent" },
    el("option", { value: "once", text: "once" }),
    el("option", { value: "permanent", text: "permanent" }));
  mode.value = machine.entry && machine.once ? "once" : "permanent";
  const sync = () => { mode.disabled = entry.value === ""; };
  entry.addEventListener("change", sync);
  sync();
  const hostname = el("input", { name: "hostname", value: machine.hostname || "",
                                 placeholder: "hostname", maxlength: 253,
                                 "aria-label": "hostname of " + machine.mac });
  const vars = el("input", { name: "vars", placeholder: "key=value …",
    value: Object.entries(machine.vars || {}).map(([k, v]) => k + "=" + v).join(" "),
    "aria-label": "template variables of " + machine.mac });
  const form = el("form", { class: "assign", onsubmit: (event) => {
    event.preventDefault();
    let parsed;
    try { parsed = parseVars(vars.value); } catch (error) { say(error.message, "error"); return; }
    assignMachine(machine.mac, entry.value, mode.value === "once", form,
                  { hostname: hostname.value.trim(), vars: parsed });
  } }, entry, mode, hostname, vars, el("button", { type: "submit", class: "apply" }, "Apply"));
  form.addEventListener("click", (event) => event.stopPropagation());
  return form;
}

async function assignMachine(mac, entryId, once, form, data) {
  form.querySelector("button.apply").disabled = true;
  const body = Object.assign(entryId ? { entry: entryId, once } : { entry: null }, data || {});
  try {
    const answer = await api("PUT", "machines/" + encodeURIComponent(mac), body);
    say(mac + ": " + (answer.entry ? "boots " + answer.entry +
        (answer.once ? " once" : " permanently") : "boots from its disk") + ".", "info");
  } catch (error) {
    failed("Assigning " + mac, error);
  }
  document.activeElement.blur();
  await loadMachines();
}

async function loadLeases() {
  let data;
  try { data = await api("GET", "leases"); } catch (error) { return; }
  const body = $("#leases tbody");
  $("#leases-count").textContent = data.leases.length + " leases";
  if (data.leases.length === 0) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 5, class: "muted",
      text: "No leases (pxetwist hands out addresses only in full DHCP mode)." })));
    return;
  }
  body.replaceChildren(...data.leases.map((l) => cells(el("tr"),
    [l.ip, el("code", { text: l.mac }), l.state, l.hostname, dateTime(l.expires)],
    LEASE_LABELS)));
}

async function loadHealth() {
  try {
    const h = await api("GET", "health");
    $("#health").textContent = "v" + h.version + " · " + (h.services.join(", ") || "no services");
  } catch (error) {
    $("#health").textContent = "server unreachable";
  }
}

// -- the boot timeline --------------------------------------------------------------------

function stepOf(event, reachedScript) {
  const stage = event.stage || "";
  if (stage.startsWith("dhcp.") || stage.startsWith("proxy.")) return "dhcp";
  if (stage.startsWith("tftp.")) return "tftp";
  if (stage === "http.script" || stage === "http.menu") return "script";
  if (stage === "http.kernel") return "kernel";
  if (stage === "http.initrd") return "initrd";
  if (stage === "http.template") return "template";
  if (stage === "lifecycle") {
    return (event.detail || "").startsWith("installed") ? "installed" : null;
  }
  // Another file: an EFI or ISO image after the script, or the bootloader over HTTP before.
  if (stage === "http.file") return reachedScript ? "kernel" : "tftp";
  return null;
}

// The steps of a machine's latest boot: a DHCP event after later steps starts a new boot.
function latestBoot(events) {
  let steps = {};
  for (const event of events) {
    const step = stepOf(event, Boolean(steps.script));
    if (step === null) continue;
    const later = Object.keys(steps).some((s) => s !== "dhcp");
    if (step === "dhcp" && later) steps = {};
    const failed = FAILED_STAGES.has(event.stage);
    const seen = steps[step];
    if (!seen) steps[step] = { time: event.time, failed, detail: event.detail };
    else if (failed) seen.failed = true;
    else if (seen.failed) seen.failed = false;
  }
  return steps;
}

function addEvent(event) {
  if (state.events.has(event.seq)) return false;
  state.events.set(event.seq, event);
  state.lastSeq = Math.max(state.lastSeq, event.seq);
  if (state.events.size > EVENTS_KEPT) {
    const oldest = Math.min(...state.events.keys());
    state.events.delete(oldest);
  }
  return true;
}

let renderQueued = false;
let machinesTimer = null;

function eventsArrived(count) {
  if (!count) return;
  if (!renderQueued) {
    renderQueued = true;
    requestAnimationFrame(() => { renderQueued = false; renderTimeline(); });
  }
  clearTimeout(machinesTimer);
  machinesTimer = setTimeout(loadMachines, 300);
}

function byMac() {
  const groups = new Map();
  const ordered = [...state.events.values()].sort((a, b) => a.seq - b.seq);
  for (const event of ordered) {
    const mac = event.mac || "";
    if (!groups.has(mac)) groups.set(mac, []);
    groups.get(mac).push(event);
  }
  return groups;
}

function renderTimeline() {
  const picked = $("#timeline-mac").value;
  const groups = byMac();
  updateMachinePicker(groups);
  let macs = [...groups.keys()];
  if (picked) macs = macs.filter((mac) => mac === picked);
  macs.sort((a, b) => {
    const last = (mac) => groups.get(mac)[groups.get(mac).length - 1].seq;
    return last(b) - last(a);
  });
  const box = $("#timeline");
  if (macs.length === 0) {
    box.replaceChildren(el("p", { class: "muted",
      text: picked ? "No boot events for " + picked + " yet." : "No boot events yet." }));
    return;
  }
  box.replaceChildren(...macs.map((mac) => machineTimeline(mac, groups.get(mac),
                                                           picked ? 200 : EVENTS_SHOWN)));
  // Newest at the bottom, in view.
  for (const list of box.querySelectorAll("ol.events")) list.scrollTop = list.scrollHeight;
}

function machineTimeline(mac, events, limit) {
  const steps = latestBoot(events);
  const last = events[events.length - 1];
  const ip = [...events].reverse().find((e) => e.ip);
  const strip = el("ol", { class: "steps" }, ...STEPS.map(([key, name]) => {
    const seen = steps[key];
    const cls = "step " + (seen ? (seen.failed ? "failed" : "done") : "todo");
    return el("li", { class: cls, dataset: { step: key }, title: seen ? shown(seen.detail) : "" },
      el("span", { class: "name", text: name }),
      el("span", { class: "when", text: seen ? clockTime(seen.time) : "·" }));
  }));
  const list = el("ol", { class: "events" }, ...events.slice(-limit).map((e) =>
    el("li", { class: "event" + (FAILED_STAGES.has(e.stage) ? " failed" : ""),
               dataset: { seq: e.seq, stage: e.stage } },
      el("time", { text: clockTime(e.time) }),
      el("span", { class: "stage", text: e.stage }),
      el("span", { class: "detail", text: e.detail || "" }))));
  return el("article", { class: "machine-timeline", dataset: { mac: mac || "none" } },
    el("div", { class: "timeline-head" },
      el("code", { class: "mac", text: mac || "(no MAC)" }),
      ip ? el("span", { class: "muted", text: ip.ip }) : null,
      el("span", { class: "muted", text: "last: " + clockTime(last.time) })),
    strip, list);
}

function updateMachinePicker(groups) {
  const select = $("#timeline-mac");
  const macs = new Set(state.machines.map((m) => m.mac));
  for (const mac of (groups || byMac()).keys()) if (mac) macs.add(mac);
  const have = new Set([...select.options].map((o) => o.value));
  for (const mac of [...macs].sort()) {
    if (!have.has(mac)) select.append(el("option", { value: mac, text: mac }));
  }
}

function pickMachine(mac) {
  updateMachinePicker();
  $("#timeline-mac").value = mac;
  renderTimeline();
  $("#timeline-section").scrollIntoView({ behavior: "smooth", block: "start" });
}

async function catchUp() {
  let data;
  try {
    data = await api("GET", "events?after=" + state.lastSeq);
  } catch (error) {
    return;
  }
  if (data.last < state.lastSeq) {
    // The server restarted and numbers its events from 1 again.
    state.events.clear();
    state.lastSeq = 0;
    return catchUp();
  }
  eventsArrived(data.events.filter(addEvent).length);
}

function setLive(on, text) {
  const live = $("#live");
  live.className = "live " + (on ? "on" : "off");
  live.textContent = text || (on ? "live" : "reconnecting…");
}

function followEvents() {
  if (!window.EventSource) {
    setLive(false, "polling");
    setInterval(catchUp, 3000);
    catchUp();
    return;
  }
  const source = new EventSource(new URL("events", ROOT));
  state.liveSource = source;
  source.addEventListener("open", () => { setLive(true); catchUp(); });
  source.addEventListener("message", (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch (error) { return; }
    eventsArrived(addEvent(event) ? 1 : 0);
  });
  source.addEventListener("error", () => { setLive(false); });
}

// -- start --------------------------------------------------------------------------------

function start() {
  setUpToken();
  $("#refresh").addEventListener("click", rescan);
  $("#machines-more").addEventListener("click", moreMachines);
  $("#timeline-mac").addEventListener("change", renderTimeline);
  loadHealth();
  loadCatalog();
  loadMachines();
  loadLeases();
  followEvents();
  setInterval(() => {
    loadMachines(); loadLeases(); loadHealth();
    if (!catalogBeingEdited()) loadCatalog();  // changes made elsewhere (the CLI) show up
  }, 10000);
}

document.addEventListener("DOMContentLoaded", start);
