// launch-ui page: plain JS, no build step, no network beyond this server. Every URL is relative.
"use strict";
const $ = (s) => document.querySelector(s);
const state = { form: null, seq: 0, selected: localStorage.getItem("launch-ui.run") || null,
                rows: [], offset: 0, runs: [] };

async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" },
                                            body: JSON.stringify(body) };
  const r = await fetch(path, opts);
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status} ${(await r.text()).replace(/<[^>]*>/g, " ").trim()}`);
  return r.json();
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) e.append(c);
  return e;
}

// ---- compose form ----------------------------------------------------------------------------------------
function buildForm(form) {
  $("#output-root").textContent = "runs in " + form.output_root;
  const groups = $("#groups");
  for (const [g, options] of Object.entries(form.groups)) {
    const sel = el("select", { "data-group": g });
    sel.append(el("option", { value: "", text: g === "recipe" ? "(none)" : "(default)" }));
    for (const o of options) sel.append(el("option", { value: o, text: o }));
    sel.addEventListener("change", () => { if (g === "recipe") clearFields(); changed(); });
    groups.append(el("label", { "data-field": g }, g, sel));
  }
  for (const section of form.sections) {
    const box = el("fieldset", {}, el("legend", { text: section.title }));
    const grid = el("div", { className: "grid" });
    for (const f of section.fields) {
      let input;
      if (f.kind === "choice") {
        input = el("select", { "data-key": f.key });
        input.append(el("option", { value: "", text: "" }));
        for (const c of f.choices) input.append(el("option", { value: c, text: c }));
      } else {
        input = el("input", { "data-key": f.key, type: "text", spellcheck: false });
        if (f.key === "data.dataset") input.setAttribute("list", "dataset-names");
      }
      input.addEventListener(f.kind === "choice" ? "change" : "input", changed);
      const help = [f.help, f.allowed && "allowed: " + f.allowed].filter(Boolean).join(" — ");
      const label = el("label", { "data-field": f.key, title: help }, f.key, input);
      if (f.key === "data.dataset") label.append(el("span", { id: "dataset-error", className: "help" }));
      grid.append(label);
    }
    box.append(grid);
    $("#sections").append(box);
  }
  $("#extra").addEventListener("input", changed);
}

function clearFields() {
  document.querySelectorAll("[data-key]").forEach((i) => { i.value = ""; });
}

function splitArgs(text) {  // shell-like: spaces separate, quotes group
  const out = []; let cur = "", quote = null, any = false;
  for (const ch of text) {
    if (quote) { if (ch === quote) quote = null; else cur += ch; }
    else if (ch === "'" || ch === '"') { quote = ch; any = true; }
    else if (/\s/.test(ch)) { if (cur || any) out.push(cur); cur = ""; any = false; }
    else cur += ch;
  }
  if (cur || any) out.push(cur);
  return out;
}

function currentArgs() {
  const args = [];
  document.querySelectorAll("[data-group]").forEach((s) => { if (s.value) args.push(`${s.dataset.group}=${s.value}`); });
  document.querySelectorAll("[data-key]").forEach((i) => {
    if (i.value.trim() !== "") args.push(`${i.dataset.key}=${i.value.trim()}`);
  });
  return args.concat(splitArgs($("#extra").value));
}

let timer = null;
function changed() {
  clearTimeout(timer);
  timer = setTimeout(check, 350);  // debounced: one validate per pause in typing
  localStorage.setItem("launch-ui.args", JSON.stringify(currentArgs()));
}

function showCommand(args) {
  $("#command").textContent = "$ launch " + args.map((a) => /[\s'"$`\\]/.test(a) ? `'${a.replace(/'/g, "'\\''")}'` : a).join(" ");
}

async function check() {
  const seq = ++state.seq;
  let res;
  try { res = await api("api/check", { args: currentArgs() }); }
  catch (e) { return renderMessages([{ error: true, text: String(e) }]); }
  if (seq !== state.seq) return;  // a newer edit is being checked
  showCommand(res.args);
  document.querySelectorAll(".bad").forEach((e) => e.classList.remove("bad"));
  if (res.compose_error) return renderMessages([{ error: true, text: res.compose_error }]);
  for (const [k, v] of Object.entries(res.values)) {
    const input = document.querySelector(`[data-key="${k}"]`);
    if (!input) continue;
    const shown = v === null ? "null" : typeof v === "object" ? JSON.stringify(v) : String(v);
    if (input.tagName === "SELECT") input.options[0].text = `(${shown})`; else input.placeholder = shown;
  }
  for (const p of res.problems) {
    const field = document.querySelector(`[data-field="${p.key}"]`);
    if (field && p.error) field.classList.add("bad");
  }
  const ds = res.datasets || { names: [], error: null };
  $("#dataset-names").replaceChildren(...ds.names.map((n) => el("option", { value: n })));
  $("#dataset-error").textContent = ds.error ? ds.error : `${ds.names.length} in ${ds.dir}/dataset_info.json`;
  renderMessages(res.problems.length ? res.problems : [{ ok: true, text: "no problems: ready to start" }]);
}

function renderMessages(items) {
  $("#messages").replaceChildren(...items.map((p) =>
    el("li", { className: p.ok ? "ok" : p.error ? "error" : "warning", text: p.text })));
}

function say(target, text, error) {
  const m = $(target); m.textContent = text; m.className = "message" + (error ? " error" : "");
}

async function preview() {
  $("#preview").textContent = "…";
  try {
    const res = await api("api/preview", { args: currentArgs() });
    showCommand(res.args);
    $("#preview").className = "mono preview" + (res.rc ? " error" : "");
    $("#preview").textContent = res.stdout + (res.stderr ? (res.stdout ? "\n" : "") + res.stderr : "")
      + (res.rc ? `\n(exit ${res.rc}: nothing would start)` : "");
  } catch (e) { $("#preview").textContent = String(e); }
}

async function start() {
  $("#start-btn").disabled = true;
  say("#action-message", "starting…");
  try {
    const res = await api("api/start", { args: currentArgs() });
    if (!res.ok) say("#action-message", res.error, true);
    else {
      say("#action-message", `started: ${res.run_dir}` + (res.exit === 0 ? " (launch exited 0)" : ""));
      await refreshRuns();
      const run = state.runs.find((r) => r.root === res.run_dir);
      if (run) select(run.id);
    }
  } catch (e) { say("#action-message", String(e), true); }
  $("#start-btn").disabled = false;
}

async function saveRecipe() {
  const name = $("#recipe-name").value.trim();
  const res = await api("api/recipe", { name, args: currentArgs(), overwrite: $("#recipe-overwrite").checked });
  if (!res.ok) return say("#action-message", res.error, true);
  const sel = document.querySelector('[data-group="recipe"]');
  if (![...sel.options].some((o) => o.value === res.name)) sel.append(el("option", { value: res.name, text: res.name }));
  say("#action-message", `saved ${res.path}: launch recipe=${res.name}`);
}

// ---- runs --------------------------------------------------------------------------------------------------
async function refreshRuns() {
  let res;
  try { res = await api("api/runs"); } catch (e) { return; }
  state.runs = res.runs;
  $("#runs-root").textContent = res.output_root;
  $("#runs tbody").replaceChildren(...res.runs.slice().reverse().map((r) => {
    const tr = el("tr", { "data-run": r.id, className: r.id === state.selected ? "selected" : "" },
      el("td", { text: r.name }), el("td", { text: r.stage }), el("td", { text: r.adapter }),
      el("td", {}, el("span", { className: "status " + r.status, text: r.status })),
      el("td", { text: r.steps ?? "-" }), el("td", { text: r.final_loss == null ? "-" : r.final_loss.toFixed(4) }),
      el("td", { text: r.wall ?? "-" }), el("td", { className: "mono", text: r.id }));
    tr.addEventListener("click", () => select(r.id));
    return tr;
  }));
  showRun();
}

function select(id) {
  if (state.selected !== id) { state.rows = []; state.offset = 0; }
  state.selected = id;
  localStorage.setItem("launch-ui.run", id);
  document.querySelectorAll("#runs tbody tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.run === id));
  showRun(); pollMetrics(); pollLogs();
}

function showRun() {
  const r = state.runs.find((x) => x.id === state.selected);
  $("#run-view").hidden = !r;
  if (!r) return;
  $("#run-title").textContent = r.id;
  $("#run-status").textContent = r.status;
  $("#run-status").className = "status " + r.status;
  $("#run-detail").textContent = r.detail;
  $("#stop-btn").disabled = !["running", "queued", "requeued"].includes(r.status);
  $("#resume-btn").disabled = !["interrupted", "failed", "unknown"].includes(r.status);
  $("#commands").replaceChildren(...Object.entries(r.commands).map(([k, c]) =>
    el("label", {}, k, el("input", { value: c, readOnly: true, onclick: (e) => e.target.select() }))));
}

async function pollMetrics() {
  const id = state.selected;
  if (!id) return;
  try {
    for (;;) {  // a long run's history arrives in chunks; ask again while there is more
      const res = await api(`api/metrics?run=${encodeURIComponent(id)}&offset=${state.offset}`);
      if (id !== state.selected) return;
      if (res.reset) state.rows = [];
      state.rows.push(...res.rows);
      state.offset = res.offset;
      if (!res.more) break;
    }
  } catch (e) { /* the next poll tries again: nothing to reconnect */ }
  drawCurve();
}

async function pollLogs() {
  const id = state.selected;
  if (!id) return;
  try {
    const res = await api(`api/logs?run=${encodeURIComponent(id)}`);
    if (id !== state.selected) return;
    const pick = $("#log-name"), chosen = pick.value;
    pick.replaceChildren(...res.logs.map((l) => el("option", { value: l.name, text: l.name })));
    if (res.logs.some((l) => l.name === chosen)) pick.value = chosen;
    const shown = res.logs.find((l) => l.name === pick.value);
    const log = $("#log"), atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
    log.textContent = shown ? shown.text : "no logs yet";
    if (atEnd) log.scrollTop = log.scrollHeight;  // follow the tail unless the user scrolled up
  } catch (e) { /* next poll */ }
}

async function runAction(kind) {
  say("#run-message", kind === "stop" ? "stopping…" : "resuming…");
  try {
    const res = await api(`api/${kind}`, { run: state.selected });
    say("#run-message", res.ok ? (res.message || `resumed: ${res.run_dir}`) : res.error, !res.ok);
  } catch (e) { say("#run-message", String(e), true); }
  refreshRuns();
}

// ---- the curve (canvas, drawn here: no chart library) -------------------------------------------------------
const COLORS = { loss: "#2463eb", eval_loss: "#e67e22", reward: "#16a34a" };
function drawCurve() {
  const c = $("#curve"), g = c.getContext("2d");
  const W = c.width, H = c.height, L = 56, R = 12, T = 14, B = 30;
  g.clearRect(0, 0, W, H);
  // a step redone after a resume is logged again: drawn once, with its later value
  const series = Object.keys(COLORS).map((k) => {
    const byStep = new Map();
    for (const r of state.rows) if (typeof r[k] === "number") byStep.set(r.step, r);
    return [k, [...byStep.values()].sort((a, b) => a.step - b.step)];
  }).filter(([, pts]) => pts.length);
  $("#points").textContent = series.map(([k, pts]) => `${k}: ${pts.length} point(s)`).join(", ") || "no metrics yet";
  $("#curve").dataset.points = String((series.find(([k]) => k === "loss") || [, []])[1].length);
  if (!series.length) return;
  const xs = state.rows.map((r) => r.step), ys = series.flatMap(([k, pts]) => pts.map((r) => r[k]));
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5; y1 += 0.5; }
  const px = (x) => L + (x - x0) / (x1 - x0) * (W - L - R), py = (y) => T + (y1 - y) / (y1 - y0) * (H - T - B);
  g.strokeStyle = "#ccd3dd"; g.fillStyle = "#555"; g.font = "11px sans-serif"; g.lineWidth = 1;
  g.beginPath(); g.moveTo(L, T); g.lineTo(L, H - B); g.lineTo(W - R, H - B); g.stroke();
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4, x = x0 + (x1 - x0) * i / 4;
    g.fillText(y.toPrecision(3), 4, py(y) + 4);
    g.fillText(String(Math.round(x)), px(x) - 8, H - B + 16);
  }
  g.fillText("step", W - R - 24, H - 4);
  series.forEach(([k, pts], i) => {
    g.strokeStyle = COLORS[k]; g.fillStyle = COLORS[k]; g.lineWidth = 2;
    g.beginPath();
    pts.forEach((r, j) => (j ? g.lineTo : g.moveTo).call(g, px(r.step), py(r[k])));
    g.stroke();
    if (pts.length === 1) g.fillRect(px(pts[0].step) - 2, py(pts[0][k]) - 2, 4, 4);
    g.fillText(k, W - R - 70, T + 12 + 14 * i);
  });
}

// ---- start --------------------------------------------------------------------------------------------------
async function init() {
  state.form = await api("api/form");
  buildForm(state.form);
  const saved = JSON.parse(localStorage.getItem("launch-ui.args") || "[]");  // a reload keeps the form
  const extra = [];
  for (const a of saved) {
    const [k, ...rest] = a.split("="); const v = rest.join("=");
    const target = document.querySelector(`[data-group="${k}"]`) || document.querySelector(`[data-key="${k}"]`);
    if (target && (target.tagName !== "SELECT" || [...target.options].some((o) => o.value === v))) target.value = v;
    else extra.push(a);
  }
  $("#extra").value = extra.join(" ");
  $("#preview-btn").addEventListener("click", preview);
  $("#start-btn").addEventListener("click", start);
  $("#save-btn").addEventListener("click", saveRecipe);
  $("#stop-btn").addEventListener("click", () => runAction("stop"));
  $("#resume-btn").addEventListener("click", () => runAction("resume"));
  $("#log-name").addEventListener("change", pollLogs);
  check();
  refreshRuns().then(() => { pollMetrics(); pollLogs(); });
  setInterval(refreshRuns, 2000);
  setInterval(pollMetrics, 2000);
  setInterval(pollLogs, 3000);
}
init().catch((e) => renderMessages([{ error: true, text: "launch-ui: " + e }]));
