// viewrt studio: every action asks the server, then the page is drawn again from the
// server's answer (the session's state), so it never shows what the server does not hold.
"use strict";

const COLORS = { encode: "#1f77b4", cache: "#2ca02c", decode: "#d62728", other: "#999999" };
const $ = (id) => document.getElementById(id);
let sid = null;
let state = null;
let thumbs = [];

async function api(method, path, body) {
  const opts = { method, headers: { "Content-Type": "application/json" } };
  if (body !== undefined) opts.body = JSON.stringify(body);
  let res, payload;
  try {
    res = await fetch(path, opts);
    payload = await res.json();
  } catch (e) {
    throw new Error(`the studio server did not answer (${method} ${path})`);
  }
  if (!res.ok) throw new Error(payload.error || `HTTP ${res.status}`);
  return payload;
}

function showError(message) {
  const el = $("error");
  el.textContent = message ? String(message).split("\n")[0] : "";
  el.hidden = !message;
}

// One action: call, then draw the answer; on an error, one line and the server's state.
async function act(method, path, body) {
  document.body.dataset.busy = "1";
  try {
    const answer = await api(method, path, body);
    showError("");
    if (answer.session) await draw(answer);
    return answer;
  } catch (e) {
    showError(e.message);
    if (sid) {
      try { await draw(await api("GET", `/api/sessions/${sid}`)); } catch (e2) { /* shown */ }
    }
    return null;
  } finally {
    delete document.body.dataset.busy;
  }
}

function option(select, value, text, disabled, title) {
  const o = document.createElement("option");
  o.value = value; o.textContent = text; o.disabled = !!disabled;
  if (title) o.title = title;
  select.appendChild(o);
}

async function loadThumbs() {
  const f = await api("GET", `/api/sessions/${sid}/frames`);
  thumbs = f.frames;
}

async function draw(s) {
  const sceneChanged = !state || state.scene.id !== s.scene.id || thumbs.length !== s.scene.frames;
  sid = s.session;
  state = s;
  if (sceneChanged) await loadThumbs();
  $("scene").value = s.scene.id;
  $("backend").value = s.backend;
  const c = s.cache;
  $("precision").textContent = `${c.backend} on ${c.device}, precision ${c.precision}, cache ${c.kv_dtype}`;
  drawFrames(s);
  drawCache(s);
  drawTargets(s);
  drawRender(s);
  drawChart(s.timings);
}

function drawFrames(s) {
  const byFrame = new Map(s.views.map((v) => [v.frame, v]));
  const evicts = new Set(s.next_evicts.evicts.map((e) => e.frame));
  const box = $("frames");
  box.textContent = "";
  thumbs.forEach((png, i) => {
    const v = byFrame.get(i);
    const d = document.createElement("div");
    d.className = "thumb" + (v ? (v.keyframe ? (v.pinned ? " cached pinned" : " cached") : " pending") : "")
      + (evicts.has(i) ? " evicts" : "");
    d.dataset.frame = i;
    d.title = v ? `frame ${i}: view ${v.view_id} (click to remove)` : `frame ${i} (click to add)`;
    const img = document.createElement("img");
    img.src = `data:image/png;base64,${png}`;
    const label = document.createElement("span");
    label.textContent = v ? `${i} v${v.view_id}${v.pinned ? " pin" : ""}` : `${i}`;
    d.append(img, label);
    d.onclick = () => (v && v.keyframe)
      ? act("DELETE", `/api/sessions/${sid}/views/${v.view_id}`)
      : act("POST", `/api/sessions/${sid}/views`, { frame: i, keyframe: $("keyframe").checked });
    box.appendChild(d);
  });
}

function mib(bytes) { return (bytes / 2 ** 20).toFixed(3); }

function drawCache(s) {
  const c = s.cache;
  $("cache-summary").textContent =
    `slots ${c.views} / ${c.max_views} in use, pinned ${c.pinned_ids.length}` +
    ` (setting ${c.pinned}), window ${c.window ?? "none"}, ` +
    `${mib(c.bytes_used)} of ${mib(c.bytes_reserved)} MiB (${mib(c.bytes_per_view)} MiB per view)` +
    (c.pending_non_keyframe !== null ? `, pending non-keyframe view ${c.pending_non_keyframe}` : "");
  const body = $("slots").tBodies[0];
  body.textContent = "";
  s.views.forEach((v, slot) => {
    const tr = body.insertRow();
    [slot, v.view_id, v.frame, v.keyframe ? (v.pinned ? "pinned" : "keyframe") : "non-keyframe"]
      .forEach((x) => { tr.insertCell().textContent = x; });
    const pin = document.createElement("button");
    pin.textContent = v.pinned ? "unpin" : "pin";
    pin.disabled = !v.keyframe;
    pin.className = "pin";
    pin.onclick = () => act("POST", `/api/sessions/${sid}/pin`, { view_id: v.view_id, pinned: !v.pinned });
    const rm = document.createElement("button");
    rm.textContent = "remove";
    rm.disabled = !v.keyframe;
    rm.className = "remove";
    rm.onclick = () => act("DELETE", `/api/sessions/${sid}/views/${v.view_id}`);
    tr.insertCell().appendChild(pin);
    tr.insertCell().appendChild(rm);
  });
  const n = s.next_evicts;
  $("next-evicts").textContent = n.refused
    ? `next add: refused (${n.refused})`
    : n.evicts.length
      ? `next add evicts: ${n.evicts.map((e) => `view ${e.view_id} (frame ${e.frame})`).join(", ")}`
      : `next add: slot ${n.slot}, evicts nothing`;
  if (document.activeElement !== $("window")) $("window").value = c.window ?? "";
  if (document.activeElement !== $("pinned")) $("pinned").value = c.pinned;
}

function drawTargets(s) {
  for (const id of ["target-frame", "from-frame", "to-frame"]) {
    const sel = $(id);
    const keep = sel.value;
    if (sel.options.length !== s.scene.frames) {
      sel.textContent = "";
      for (let i = 0; i < s.scene.frames; i++) option(sel, i, `${i}`);
      if (id === "to-frame") sel.value = String(s.scene.frames - 1);
    } else if (keep) sel.value = keep;
  }
}

function drawRender(s) {
  const r = s.render;
  $("render-image").src = r ? `data:image/png;base64,${r.image}` : "";
  $("truth-image").src = r && r.truth ? `data:image/png;base64,${r.truth}` : "";
  $("psnr").textContent = !r ? "\u00a0"
    : r.psnr !== null ? `PSNR ${r.psnr.toFixed(2)} dB (views from frames ${r.frames.join(", ")})`
    : `free camera, t = ${r.target.t} (views from frames ${r.frames.join(", ")})`;
}

function drawChart(timings) {
  const cv = $("chart");
  const g = cv.getContext("2d");
  g.clearRect(0, 0, cv.width, cv.height);
  const steps = Object.keys(COLORS);
  const max = Math.max(1e-3, ...timings.map((t) => t.total));
  const w = cv.width / Math.max(timings.length, 20);
  timings.forEach((t, i) => {
    let y = cv.height;
    for (const k of steps) {
      const h = (t[k] / max) * (cv.height - 14);
      g.fillStyle = COLORS[k];
      g.fillRect(i * w + 1, y - h, Math.max(w - 2, 1), h);
      y -= h;
    }
  });
  g.fillStyle = "#333";
  g.fillText(`${max.toFixed(2)} ms`, 4, 10);
  $("legend").innerHTML = steps.map((k) => `<span><i style="background:${COLORS[k]}"></i>${k}</span>`).join("");
  const last = timings[timings.length - 1];
  $("last-timing").textContent = last
    ? `last (${last.op}): ` + steps.map((k) => `${k} ${last[k].toFixed(2)}`).join(", ") + `, total ${last.total.toFixed(2)} ms`
    : "";
}

function target() {
  const mode = document.querySelector("input[name=mode]:checked").value;
  if (mode === "frame") return { frame: Number($("target-frame").value) };
  return { between: [Number($("from-frame").value), Number($("to-frame").value)], t: Number($("t").value) };
}

function intOrNull(text) { return text.trim() === "" ? null : Number(text); }

async function start() {
  let server;
  try {
    server = await api("GET", "/api/server");
  } catch (e) { showError(e.message); return; }
  $("export").textContent = `${server.export.preset} (${server.export.precision}, ${server.export.image_size} px, up to ${server.export.max_views} views)`;
  server.scenes.forEach((sc) => option($("scene"), sc.id, `${sc.name} (${sc.kind})`));
  server.backends.forEach((b) => option($("backend"), b.id, b.available ? b.id : `${b.id} (unavailable)`, !b.available, b.why));
  const s = await act("POST", "/api/sessions", { scene: server.scenes[0].id, backend: server.default_backend });
  if (!s) return;
  $("scene").onchange = () => act("POST", `/api/sessions/${sid}/scene`, { scene: $("scene").value });
  $("backend").onchange = () => act("POST", `/api/sessions/${sid}/backend`, { backend: $("backend").value });
  $("apply").onclick = () => act("POST", `/api/sessions/${sid}/settings`,
    { window: intOrNull($("window").value), pinned: Number($("pinned").value || 0) });
  $("reset").onclick = () => act("POST", `/api/sessions/${sid}/reset`);
  $("render").onclick = () => act("POST", `/api/sessions/${sid}/render`, { target: target() });
  $("t").oninput = () => { $("t-value").textContent = Number($("t").value).toFixed(2); };
  $("t").onchange = () => {
    document.querySelector("input[name=mode][value=between]").checked = true;
    act("POST", `/api/sessions/${sid}/render`, { target: target() });
  };
  window.addEventListener("pagehide", () => {
    fetch(`/api/sessions/${sid}`, { method: "DELETE", keepalive: true });
  });
  document.body.dataset.ready = "1";
}

start();
