// napster's page: talks to the daemon's API (docs/API.md) with the cookie the printed
// address set, and follows /api/events. Names come from the network: they are only ever
// put in the page as text (textContent), never as HTML.
"use strict";

const $ = (selector) => document.querySelector(selector);
const CHART_SECONDS = 120;
const SPARK_SECONDS = 60;

const state = {
  hits: [],
  sort: { key: "sources", descending: true },
  transfers: new Map(),
  history: new Map(), // transfer number -> [[time, rate]]
  total: [], // [[time, rate]] for the whole process
  uploads: new Map(),
};

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function size(bytes) {
  if (bytes === null || bytes === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let n = bytes, i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
}

function rate(bytes) {
  return bytes === null || bytes === undefined ? "" : size(Math.round(bytes)) + "/s";
}

function duration(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  seconds = Math.round(seconds);
  if (seconds < 60) return seconds + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
  return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
}

function notice(text) {
  const node = $("#notice");
  node.textContent = text || "";
  node.hidden = !text;
}

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const text = await response.text();
  const value = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const message = value && value.error ? value.error.message : response.statusText;
    if (response.status === 401) {
      notice("Not signed in: open the address `napster daemon` printed (it ends in ?token=…).");
    }
    throw new Error(message);
  }
  return { value, response };
}

// ---- search ------------------------------------------------------------------------

function groups(hits) {
  const bySha = new Map();
  for (const hit of hits) {
    let group = bySha.get(hit.sha256);
    if (!group) {
      group = { name: hit.name, size: hit.size, sha256: hit.sha256, peers: [] };
      bySha.set(hit.sha256, group);
    }
    group.peers.push(hit);
  }
  return [...bySha.values()];
}

function sortedGroups() {
  const list = groups(state.hits);
  const { key, descending } = state.sort;
  const value = (g) => (key === "sources" ? g.peers.length : g[key]);
  list.sort((a, b) => {
    const x = value(a), y = value(b);
    const order = typeof x === "string" ? x.localeCompare(y) : x - y;
    return descending ? -order : order;
  });
  return list;
}

function peerName(hit) {
  return hit.nickname ? hit.nickname + " (" + hit.peer_id + ")" : "peer " + hit.peer_id;
}

function renderResults() {
  const body = $("#results tbody");
  body.replaceChildren();
  for (const group of sortedGroups()) {
    const row = el("tr");
    const name = el("td", group.name, "name");
    name.title = group.peers.map(peerName).join(", ");
    row.append(name, el("td", size(group.size), "num"));
    const sources = el("td", group.peers.length, "num");
    sources.title = group.peers.map((h) => peerName(h) + " at " + h.addr).join("\n");
    row.append(sources, el("td", group.sha256.slice(0, 16) + "…", "wide mono"));
    const cell = el("td");
    const button = el("button", "Download");
    button.type = "button";
    button.setAttribute("aria-label", "Download " + group.name);
    button.addEventListener("click", () => download(group, button));
    cell.append(button);
    row.append(cell);
    body.append(row);
  }
  for (const button of document.querySelectorAll("#results th button")) {
    const active = button.dataset.sort === state.sort.key;
    button.parentElement.setAttribute("aria-sort", active ? (state.sort.descending ? "descending" : "ascending") : "none");
  }
}

async function search(event) {
  event.preventDefault();
  const words = [$("#q").value.trim()];
  if ($("#min").value.trim()) words.push(">" + $("#min").value.trim());
  if ($("#max").value.trim()) words.push("<" + $("#max").value.trim());
  $("#search-info").textContent = "searching…";
  try {
    const { value, response } = await api("GET", "/api/search?limit=500&q=" + encodeURIComponent(words.join(" ")));
    state.hits = value;
    const total = response.headers.get("x-total-count");
    const shown = groups(value).length;
    $("#search-info").textContent = value.length === 0 ? "nothing matched"
      : shown + " files from " + value.length + " sources" + (total && Number(total) > value.length ? " (first " + value.length + " of " + total + " matches)" : "");
    renderResults();
    notice("");
  } catch (e) {
    $("#search-info").textContent = "";
    notice("Search failed: " + e.message);
  }
}

async function download(group, button) {
  button.disabled = true;
  try {
    await api("POST", "/api/downloads", { file: "sha256:" + group.sha256 });
    button.textContent = "Queued";
    notice("");
    refreshTransfers();
  } catch (e) {
    button.disabled = false;
    notice("Download of " + group.name + " failed: " + e.message);
  }
}

// ---- transfers ---------------------------------------------------------------------

function sparkline(points) {
  const svgNs = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNs, "svg");
  svg.setAttribute("viewBox", "0 0 100 24");
  svg.setAttribute("class", "spark");
  svg.setAttribute("aria-hidden", "true");
  const now = Date.now() / 1000;
  const peak = Math.max(1, ...points.map((p) => p[1]));
  const line = points
    .map((p) => [100 - ((now - p[0]) / SPARK_SECONDS) * 100, 23 - (p[1] / peak) * 22])
    .map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1))
    .join(" ");
  const path = document.createElementNS(svgNs, "polyline");
  path.setAttribute("points", line);
  svg.append(path);
  return svg;
}

function actionButton(label, transfer, action) {
  const button = el("button", label);
  button.type = "button";
  button.setAttribute("aria-label", label + " download " + transfer.transfer + " (" + transfer.name + ")");
  button.addEventListener("click", async () => {
    try {
      await api("POST", "/api/downloads/" + transfer.transfer + "/" + action);
      refreshTransfers();
    } catch (e) {
      notice(label + " failed: " + e.message);
    }
  });
  return button;
}

function stateText(t) {
  if (t.state === "waiting" && t.position) return "waiting, #" + t.position + " in line at peer " + t.waiting_at;
  return t.state;
}

// Rows are made once and updated in place: a button that has the keyboard's focus
// keeps it while progress arrives.
function transferRow(t) {
  const row = el("tr");
  row.dataset.transfer = t.transfer;
  const parts = {
    number: el("td", t.transfer, "num"), name: el("td", t.name, "name"),
    progress: el("td", null, "progress"), rate: el("td", "", "num"), spark: el("td", null, "wide"),
    eta: el("td", "", "num"), peers: el("td", "", "num"), state: el("td", "", "state"),
    actions: el("td", null, "actions"),
  };
  row.append(...Object.values(parts));
  parts.bar = el("progress");
  parts.percent = el("span", "", "percent");
  parts.progress.append(parts.bar, parts.percent);
  row.parts = parts;
  return row;
}

function updateRow(row, t) {
  const p = row.parts;
  p.bar.max = Math.max(1, t.size);
  p.bar.value = t.done;
  const percent = t.size ? Math.floor((t.done * 100) / t.size) : 100;
  p.bar.textContent = percent + " %";
  p.percent.textContent = percent + " %";
  p.progress.title = size(t.done) + " of " + size(t.size);
  p.rate.textContent = rate(t.rate);
  p.spark.replaceChildren(sparkline(state.history.get(t.transfer) || []));
  p.eta.textContent = duration(t.eta_seconds);
  p.peers.textContent = t.peers || "";
  p.state.textContent = stateText(t);
  p.state.title = t.detail;
  if (row.dataset.state === t.state) return;
  row.dataset.state = t.state;
  const hadFocus = p.actions.contains(document.activeElement);
  p.actions.replaceChildren();
  if (["running", "waiting", "queued"].includes(t.state)) p.actions.append(actionButton("Pause", t, "pause"));
  if (["paused", "failed"].includes(t.state)) p.actions.append(actionButton("Resume", t, "resume"));
  if (["running", "waiting", "queued", "paused", "failed"].includes(t.state)) p.actions.append(actionButton("Cancel", t, "cancel"));
  if (hadFocus) (p.actions.querySelector("button") || $("#clear")).focus();
}

function renderTransfers() {
  const body = $("#transfers tbody");
  const shown = new Map([...body.children].map((r) => [Number(r.dataset.transfer), r]));
  for (const [number, row] of shown) if (!state.transfers.has(number)) row.remove();
  const rows = [...state.transfers.values()].sort((a, b) => a.transfer - b.transfer);
  for (const t of rows) {
    let row = shown.get(t.transfer);
    if (!row) { row = transferRow(t); body.append(row); }
    updateRow(row, t);
  }
}

function remember(t) {
  const now = Date.now() / 1000;
  const points = state.history.get(t.transfer) || [];
  points.push([now, t.rate || 0]);
  while (points.length && now - points[0][0] > SPARK_SECONDS) points.shift();
  state.history.set(t.transfer, points);
  state.transfers.set(t.transfer, t);
}

function sample() {
  const now = Date.now() / 1000;
  let total = 0;
  for (const t of state.transfers.values()) if (t.state === "running") total += t.rate || 0;
  state.total.push([now, total]);
  while (state.total.length && now - state.total[0][0] > CHART_SECONDS) state.total.shift();
  drawChart();
  $("#chart-caption").textContent = "download rate: " + rate(total);
}

function drawChart() {
  const canvas = $("#chart");
  const width = canvas.clientWidth || 600;
  if (canvas.width !== width) canvas.width = width;
  const ctx = canvas.getContext("2d");
  const height = canvas.height;
  ctx.clearRect(0, 0, width, height);
  const styles = getComputedStyle(document.body);
  ctx.strokeStyle = styles.getPropertyValue("--accent") || "#2a7";
  ctx.fillStyle = styles.getPropertyValue("--muted") || "#888";
  ctx.font = "11px sans-serif";
  const peak = Math.max(1, ...state.total.map((p) => p[1]));
  ctx.fillText(rate(peak), 4, 12);
  const now = Date.now() / 1000;
  ctx.beginPath();
  state.total.forEach((p, i) => {
    const x = width - ((now - p[0]) / CHART_SECONDS) * width;
    const y = height - 2 - (p[1] / peak) * (height - 18);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.lineWidth = 2;
  ctx.stroke();
}

async function refreshTransfers() {
  try {
    const { value } = await api("GET", "/api/downloads");
    const seen = new Set();
    for (const t of value) { remember(t); seen.add(t.transfer); }
    for (const n of [...state.transfers.keys()]) if (!seen.has(n)) state.transfers.delete(n);
    renderTransfers();
  } catch (e) { /* the notice says why */ }
}

// ---- uploads, shares, status -------------------------------------------------------

function renderUploads() {
  const body = $("#uploads tbody");
  body.replaceChildren();
  for (const u of state.uploads.values()) {
    const row = el("tr");
    row.append(el("td", u.peer_id, "num"), el("td", u.addr), el("td", u.name, "name"),
      el("td", size(u.sent) + " of " + size(u.size), "num"), el("td", rate(u.rate), "num"),
      el("td", u.position || "", "num"));
    body.append(row);
  }
}

async function refreshUploads() {
  try {
    const { value } = await api("GET", "/api/uploads");
    state.uploads = new Map(value.map((u) => [u.peer_id + " " + u.name, u]));
    renderUploads();
  } catch (e) { /* the notice says why */ }
}

function renderShare(sharing) {
  const list = $("#folders");
  list.replaceChildren();
  if (!sharing) { list.append(el("li", "not sharing yet (the index may not answer)")); return; }
  for (const folder of sharing.folders) {
    const item = el("li");
    item.append(el("span", folder, "mono"));
    const button = el("button", "Stop sharing");
    button.type = "button";
    button.setAttribute("aria-label", "Stop sharing " + folder);
    button.addEventListener("click", async () => {
      try { await api("DELETE", "/api/shares", { dir: folder }); refreshStatus(); }
      catch (e) { notice("Unshare failed: " + e.message); }
    });
    item.append(button);
    list.append(item);
  }
}

function renderStatus(status) {
  const list = $("#status");
  list.replaceChildren();
  const add = (term, value) => { list.append(el("dt", term), el("dd", value)); };
  const s = status.sharing;
  if (s) {
    add("Peer", (s.nickname ? s.nickname + " " : "") + "#" + s.peer_id + ", " + s.files + " files, " + size(s.bytes));
    add("Index", s.index + (s.connected ? " (connected)" : " (reconnecting)"));
    add("Reachable", s.reachable === null ? "not checked" : s.reachable ? "yes, at " + s.observed : "no: behind a NAT (reverse connections, hole punching, relay)");
    add("Port mapping", s.port_mapping);
  }
  for (const line of status.status) {
    const [term, ...rest] = line.split(": ");
    if (rest.length && ["identity", "downloads", "index server"].includes(term)) add(term[0].toUpperCase() + term.slice(1), rest.join(": "));
  }
  if (status.limits) {
    add("Limits", "up " + (status.limits.upload ? rate(status.limits.upload) : "none") + ", down " + (status.limits.download ? rate(status.limits.download) : "none"));
  }
  add("Version", status.version);
  renderShare(s);
  const summary = s ? "peer #" + s.peer_id + " · " + s.files + " files shared · " + (s.connected ? "index connected" : "index not answering") : "not sharing yet";
  $("#summary").textContent = summary;
}

async function refreshStatus() {
  try {
    const { value } = await api("GET", "/api/status");
    renderStatus(value);
  } catch (e) { /* the notice says why */ }
}

async function share(event) {
  event.preventDefault();
  try {
    await api("POST", "/api/shares", { dir: $("#share-dir").value.trim() });
    $("#share-dir").value = "";
    refreshStatus();
  } catch (e) { notice("Share failed: " + e.message); }
}

async function limits(event) {
  event.preventDefault();
  const body = {};
  if ($("#up").value.trim()) body.upload = $("#up").value.trim();
  if ($("#down").value.trim()) body.download = $("#down").value.trim();
  try { await api("PUT", "/api/limits", body); refreshStatus(); notice(""); }
  catch (e) { notice("Limits: " + e.message); }
}

function follow() {
  const events = new EventSource("/api/events");
  const onTransfer = (event) => { remember(JSON.parse(event.data)); renderTransfers(); };
  events.addEventListener("transfer", onTransfer);
  events.addEventListener("state", onTransfer);
  events.addEventListener("removed", (event) => {
    const gone = JSON.parse(event.data).transfer;
    state.transfers.delete(gone);
    state.history.delete(gone);
    renderTransfers();
  });
  const onUpload = (event) => { const u = JSON.parse(event.data); state.uploads.set(u.peer_id + " " + u.name, u); renderUploads(); };
  events.addEventListener("upload_started", onUpload);
  events.addEventListener("upload", onUpload);
  events.addEventListener("upload_ended", (event) => { const u = JSON.parse(event.data); state.uploads.delete(u.peer_id + " " + u.name); renderUploads(); });
  events.addEventListener("share", () => refreshStatus());
  events.addEventListener("reach", () => refreshStatus());
  events.addEventListener("hello", () => { document.body.dataset.live = "yes"; });
}

document.addEventListener("DOMContentLoaded", () => {
  $("#search-form").addEventListener("submit", search);
  $("#share-form").addEventListener("submit", share);
  $("#limits-form").addEventListener("submit", limits);
  $("#clear").addEventListener("click", async () => {
    try { await api("DELETE", "/api/downloads"); refreshTransfers(); } catch (e) { notice("Clear failed: " + e.message); }
  });
  for (const button of document.querySelectorAll("#results th button")) {
    button.addEventListener("click", () => {
      const key = button.dataset.sort;
      state.sort = { key, descending: state.sort.key === key ? !state.sort.descending : key !== "name" };
      renderResults();
    });
  }
  document.addEventListener("keydown", (event) => {
    if (event.key === "/" && document.activeElement.tagName !== "INPUT") { event.preventDefault(); $("#q").focus(); }
  });
  refreshStatus();
  refreshTransfers();
  refreshUploads();
  follow();
  setInterval(sample, 1000);
  // The canvas is drawn at its displayed width: drawn again when that changes.
  window.addEventListener("resize", drawChart);
});
