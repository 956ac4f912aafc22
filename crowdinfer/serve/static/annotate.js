// The annotator's page: shows the item chosen for this annotator, sends the answer (click or key
// 1-9), shows the next.  The token is the last part of the page's address (/a/<token>).
"use strict";
const token = decodeURIComponent(location.pathname.split("/").pop());
const headers = { "X-Token": token, "Content-Type": "application/json" };
let current = null;
let classes = [];
let busy = false;

function $(id) { return document.getElementById(id); }

function show(item) {
  current = item && item.item !== null ? item : null;
  $("count").textContent = item ? `${item.answered} answered` : "";
  $("image").hidden = true;
  $("text").hidden = true;
  $("message").hidden = !!current;
  document.body.dataset.item = current ? current.item : "";
  document.body.dataset.state = current ? "item" : (item && item.finished ? "finished" : "waiting");
  if (!current) {
    $("message").textContent = item ? item.message : "";
    if (!(item && item.finished)) setTimeout(load, 3000);
    return;
  }
  if (current.kind === "text") {
    $("text").textContent = current.text;
    $("text").hidden = false;
  } else {
    $("image").src = current.src || `/api/media/${encodeURIComponent(current.item)}?token=${encodeURIComponent(token)}`;
    $("image").hidden = false;
  }
}

function buttons() {
  const box = $("choices");
  box.innerHTML = "";
  classes.forEach((name, k) => {
    const b = document.createElement("button");
    b.innerHTML = (k < 9 ? `<kbd>${k + 1}</kbd>` : "") + name;
    b.dataset.label = k;
    b.addEventListener("click", () => answer(k));
    box.appendChild(b);
  });
}

async function load() {
  const r = await fetch("/api/next", { headers });
  const body = await r.json();
  if (!r.ok) { $("error").textContent = body.error; return; }
  $("who").textContent = body.worker;
  if (classes.length === 0) { classes = body.classes; buttons(); }
  show(body);
}

async function answer(k) {
  if (!current || busy) return;
  busy = true;
  $("error").textContent = "";
  try {
    const r = await fetch("/api/answer", { method: "POST", headers,
      body: JSON.stringify({ item: current.item, label: k }) });
    const body = await r.json();
    if (r.ok) show(body.next);
    else if (r.status === 409) await load();  // already recorded: go on
    else $("error").textContent = body.error;
  } catch (e) {
    $("error").textContent = "Connection lost; your answer will be sent again when you retry.";
  } finally {
    busy = false;
  }
}

document.addEventListener("keydown", (e) => {
  const k = parseInt(e.key, 10);
  if (k >= 1 && k <= 9 && k <= classes.length) answer(k - 1);
});
load();
