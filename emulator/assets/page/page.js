// The emulator page's behaviour: lists things, printers and samples, sends the page's print
// and scale jobs with the page token, and polls the jobs API once a second to show each job's
// state and, once a print job succeeded, the labels the printer simulator printed for it.
// Everything is built with DOM calls and textContent, never HTML strings, so that nothing a
// job or a device reports can become markup.
"use strict";

const token = document.querySelector('meta[name="devicehub-page-token"]').content;
const $ = (id) => document.getElementById(id);
// Label lists of finished jobs do not change: fetched once per job.
const labelsShown = new Map();

function say(text, isError) {
  const message = $("message");
  message.textContent = text;
  message.className = isError ? "error" : "";
}

async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) {
    throw new Error(`${path}: ${response.status} ${await errorText(response)}`);
  }
  return response.json();
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.message || body.error || "";
  } catch (_) {
    return "";
  }
}

async function post(path, body, contentType) {
  const headers = { "x-devicehub-page-token": token };
  if (contentType) headers["Content-Type"] = contentType;
  const response = await fetch(path, { method: "POST", headers, body });
  if (!response.ok) {
    throw new Error(`${response.status} ${await errorText(response)}`);
  }
  return response.json();
}

function option(value, text) {
  const element = document.createElement("option");
  element.value = value;
  element.textContent = text;
  return element;
}

// Replaces a select's options after its first (fixed) ones, keeping the selection.
function fill(select, keep, options) {
  const chosen = select.value;
  while (select.options.length > keep) select.remove(keep);
  for (const [value, text] of options) select.add(option(value, text));
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
}

function thing() {
  return $("thing").value;
}

async function refreshThings() {
  const things = await getJson("/things");
  fill($("thing"), 0, things.map((t) => [t.thingName, t.thingName]));
  const current = things.find((t) => t.thingName === thing());
  $("thing-state").textContent = !current
    ? "No thing is registered yet."
    : current.connected === true
      ? "connected"
      : current.connected === false
        ? "disconnected"
        : "";
}

async function refreshPrinters() {
  const printers = await getJson("/printers");
  fill($("device"), 1, printers.map((p) => [p.name, `${p.name} (${p.family} ${p.model})`]));
}

async function loadSamples() {
  const samples = await getJson("/page/samples");
  fill($("sample"), 1, samples.map((s) => [s.name, s.title]));
  if (samples.length > 0) $("sample").value = samples[0].name;
}

function describe(job) {
  const doc = job.jobDocument || {};
  if (doc.operation === "scale.read") return "scale reading";
  const file = doc.file || {};
  const parts = [`print ${file.format || ""}`.trim()];
  if (doc.kind) parts.push(doc.kind);
  if (doc.copies) parts.push(`${doc.copies} ${doc.copies === 1 ? "copy" : "copies"}`);
  if (doc.device) parts.push(`on ${doc.device}`);
  return parts.join(", ");
}

function details(job) {
  const entries = Object.entries(job.statusDetails || {});
  return entries.map(([key, value]) => `${key}: ${value}`).join("; ");
}

async function showLabels(job, item) {
  if (labelsShown.has(job.jobId)) {
    item.append(labelsShown.get(job.jobId));
    return;
  }
  const box = document.createElement("div");
  box.className = "labels";
  try {
    const found = await getJson(
      `/page/things/${encodeURIComponent(job.thingName)}/jobs/${encodeURIComponent(job.jobId)}/labels`);
    if (!found.knownPrinter) {
      box.textContent = `Printed on ${found.device}, which the emulator has no simulator for.`;
    }
    for (const label of found.labels) {
      const image = document.createElement("img");
      image.src = label.png;
      image.alt = `Label ${label.index} printed on ${found.device}, ${label.width} x ${label.height} dots`;
      box.append(image);
    }
  } catch (error) {
    box.textContent = `The labels could not be fetched: ${error.message}`;
  }
  labelsShown.set(job.jobId, box);
  item.append(box);
}

async function refreshJobs() {
  const list = $("jobs");
  if (!thing()) {
    list.replaceChildren();
    return;
  }
  const jobs = await getJson(`/things/${encodeURIComponent(thing())}/jobs`);
  const items = [];
  for (const job of jobs.reverse()) {
    const item = document.createElement("li");
    const status = document.createElement("span");
    status.className = `status ${job.status}`;
    status.textContent = job.status;
    const what = document.createElement("span");
    what.textContent = ` ${job.jobId}: ${describe(job)} `;
    const more = document.createElement("div");
    more.className = "details";
    more.textContent = details(job);
    item.append(status, what, more);
    if (job.status === "SUCCEEDED" && job.jobDocument && job.jobDocument.operation === "print") {
      await showLabels(job, item);
    }
    items.push(item);
  }
  list.replaceChildren(...items);
}

async function refresh() {
  try {
    await refreshThings();
    await refreshPrinters();
    await refreshJobs();
  } catch (error) {
    say(`Updating failed: ${error.message}`, true);
  }
}

$("print-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!thing()) return say("No thing to send the job to.", true);
  const query = new URLSearchParams({ copies: $("copies").value });
  for (const field of ["device", "kind"]) if ($(field).value) query.set(field, $(field).value);
  const file = $("file").files[0];
  let body = null;
  let contentType = null;
  if (file) {
    body = file;
    contentType = "application/octet-stream";
  } else if ($("sample").value) {
    query.set("sample", $("sample").value);
  } else {
    return say("Choose a sample or a file.", true);
  }
  try {
    const created = await post(
      `/page/things/${encodeURIComponent(thing())}/print-jobs?${query}`, body, contentType);
    say(`Print job ${created.jobId} sent.`, false);
    $("file").value = "";
    await refreshJobs();
  } catch (error) {
    say(`The print job was refused: ${error.message}`, true);
  }
});

$("scale-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (!thing()) return say("No thing to send the job to.", true);
  const body = $("unit").value ? JSON.stringify({ unit: $("unit").value }) : "";
  try {
    const created = await post(
      `/page/things/${encodeURIComponent(thing())}/scale-requests`, body, body ? "application/json" : null);
    say(`Scale reading ${created.jobId} requested.`, false);
    await refreshJobs();
  } catch (error) {
    say(`The scale reading was refused: ${error.message}`, true);
  }
});

$("thing").addEventListener("change", () => refreshJobs().catch((e) => say(e.message, true)));

loadSamples().catch((error) => say(`Loading the samples failed: ${error.message}`, true));
refresh().then(() => setInterval(refresh, 1000));
