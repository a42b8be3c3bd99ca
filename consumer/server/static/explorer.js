// The explorer: every value from a dataset goes into the page as text (textContent), never as HTML.
"use strict";

const $ = (selector) => document.querySelector(selector);
const state = { dataset: null, versionsCursor: null, changesVersion: null, changesCursor: null,
  diffQuery: null, diffCursor: null, historyKey: null, historyCursor: null };

// A server started with bearer tokens answers 401: the page then asks for one and keeps it for this tab only.
const TOKEN_KEY = "combe-token";

async function api(path, options) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, Object.assign({ headers }, options));
  const body = await response.json();
  if (response.status === 401) $("#auth").hidden = false;
  if (!response.ok) {
    const error = new Error(body.error ? body.error.message : response.statusText);
    error.status = response.status;
    throw error;
  }
  return body;
}

function datasetPath(suffix) {
  return "v1/datasets/" + encodeURIComponent(state.dataset) + suffix;
}

function say(text, isError) {
  const status = $("#status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  return td;
}

// A record as JSON text with one field per line and each value compact, so a nested list or object stays
// on its field's line (wrapped when long) instead of spreading over a line per item; it copies as JSON.
function recordJson(record) {
  const fields = Object.entries(record).map(([field, value]) => "  " + JSON.stringify(field) + ": " + JSON.stringify(value));
  return "{\n" + fields.join(",\n") + "\n}";
}

function recordCell(row, record) {
  const td = row.insertCell();
  if (record !== null && record !== undefined) {
    const code = document.createElement("code");
    code.textContent = recordJson(record);
    td.appendChild(code);
  }
  return td;
}

async function loadDatasets() {
  const body = await api("v1/datasets");
  const select = $("#dataset");
  select.replaceChildren();
  for (const entry of body.datasets) {
    const option = document.createElement("option");
    option.value = entry.name;
    option.textContent = entry.ready ? entry.name : entry.name + " (loading)";
    select.appendChild(option);
  }
  if (body.datasets.length) {
    await chooseDataset(body.datasets[0].name);
  } else {
    say("this server serves no dataset");
  }
}

async function chooseDataset(name) {
  state.dataset = name;
  $("#dataset").value = name;
  $("#record").hidden = true;
  $("#lookup-message").textContent = "";
  $("#changes-panel").hidden = true;
  $("#key-history-panel").hidden = true;
  $("#diff").hidden = true;
  $("#more-diff").hidden = true;
  $("#diff-summary").textContent = "";
  try {
    await Promise.all([showSummary(), showVersions(true)]);
    say("");
    document.body.dataset.dataset = name;
  } catch (error) {
    say(error.message, true);
  }
}

async function showSummary() {
  const info = await api(datasetPath(""));
  const facts = $("#facts");
  facts.replaceChildren();
  const add = (term, value) => {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    facts.append(dt, dd);
  };
  add("version", info.version + (info.announced > info.version ? " (announced " + info.announced + ")" : ""));
  add("records", info.records.toLocaleString());
  add("key", info.key.field + " (" + info.key.type + ")");
  add("queryable", info.queryable.join(", "));
  add("created", info.created_at);
  if (Object.keys(info.tags).length) add("tags", tagText(info.tags));
  add("checked", info.staleness.seconds_since_check === null ? "never" : info.staleness.seconds_since_check + " s ago");
  if (info.staleness.last_error) add("last error", info.staleness.last_error);
  const tbody = $("#schema tbody");
  tbody.replaceChildren();
  for (const column of info.schema) {
    const row = tbody.insertRow();
    cell(row, column.name);
    cell(row, column.type);
  }
  $("#key").placeholder = info.key.field + " (" + info.key.type + ")";
}

function tagText(tags) {
  return Object.entries(tags).map(([key, value]) => key + "=" + value).join(" ");
}

async function lookup(event) {
  event.preventDefault();
  const key = $("#key").value;
  const message = $("#lookup-message");
  const record = $("#record");
  message.className = "";
  try {
    const body = await api(datasetPath("/records/" + encodeURIComponent(key)));
    record.textContent = recordJson(body.record);
    record.hidden = false;
    message.textContent = "version " + body.version;
  } catch (error) {
    record.hidden = true;
    message.textContent = error.message;
    message.className = "error";
  }
}

async function showVersions(fromStart) {
  const tbody = $("#versions tbody");
  if (fromStart) {
    tbody.replaceChildren();
    state.versionsCursor = null;
  }
  const query = state.versionsCursor ? "?cursor=" + encodeURIComponent(state.versionsCursor) : "";
  const body = await api(datasetPath("/versions" + query));
  for (const entry of body.versions) {
    const row = tbody.insertRow();
    row.dataset.version = entry.version;
    cell(row, entry.version + (entry.version === body.version ? " (serving)" : ""));
    cell(row, entry.created_at);
    cell(row, entry.records);
    cell(row, entry.changes.added, "op-added");
    cell(row, entry.changes.updated, "op-updated");
    cell(row, entry.changes.removed, "op-removed");
    cell(row, tagText(entry.tags), "tags");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Changes";
    button.addEventListener("click", () => showChanges(entry.version, true));
    row.insertCell().appendChild(button);
  }
  state.versionsCursor = body.next_cursor;
  $("#more-versions").hidden = !body.next_cursor;
}

async function showChanges(version, fromStart) {
  const tbody = $("#changes tbody");
  if (fromStart) {
    tbody.replaceChildren();
    state.changesVersion = version;
    state.changesCursor = null;
    for (const row of document.querySelectorAll("#versions tbody tr")) {
      row.classList.toggle("selected", row.dataset.version === String(version));
    }
  }
  try {
    const query = state.changesCursor ? "?cursor=" + encodeURIComponent(state.changesCursor) : "";
    const body = await api(datasetPath("/versions/" + version + "/changes" + query));
    $("#changes-title").textContent = "Changes in version " + version;
    $("#changes-summary").textContent = "+" + body.counts.added + " added, ~" + body.counts.updated +
      " updated, -" + body.counts.removed + " removed" + (body.parent ? " since version " + body.parent : "");
    for (const change of body.changes) {
      const row = tbody.insertRow();
      cell(row, change.op, "op-" + change.op);
      cell(row, change.key);
      recordCell(row, change.before);
      recordCell(row, change.record);
    }
    state.changesCursor = body.next_cursor;
    $("#more-changes").hidden = !body.next_cursor;
    $("#changes-panel").hidden = false;
    document.body.dataset.changes = String(version);
    say("");
  } catch (error) {
    say(error.message, true);
  }
}

function useToken(event) {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
  $("#token").value = "";
  $("#auth").hidden = true;
  loadDatasets().catch((error) => say(error.message, true));
}

$("#auth").addEventListener("submit", useToken);

async function showKeyHistory(fromStart) {
  const tbody = $("#key-history tbody");
  const summary = $("#key-history-summary");
  if (fromStart) {
    tbody.replaceChildren();
    state.historyKey = $("#key").value;
    state.historyCursor = null;
  }
  summary.className = "";
  try {
    const query = state.historyCursor ? "?cursor=" + encodeURIComponent(state.historyCursor) : "";
    const body = await api(datasetPath("/history/" + encodeURIComponent(state.historyKey) + query));
    $("#key-history-title").textContent = "History of " + body.key;
    const gaps = body.removed_by_gc.map((gap) => gap.first === gap.last ? gap.first : gap.first + "-" + gap.last);
    summary.textContent = "up to version " + body.to +
      (gaps.length ? "; versions " + gaps.join(", ") + " were removed by gc" : "");
    for (const change of body.changes) {
      const row = tbody.insertRow();
      row.dataset.version = change.version;
      cell(row, change.version + (change.since && change.since !== change.version - 1 ? " (since " + change.since + ")" : ""));
      cell(row, change.op, "op-" + change.op);
      cell(row, change.created_at);
      recordCell(row, change.record);
    }
    if (fromStart && !body.changes.length) summary.textContent += ": the key never changed";
    state.historyCursor = body.next_cursor;
    $("#more-key-history").hidden = !body.next_cursor;
    $("#key-history-panel").hidden = false;
    document.body.dataset.history = state.historyKey;
  } catch (error) {
    summary.textContent = error.message;
    summary.className = "error";
    $("#key-history-panel").hidden = false;
  }
}

async function showDiff(event) {
  const fromStart = Boolean(event);
  if (event) event.preventDefault();
  const tbody = $("#diff tbody");
  const summary = $("#diff-summary");
  if (fromStart) {
    tbody.replaceChildren();
    const to = $("#diff-to").value;
    state.diffQuery = "?from=" + encodeURIComponent($("#diff-from").value) + (to ? "&to=" + encodeURIComponent(to) : "");
    state.diffCursor = null;
  }
  summary.className = "";
  try {
    const cursor = state.diffCursor ? "&cursor=" + encodeURIComponent(state.diffCursor) : "";
    const body = await api(datasetPath("/diff" + state.diffQuery + cursor));
    summary.textContent = "version " + body.from + " -> " + body.to + ": +" + body.counts.added + " added, ~" +
      body.counts.updated + " updated, -" + body.counts.removed + " removed (from the " +
      (body.method === "deltas" ? "deltas" : "two states") + ", " + body.bytes_read.toLocaleString() + " bytes read)";
    for (const change of body.changes) {
      const row = tbody.insertRow();
      cell(row, change.op, "op-" + change.op);
      cell(row, change.key);
      recordCell(row, change.before);
      recordCell(row, change.after);
    }
    state.diffCursor = body.next_cursor;
    $("#more-diff").hidden = !body.next_cursor;
    $("#diff").hidden = false;
    document.body.dataset.diff = body.from + "-" + body.to;
  } catch (error) {
    $("#diff").hidden = true;
    $("#more-diff").hidden = true;
    summary.textContent = error.message;
    summary.className = "error";
  }
}

$("#dataset").addEventListener("change", (event) => chooseDataset(event.target.value));
$("#show-history").addEventListener("click", () => { if ($("#key").reportValidity()) showKeyHistory(true); });
$("#more-key-history").addEventListener("click", () => showKeyHistory(false));
$("#compare").addEventListener("submit", showDiff);
$("#more-diff").addEventListener("click", () => showDiff(null));
$("#lookup").addEventListener("submit", lookup);
$("#more-versions").addEventListener("click", () => showVersions(false).catch((error) => say(error.message, true)));
$("#more-changes").addEventListener("click", () => showChanges(state.changesVersion, false));
loadDatasets().catch((error) => say(error.message, true));
