// Live progress over the API's Server-Sent Events (/v1/jobs/<id>/events): the same stream
// any client reads. No framework, no build step.
"use strict";

function follow(jobId, onData, onEnd) {
  const source = new EventSource(`/v1/jobs/${jobId}/events`);
  const handle = (event) => onData(event.type, JSON.parse(event.data));
  source.addEventListener("transition", handle);
  source.addEventListener("progress", handle);
  source.addEventListener("end", (event) => { source.close(); onEnd(JSON.parse(event.data)); });
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) onEnd(null); };
  return source;
}

function showProgress(bar, label, percent) {
  if (percent === null || percent === undefined) return;
  bar.value = percent;
  label.textContent = `${Math.round(percent)}%`;
}

function jobPage(card) {
  if (card.dataset.final === "1") return;
  const history = document.querySelector("#history tbody");
  const seen = history.rows.length;
  let count = 0;
  follow(card.dataset.job, (kind, data) => {
    document.getElementById("state").textContent = data.to_state || data.state;
    document.getElementById("step").textContent = data.step || "";
    showProgress(document.getElementById("progress"), document.getElementById("pct"),
                 data.progress);
    if (kind === "transition" && ++count > seen) {
      const row = history.insertRow();
      for (const cell of [data.at.replace("T", " ").slice(0, 19), data.from_state || "",
                          data.to_state, data.step || "", data.attempt, data.worker || "",
                          (data.detail || "").slice(0, 200)]) {
        row.insertCell().textContent = cell;
      }
    }
  }, () => window.location.reload());
}

function listPage(table) {
  for (const row of table.querySelectorAll("tr[data-live]")) {
    follow(row.dataset.job, (kind, data) => {
      const state = row.querySelector(".state");
      state.textContent = data.to_state || data.state;
      state.className = `state s-${state.textContent}`;
      row.querySelector(".step").textContent = data.step || "";
      showProgress(row.querySelector("progress"), row.querySelector(".pct"), data.progress);
    }, () => window.location.reload());
  }
}

const card = document.getElementById("job");
if (card) jobPage(card);
const table = document.getElementById("jobs");
if (table) listPage(table);
const filter = document.getElementById("state-filter");
if (filter) filter.addEventListener("change", () => filter.form.submit());
