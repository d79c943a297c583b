// DeviceHub's local pages: the registration form with its live progress, and the status page
// with live scale readings, devices and jobs. Plain browser JavaScript, no libraries: the
// pages load nothing from anywhere but this computer.
"use strict";

(function () {
  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;

  function el(id) {
    return document.getElementById(id);
  }

  // Builds an element with text only: values from the agent never become HTML.
  function make(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  async function getJson(path) {
    const response = await fetch(path, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(path + " answered " + response.status);
    return response.json();
  }

  function deviceLine(device) {
    const model = device.model || device.profile;
    return device.id + ": " + model + " (" + device.kind + ", plugin " + device.plugin + " " + device.plugin_version + ")";
  }

  // ---- Registration ----

  // The four steps the page shows; the agent's other steps (claim session, identity stored)
  // happen between them.
  const shownSteps = ["keyGenerated", "certificateIssued", "thingRegistered", "connected"];

  function showSteps(progress) {
    const reached = new Set(progress.steps.map((s) => s.step));
    let activeMarked = false;
    for (const name of shownSteps) {
      const item = document.querySelector('#steps li[data-step="' + name + '"]');
      const state = item.querySelector(".state");
      item.classList.remove("done", "active");
      if (reached.has(name)) {
        item.classList.add("done");
        state.textContent = "done";
      } else if (progress.state === "running" && !activeMarked) {
        item.classList.add("active");
        state.textContent = "in progress";
        activeMarked = true;
      } else {
        state.textContent = progress.state === "failed" ? "not reached" : "waiting";
      }
    }
  }

  function showFailure(title, next, detail) {
    el("failure-title").textContent = title;
    el("failure-next").textContent = next;
    el("failure-detail").textContent = detail || "";
    el("failure").hidden = false;
  }

  async function showDone(progress) {
    el("done-thing").textContent = progress.thingName || "";
    const list = el("done-devices");
    list.replaceChildren();
    try {
      const status = await getJson("/api/status");
      for (const device of status.devices) list.append(make("li", deviceLine(device)));
      el("done-no-devices").hidden = status.devices.length > 0;
    } catch (e) {
      el("done-no-devices").hidden = false;
    }
    // The code is spent: the form has nothing more to offer.
    el("register-form").hidden = true;
    el("done").hidden = false;
    el("done-title").focus();
  }

  async function followRegistration() {
    for (;;) {
      let progress;
      try {
        progress = await getJson("/api/register/progress");
      } catch (e) {
        showFailure("DeviceHub stopped answering.",
          "Check that DeviceHub is still running on this computer, then reload this page.", String(e));
        break;
      }
      showSteps(progress);
      if (progress.state === "done") {
        await showDone(progress);
        break;
      }
      if (progress.state === "failed") {
        const f = progress.failure;
        showFailure(f.title, f.next, f.detail);
        el("submit").disabled = false;
        el("code").focus();
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 400));
    }
  }

  function setUpRegistration() {
    const form = el("register-form");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      el("failure").hidden = true;
      const code = el("code").value.trim();
      if (code === "") {
        showFailure("No activation code was entered.",
          "Type the activation code the shipping application shows, then press Register.", "");
        el("code").focus();
        return;
      }
      el("submit").disabled = true;
      let response;
      try {
        response = await fetch("/api/register", {
          method: "POST",
          headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken },
          body: JSON.stringify({ activationCode: code }),
        });
      } catch (e) {
        showFailure("DeviceHub did not answer.",
          "Check that DeviceHub is running on this computer, then try again.", String(e));
        el("submit").disabled = false;
        return;
      }
      if (response.status === 202) {
        el("progress").hidden = false;
        await followRegistration();
        return;
      }
      let message = "";
      try {
        message = (await response.json()).message;
      } catch (e) {
        message = await response.text().catch(() => "");
      }
      if (response.status === 409) {
        showFailure("Registration is already done or under way.",
          "Open the status page to see where it stands.", message);
      } else {
        showFailure("The registration could not start.",
          "Reload this page and try again.", message);
      }
      el("submit").disabled = false;
    });
  }

  // ---- Status ----

  const linkWords = {
    "connected": ["Connected", "good"],
    "connecting": ["Connecting", ""],
    "reconnecting": ["Not connected, retrying", "bad"],
    "stopped": ["Stopped", "bad"],
    "not registered": ["Not registered", "bad"],
  };

  function duration(seconds) {
    const h = Math.floor(seconds / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    if (h > 0) return h + " h " + m + " min";
    if (m > 0) return m + " min";
    return seconds + " s";
  }

  function time(epochSeconds) {
    return epochSeconds ? new Date(epochSeconds * 1000).toLocaleString() : "";
  }

  function showStatus(status) {
    const [words, tone] = linkWords[status.link.state] || [status.link.state, ""];
    const badge = el("link-state");
    badge.textContent = words;
    badge.className = "badge " + tone;
    el("link-detail").textContent = status.link.detail || "";
    el("thing-name").textContent = status.thingName || "not registered";
    el("not-registered").hidden = Boolean(status.thingName);
    el("agent-version").textContent = status.agentVersion;
    el("uptime").textContent = duration(status.uptimeS);
    if (status.upgradeAvailable) {
      el("upgrade").textContent = "A newer DeviceHub is available: " + JSON.stringify(status.upgradeAvailable);
      el("upgrade").hidden = false;
    }

    const devices = el("devices").tBodies[0];
    devices.replaceChildren();
    for (const device of status.devices) {
      const row = make("tr");
      row.dataset.device = device.id;
      row.append(make("td", device.id), make("td", device.kind), make("td", device.model || device.profile),
        make("td", device.plugin + " " + device.plugin_version), make("td", "attached"));
      devices.append(row);
    }
    for (const problem of status.deviceProblems) {
      const row = make("tr");
      row.dataset.device = problem.id;
      row.append(make("td", problem.id), make("td", ""), make("td", ""), make("td", ""),
        make("td", "not attached: " + problem.reason, "problem"));
      devices.append(row);
    }
    el("no-devices").hidden = devices.rows.length > 0;

    const jobs = el("jobs").tBodies[0];
    jobs.replaceChildren();
    for (const job of status.recentJobs) {
      const row = make("tr");
      row.append(make("td", job.jobId), make("td", job.status), make("td", time(job.at)));
      jobs.append(row);
    }
    el("no-jobs").hidden = jobs.rows.length > 0;

    const plugins = el("plugins");
    plugins.replaceChildren();
    for (const plugin of status.plugins) {
      plugins.append(make("li", plugin.name + " " + plugin.version + " (" + plugin.kind + "), " + plugin.approvalDetail));
    }
    el("unsigned-allowed").hidden = !status.unsignedPluginsAllowed;
    const refused = el("refused");
    refused.replaceChildren();
    for (const r of status.refusedPlugins) refused.append(make("li", r.file + " was not loaded: " + r.reason));
  }

  function showReading(event) {
    const r = event.reading;
    const units = { mg: 1e3, g: 1e6, kg: 1e9, oz: 28349523.125, lb: 453592370 };
    const perUnit = units[r.displayUnit] || 1e6;
    const decimals = Math.max(0, Math.ceil(-Math.log10(r.resolutionMicrograms / perUnit) - 1e-9));
    const value = (r.micrograms / perUnit).toFixed(decimals);
    el("scale-reading").textContent = event.device + ": " + value + " " + r.displayUnit + " (" + r.state + ")";
  }

  async function refreshStatus() {
    try {
      showStatus(await getJson("/api/status"));
      el("load-error").hidden = true;
    } catch (e) {
      el("load-error").textContent = "DeviceHub is not answering. Check that it is running on this computer; this page keeps trying.";
      el("load-error").hidden = false;
    }
  }

  function setUpStatus() {
    refreshStatus();
    // The connection state has no event of its own: look again every few seconds.
    setInterval(refreshStatus, 5000);
    const events = new EventSource("/api/events");
    events.addEventListener("scale", (e) => showReading(JSON.parse(e.data)));
    for (const name of ["device", "job", "lagged"]) events.addEventListener(name, refreshStatus);
  }

  const page = document.body.dataset.page;
  if (page === "register") setUpRegistration();
  if (page === "status") setUpStatus();
})();
