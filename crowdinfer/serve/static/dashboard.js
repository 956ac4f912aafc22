// The requester's dashboard: progress, annotators, confusions, downloads, stop.
"use strict";
const token = decodeURIComponent(location.pathname.split("/").pop());
const headers = { "X-Token": token, "Content-Type": "application/json" };
function $(id) { return document.getElementById(id); }

$("labels").href = `/api/labels.csv?token=${encodeURIComponent(token)}`;
$("skills").href = `/api/skills.csv?token=${encodeURIComponent(token)}`;

function card(label, value) {
  return `<div class="card">${label}<b>${value}</b></div>`;
}

function plot(history, items, cap) {
  const c = $("progress"), g = c.getContext("2d");
  g.clearRect(0, 0, c.width, c.height);
  const pad = 30, w = c.width - 2 * pad, h = c.height - 2 * pad;
  g.strokeStyle = "#999"; g.strokeRect(pad, pad, w, h);
  g.fillStyle = "#555"; g.font = "11px sans-serif";
  g.fillText("1", 8, pad + 4); g.fillText("0", 8, pad + h);
  if (history.length === 0) { g.fillText("no update yet", pad + 10, pad + 20); return; }
  const n = history.length;
  const t0 = history[0].time, t1 = history[n - 1].time;
  const series = [
    ["#2a7", (r) => r.finished / items],
    ["#23395b", (r) => r.expected_accuracy],
    ["#d80", (r) => r.per_item / cap],
  ];
  for (const [color, f] of series) {
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    history.forEach((r, i) => {
      const x = pad + (t1 > t0 ? ((r.time - t0) / (t1 - t0)) * w : w / 2);
      const y = pad + h * (1 - Math.max(0, Math.min(1, f(r))));
      i === 0 ? g.moveTo(x, y) : g.lineTo(x, y);
    });
    g.stroke();
  }
  g.fillStyle = "#555";
  const minutes = (t1 - t0) / 60;
  g.fillText(`time: ${minutes < 2 ? Math.round(minutes * 60) + " s" : minutes.toFixed(1) + " min"} (${n} updates)`, pad + w - 150, pad + h + 18);
}

function matrix(name, conf, classes) {
  const cell = 26, k = classes.length;
  const c = document.createElement("canvas");
  c.width = cell * k + 2; c.height = cell * k + 2;
  const g = c.getContext("2d");
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) {
    const v = conf[i][j];
    g.fillStyle = `rgba(35,57,91,${v})`;
    g.fillRect(1 + j * cell, 1 + i * cell, cell - 1, cell - 1);
  }
  const f = document.createElement("figure");
  f.innerHTML = `<figcaption>${name}</figcaption>`;
  f.title = "rows: true class, columns: answer";
  f.appendChild(c);
  return f;
}

async function refresh() {
  const r = await fetch("/api/dashboard", { headers });
  const d = await r.json();
  if (!r.ok) { $("status").textContent = d.error; return; }
  $("status").textContent = d.stopped ? `stopped: ${d.stopped}` : "running";
  $("cards").innerHTML = card("items", d.items) + card("answers", d.answers) +
    card("finished", `${d.finished} (${Math.round(100 * d.finished / d.items)}%)`) +
    card("answers per item", d.per_item.toFixed(2)) +
    card("expected accuracy", d.expected_accuracy.toFixed(3)) + card("updates", d.step);
  plot(d.history, d.items, 3);
  const cols = Object.keys(d.workers[0] || { worker: 0, answers: 0, accuracy: 0 });
  document.querySelector("#workers thead").innerHTML = "<tr>" + cols.map((c) => `<th>${c}</th>`).join("") + "</tr>";
  document.querySelector("#workers tbody").innerHTML = d.workers.map((w) => "<tr>" + cols.map((c) =>
    `<td>${typeof w[c] === "number" && !Number.isInteger(w[c]) ? w[c].toFixed(3) : w[c]}</td>`).join("") + "</tr>").join("");
  const box = $("confusions");
  box.innerHTML = "";
  d.workers.forEach((w, j) => { if (w.answers > 0) box.appendChild(matrix(w.worker, d.confusions[j], d.classes)); });
}

$("stop").addEventListener("click", async () => {
  if (!confirm("Stop handing out items?")) return;
  await fetch("/api/stop", { method: "POST", headers });
  refresh();
});
$("add").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await fetch("/api/annotators", { method: "POST", headers, body: JSON.stringify({ id: $("newname").value }) });
  const d = await r.json();
  $("newlink").textContent = r.ok ? `${location.origin}${d.link}` : d.error;
  refresh();
});
refresh();
setInterval(refresh, 5000);
