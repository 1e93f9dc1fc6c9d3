// Myelin console: vanilla JS, no framework, nothing from a CDN. Every model output reaches the page
// through textContent or SVG/canvas text, never as HTML.
"use strict";

const RPC = {
  listModels: "myelin_api.v1.Models/ListModels",
  getModel: "myelin_api.v1.Models/GetModel",
  classify: "myelin_api.v1.Classifier/Classify",
  translate: "myelin_api.v1.Translator/Translate",
  generate: "myelin_api.v1.Generator/Generate",
  embed: "myelin_api.v1.Embedder/Embed",
  mostSimilar: "myelin_api.v1.Embedder/MostSimilar",
  analogy: "myelin_api.v1.Embedder/Analogy",
  doesntMatch: "myelin_api.v1.Embedder/DoesntMatch",
};
const FAMILIES = ["classifier", "translator", "generator", "embedder"];
const COLORS = ["#3056d3", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#1098ad", "#5c940d", "#e67700"];

const $ = (id) => document.getElementById(id);

// An element with text only: children are nodes or strings (as text nodes).
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function svg(tag, attrs = {}, text = null) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== null) node.textContent = text;
  return node;
}

function setStatus(id, text, isError = false) {
  const node = $(id);
  node.textContent = text;
  node.classList.toggle("error", isError);
}

async function errorOf(response) {
  try {
    const body = await response.json();
    const error = body.error;
    return typeof error === "string" ? error : (error && error.message) || response.statusText;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// One gRPC method through the console: POST /api/<family>/rpc/<service>/<method> with a JSON body.
async function call(family, method, body, options = {}) {
  const response = await fetch(`/api/${family}/rpc/${method}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal: options.signal,
  });
  if (!response.ok) throw new Error(await errorOf(response));
  return options.raw ? response : response.json();
}

const state = { families: {}, models: {} };

// ---- tabs and families -------------------------------------------------------------------------

function showTab(name) {
  for (const button of document.querySelectorAll("#tabs button")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  for (const section of document.querySelectorAll(".tab")) section.classList.toggle("active", section.id === `tab-${name}`);
  if (name === "live") refreshLive();
}

async function loadFamilies() {
  const response = await fetch("/api/families");
  state.families = await response.json();
  for (const section of document.querySelectorAll(".tab[data-family]")) {
    const family = section.dataset.family;
    const info = state.families[family];
    const usable = info && info.deployed && info.ready;
    section.classList.toggle("off", !usable);
    section.querySelector(".unavailable").textContent = usable ? "" : `The ${family} service: ${info ? info.error : "unknown"}.`;
  }
}

async function readyModels(family) {
  if (!state.models[family]) {
    const answer = await call(family, RPC.listModels, {});
    state.models[family] = answer.models;
  }
  return state.models[family]
    .filter((m) => m.versions.some((v) => v.state === "MODEL_STATE_READY"))
    .map((m) => m.name)
    .sort();
}

async function fillSelect(family, id) {
  const select = $(id);
  select.replaceChildren();
  for (const name of await readyModels(family)) select.append(el("option", { value: name }, name));
}

// ---- models ------------------------------------------------------------------------------------

function formatNumber(value) {
  if (Math.abs(value) >= 1000 || Number.isInteger(value)) return String(Math.round(value * 100) / 100);
  return Number(value).toPrecision(4);
}

async function loadModelsTable() {
  const body = document.querySelector("#models-table tbody");
  body.replaceChildren();
  let rows = 0;
  for (const family of FAMILIES) {
    const info = state.families[family];
    if (!info || !info.deployed) {
      body.append(el("tr", {}, el("td", {}, family), el("td", { colspan: "6", class: "hint" }, info ? info.error : "not deployed")));
      continue;
    }
    let models;
    try {
      models = (await call(family, RPC.listModels, {})).models;
      state.models[family] = models;
    } catch (error) {
      body.append(el("tr", {}, el("td", {}, family), el("td", { colspan: "6", class: "reason" }, String(error.message))));
      continue;
    }
    for (const model of models) {
      for (const version of model.versions) {
        body.append(await modelRow(family, model, version));
        rows += 1;
      }
    }
  }
  setStatus("models-status", `${rows} model version(s)`);
}

async function modelRow(family, model, version) {
  const stateName = version.state.replace("MODEL_STATE_", "");
  const stateCell = el("td", { class: `state state-${stateName}` }, stateName);
  if (version.reason) stateCell.append(el("div", { class: "reason" }, version.reason));
  let detail = model;
  if (String(model.version) !== String(version.version)) {
    try {
      detail = await call(family, RPC.getModel, { model: { name: model.name, version: version.version } });
    } catch {
      detail = { architecture: "", evaluation: {} };
    }
  }
  const evaluation = el("td", { class: "evaluation" });
  for (const [key, value] of Object.entries(detail.evaluation || {}).sort()) {
    evaluation.append(el("div", {}, `${key}: ${formatNumber(value)}`));
  }
  const curves = el("td", { class: "curves" });
  const row = el("tr", { "data-model": model.name, "data-version": String(version.version) },
    el("td", {}, family), el("td", {}, model.name), el("td", { class: "num" }, String(version.version)),
    stateCell, el("td", {}, detail.architecture || ""), evaluation, curves);
  drawCurves(curves, model.name, version.version);
  return row;
}

async function drawCurves(cell, name, version) {
  const response = await fetch(`/api/curves/${encodeURIComponent(name)}/${encodeURIComponent(version)}`);
  if (!response.ok) {
    cell.append(el("span", { class: "hint" }, "none"));
    return;
  }
  const points = (await response.json()).points;
  if (!points.length) return;
  const xKey = ["iter", "step", "epoch", "iteration"].find((k) => k in points[0]);
  const keys = Object.keys(points[0]).filter((k) => /loss|accuracy|bleu/.test(k));
  const xs = points.map((p, i) => (xKey ? p[xKey] : i));
  const series = keys.map((k, i) => ({ name: k, color: COLORS[i % COLORS.length], values: points.map((p) => p[k]) }));
  cell.append(lineChart(xs, series, { width: 260, height: 120, title: "" }));
}

// A small line chart on a canvas: `series` = [{name, color, values}] over `xs`; nulls are gaps.
function lineChart(xs, series, { width = 300, height = 140, title = "", unit = "" } = {}) {
  const box = el("div", { class: "chart" });
  if (title) box.append(el("div", { class: "title" }, title));
  const canvas = el("canvas", { width: String(width), height: String(height) });
  box.append(canvas);
  const legend = el("div", { class: "legend" });
  const context = canvas.getContext("2d");
  const values = series.flatMap((s) => s.values).filter((v) => v !== null && Number.isFinite(v));
  const low = Math.min(0, ...values);
  const top = Math.max(0, ...values);
  const high = top > low ? top : low + 1;
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const pad = 28;
  const px = (x) => pad + ((x - x0) / (x1 - x0 || 1)) * (width - pad - 6);
  const py = (y) => height - 14 - ((y - low) / (high - low || 1)) * (height - 24);
  context.strokeStyle = "#d0d5dd";
  context.strokeRect(pad, 4, width - pad - 6, height - 18);
  context.fillStyle = "#667085";
  context.font = "10px system-ui";
  context.fillText(formatNumber(high) + unit, 2, 12);
  context.fillText(formatNumber(low), 2, height - 14);
  for (const s of series) {
    context.strokeStyle = s.color;
    context.lineWidth = 1.5;
    context.beginPath();
    let drawing = false;
    s.values.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) { drawing = false; return; }
      if (drawing) context.lineTo(px(xs[i]), py(v)); else context.moveTo(px(xs[i]), py(v));
      drawing = true;
    });
    context.stroke();
    if (s.values.length <= 40) {  // few points (an epoch each): mark them
      context.fillStyle = s.color;
      s.values.forEach((v, i) => {
        if (v !== null && Number.isFinite(v)) context.fillRect(px(xs[i]) - 2, py(v) - 2, 4, 4);
      });
    }
    const key = el("span", {}, `— ${s.name}`);
    key.style.color = s.color;
    legend.append(key);
  }
  box.append(legend);
  return box;
}

// ---- digits ------------------------------------------------------------------------------------

const digits = { drawing: false, last: null, busy: {}, pending: {} };

function setupDigits() {
  const canvas = $("digit-canvas");
  const context = canvas.getContext("2d");
  clearCanvas();
  const position = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * (canvas.width / box.width), (event.clientY - box.top) * (canvas.height / box.height)];
  };
  canvas.addEventListener("pointerdown", (event) => {
    digits.drawing = true;
    digits.last = position(event);
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!digits.drawing) return;
    const point = position(event);
    context.strokeStyle = "#fff";
    context.lineWidth = 20;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.beginPath();
    context.moveTo(...digits.last);
    context.lineTo(...point);
    context.stroke();
    digits.last = point;
    classifyCanvas();
  });
  const stop = () => {
    if (digits.drawing) classifyCanvas();
    digits.drawing = false;
  };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  $("digit-clear").addEventListener("click", () => {
    clearCanvas();
    $("digit-results").replaceChildren();
  });
  $("digit-upload").addEventListener("change", uploadDigit);
}

function clearCanvas() {
  const canvas = $("digit-canvas");
  const context = canvas.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, canvas.width, canvas.height);
  delete canvas.dataset.pixels;
}

// The drawing as MNIST's digits are: the ink's bounding box scaled into 20x20, centred by its centre
// of mass in 28x28, white on black; returns base64 of the 784 uint8 pixels, or null when empty.
function canvasPixels() {
  const canvas = $("digit-canvas");
  const { width, height } = canvas;
  const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  let [left, top, right, bottom] = [width, height, -1, -1];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (data[(y * width + x) * 4] > 20) {
        left = Math.min(left, x); right = Math.max(right, x); top = Math.min(top, y); bottom = Math.max(bottom, y);
      }
    }
  }
  if (right < 0) return null;
  const side = Math.max(right - left, bottom - top) + 1;
  const scale = 20 / side;
  const [w, h] = [Math.max(1, Math.round((right - left + 1) * scale)), Math.max(1, Math.round((bottom - top + 1) * scale))];
  const small = document.createElement("canvas");
  small.width = 28;
  small.height = 28;
  const context = small.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, 28, 28);
  context.imageSmoothingQuality = "high";
  context.drawImage(canvas, left, top, right - left + 1, bottom - top + 1, (28 - w) / 2, (28 - h) / 2, w, h);
  let pixels = Uint8Array.from({ length: 784 }, (_, i) => context.getImageData(0, 0, 28, 28).data[i * 4]);
  pixels = centred(pixels);
  let binary = "";
  for (const value of pixels) binary += String.fromCharCode(value);
  return btoa(binary);
}

function centred(pixels) {
  let [mass, mx, my] = [0, 0, 0];
  pixels.forEach((v, i) => { mass += v; mx += v * (i % 28); my += v * Math.floor(i / 28); });
  if (!mass) return pixels;
  const [dx, dy] = [Math.round(13.5 - mx / mass), Math.round(13.5 - my / mass)];
  const out = new Uint8Array(784);
  pixels.forEach((v, i) => {
    const [x, y] = [(i % 28) + dx, Math.floor(i / 28) + dy];
    if (x >= 0 && x < 28 && y >= 0 && y < 28) out[y * 28 + x] = v;
  });
  return out;
}

function classifyCanvas() {
  const pixels = canvasPixels();
  if (pixels === null) return;
  $("digit-canvas").dataset.pixels = pixels;
  classifyImage({ raw: { height: 28, width: 28, dtype: "DATA_TYPE_UINT8", data: pixels } });
}

async function classifyImage(image) {
  for (const model of await readyModels("classifier")) {
    // One request in flight per model; the newest image waits for it (drawing sends many).
    if (digits.busy[model]) { digits.pending[model] = image; continue; }
    digits.busy[model] = true;
    let next = image;
    while (next) {
      digits.pending[model] = null;
      try {
        const answer = await call("classifier", RPC.classify, { model: { name: model }, images: [next], topK: 10 });
        showPrediction(model, answer.classifications[0].labels);
      } catch (error) {
        showPrediction(model, null, error.message);
      }
      next = digits.pending[model];
    }
    digits.busy[model] = false;
  }
}

function showPrediction(model, labels, problem = "") {
  const id = `digit-${model}`;
  let panel = $(id);
  if (!panel) {
    panel = el("div", { id, class: "prediction" });
    $("digit-results").append(panel);
  }
  panel.replaceChildren(el("h3", {}, model));
  if (labels === null) {
    panel.append(el("p", { class: "status error" }, problem));
    return;
  }
  const best = labels[0];
  panel.append(el("div", { class: "label", "data-label": best.label }, best.label));
  panel.dataset.label = best.label;
  const byIndex = [...labels].sort((a, b) => a.index - b.index);
  for (const entry of byIndex) {
    const fill = el("div", { class: "fill" });
    fill.style.width = `${Math.round(entry.probability * 180)}px`;
    panel.append(el("div", { class: "bar-row" }, el("span", { class: "digit" }, entry.label),
      el("div", { class: "track" }, fill), el("span", { class: "value" }, entry.probability.toFixed(3))));
  }
}

function uploadDigit(event) {
  const file = event.target.files[0];
  if (!file) return;
  if (file.size > 512 * 1024) {
    showPrediction("upload", null, "images up to 512 KB");
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    const url = reader.result;
    const image = new Image();
    image.onload = () => {
      clearCanvas();
      $("digit-canvas").getContext("2d").drawImage(image, 0, 0, 280, 280);
    };
    image.src = url;
    classifyImage({ encoded: url.slice(url.indexOf(",") + 1) });
  };
  reader.readAsDataURL(file);
}

// ---- translation -------------------------------------------------------------------------------

async function translate() {
  const model = $("translate-model").value;
  const sentence = $("translate-input").value.trim();
  const beam = Math.max(2, Math.min(8, Number($("translate-beam").value) || 4));
  const body = document.querySelector("#translate-results tbody");
  body.replaceChildren();
  if (!sentence) return;
  setStatus("translate-status", "translating…");
  try {
    const searches = [["greedy", 1], [`beam ${beam}`, beam]];
    for (const [name, size] of searches) {
      const request = { model: { name: model }, sentences: [sentence], beamSize: size, returnBeams: true };
      const answer = await call("translator", RPC.translate, request);
      // Every hypothesis the search ended with, best first (the first is the translation itself).
      answer.translations[0].beams.forEach((hypothesis, rank) => {
        const unfinished = hypothesis.finished ? "" : " (max length)";
        body.append(el("tr", { class: `search-${size === 1 ? "greedy" : "beam"}` }, el("td", {}, name),
          el("td", { class: "num" }, String(rank + 1)), el("td", { class: "french" }, hypothesis.text + unfinished),
          el("td", { class: "num" }, formatNumber(hypothesis.score)),
          el("td", { class: "num" }, formatNumber(hypothesis.logProbability))));
      });
    }
    setStatus("translate-status", `${model}`);
  } catch (error) {
    setStatus("translate-status", error.message, true);
  }
}

// ---- generation --------------------------------------------------------------------------------

const generation = { controller: null, tokens: 0 };

function numberOrNull(id) {
  const value = $(id).value.trim();
  return value === "" ? null : Number(value);
}

async function generate() {
  const output = $("generate-output");
  output.textContent = "";
  generation.tokens = 0;
  output.dataset.tokens = "0";
  const request = {
    model: { name: $("generate-model").value },
    prompt: $("generate-prompt").value,
    maxNewTokens: numberOrNull("generate-max") || 0,
    temperature: numberOrNull("generate-temperature") ?? 1,
    topK: numberOrNull("generate-top-k") || 0,
    topP: numberOrNull("generate-top-p") ?? 1,
    repetitionPenalty: numberOrNull("generate-penalty") ?? 1,
    stop: $("generate-stop").value.split(",").map((s) => s.replace(/\\n/g, "\n")).filter((s) => s.length),
  };
  const seed = numberOrNull("generate-seed");
  if (seed !== null) request.seed = String(seed);
  generation.controller = new AbortController();
  $("generate-go").disabled = true;
  $("generate-stop-button").disabled = false;
  setStatus("generate-status", "generating…");
  output.dataset.state = "streaming";
  try {
    const response = await call("generator", RPC.generate, request, { signal: generation.controller.signal, raw: true });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (event.startsWith("data: ")) onGenerated(JSON.parse(event.slice(6)));
      }
    }
    if (output.dataset.state === "streaming") output.dataset.state = "finished";
  } catch (error) {
    if (error.name === "AbortError") {
      output.dataset.state = "stopped";
      setStatus("generate-status", `stopped after ${generation.tokens} tokens`);
    } else {
      output.dataset.state = "error";
      setStatus("generate-status", error.message, true);
    }
  } finally {
    generation.controller = null;
    $("generate-go").disabled = false;
    $("generate-stop-button").disabled = true;
  }
}

function onGenerated(message) {
  const output = $("generate-output");
  if (message.error) {
    output.dataset.state = "error";
    setStatus("generate-status", typeof message.error === "string" ? message.error : message.error.message, true);
    return;
  }
  output.textContent += message.text;
  generation.tokens += message.tokenIds.length;
  output.dataset.tokens = String(generation.tokens);
  setStatus("generate-status", `${generation.tokens} tokens…`);
  if (message.finish) {
    const reason = message.finish.reason.replace("FINISH_REASON_", "").toLowerCase();
    setStatus("generate-status", `finished (${reason}): ${message.finish.generatedTokens} tokens, seed ${message.finish.seed}`);
  }
}

// ---- word vectors ------------------------------------------------------------------------------

const words = (text) => text.trim().split(/[\s,]+/).filter((w) => w.length);

async function wordsCall(method, body, statusId = "words-status") {
  try {
    setStatus(statusId, "");
    return await call("embedder", method, { model: { name: $("words-model").value }, ...body });
  } catch (error) {
    setStatus(statusId, error.message, true);
    return null;
  }
}

function listNeighbours(id, neighbours) {
  $(id).replaceChildren(...neighbours.map((n) => el("li", { "data-word": n.word }, `${n.word} `,
    el("span", { class: "hint" }, n.score.toFixed(3)))));
}

async function neighbours() {
  const answer = await wordsCall(RPC.mostSimilar, { positive: words($("neighbours-word").value), topK: 10 });
  if (answer) listNeighbours("neighbours-results", answer.neighbours);
}

async function analogy() {
  const question = { a: $("analogy-a").value.trim(), b: $("analogy-b").value.trim(), c: $("analogy-c").value.trim() };
  const answer = await wordsCall(RPC.analogy, { questions: [question], topK: 5 });
  if (!answer) return;
  const result = answer.answers[0];
  if (result.unknownWords.length) {
    $("analogy-results").replaceChildren(el("li", { class: "status error" }, `unknown: ${result.unknownWords.join(", ")}`));
  } else {
    listNeighbours("analogy-results", result.candidates);
  }
}

async function oddOneOut() {
  const answer = await wordsCall(RPC.doesntMatch, { words: words($("odd-words").value) });
  if (answer) $("odd-result").textContent = answer.word;
}

// The first two principal components of the found words' vectors (power iteration with deflation).
function pca(vectors) {
  const d = vectors[0].length;
  const mean = new Array(d).fill(0);
  for (const v of vectors) v.forEach((x, j) => { mean[j] += x / vectors.length; });
  const rows = vectors.map((v) => v.map((x, j) => x - mean[j]));
  const components = [];
  for (let c = 0; c < 2; c++) {
    let axis = Array.from({ length: d }, (_, j) => Math.sin(j + 1 + c));
    for (let step = 0; step < 200; step++) {
      const scores = rows.map((r) => r.reduce((s, x, j) => s + x * axis[j], 0));
      const next = new Array(d).fill(0);
      rows.forEach((r, i) => r.forEach((x, j) => { next[j] += x * scores[i]; }));
      for (const previous of components) {
        const overlap = next.reduce((s, x, j) => s + x * previous[j], 0);
        previous.forEach((p, j) => { next[j] -= overlap * p; });
      }
      const norm = Math.hypot(...next) || 1;
      axis = next.map((x) => x / norm);
    }
    components.push(axis);
  }
  return rows.map((r) => components.map((axis) => r.reduce((s, x, j) => s + x * axis[j], 0)));
}

async function plotWords() {
  const list = [...new Set(words($("pca-words").value))].slice(0, 200);
  const plot = $("pca-plot");
  plot.replaceChildren();
  const answer = await wordsCall(RPC.embed, { words: list }, "pca-status");
  if (!answer) return;
  const found = answer.vectors.filter((v) => v.found);
  const missing = answer.vectors.filter((v) => !v.found).map((v) => v.word);
  setStatus("pca-status", missing.length ? `not in the vocabulary: ${missing.join(", ")}` : `${found.length} words`);
  if (found.length < 3) return;
  const points = pca(found.map((v) => v.values));
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const scale = (values, size) => {
    const [low, high] = [Math.min(...values), Math.max(...values)];
    return (v) => 40 + ((v - low) / (high - low || 1)) * (size - 100);
  };
  const [sx, sy] = [scale(xs, 640), scale(ys, 420)];
  found.forEach((v, i) => {
    const [x, y] = [sx(xs[i]), 420 - sy(ys[i])];
    const group = svg("g", { class: "point", "data-word": v.word });
    group.append(svg("circle", { cx: x, cy: y, r: 4, fill: COLORS[0] }), svg("text", { x: x + 6, y: y - 6 }, v.word));
    plot.append(group);
  });
}

// ---- live figures ------------------------------------------------------------------------------

let liveTimer = null;

async function refreshLive() {
  clearTimeout(liveTimer);
  if (!$("tab-live").classList.contains("active")) return;
  try {
    const report = await (await fetch("/api/live")).json();
    renderLive(report);
  } finally {
    liveTimer = setTimeout(refreshLive, 2000);
  }
}

function renderLive(report) {
  const root = $("live-figures");
  root.replaceChildren();
  for (const [family, data] of Object.entries(report.families)) {
    const section = el("div", { class: "live-family", "data-family": family }, el("h3", {}, family));
    if (data.error) section.append(el("p", { class: "status error" }, data.error));
    const points = data.points;
    if (!points.length) {
      section.append(el("p", { class: "hint" }, "waiting for two scrapes…"));
      root.append(section);
      continue;
    }
    const t0 = points[points.length - 1].t;
    const xs = points.map((p) => p.t - t0);
    const grid = el("div", { class: "live-grid" });
    const models = [...new Set(points.flatMap((p) => Object.keys(p.models)))].sort();
    for (const model of models) {
      const values = (key) => points.map((p) => (p.models[model] ? p.models[model][key] ?? null : null));
      grid.append(
        lineChart(xs, [{ name: "executions/s", color: COLORS[0], values: values("rate") }], { title: `${model}: executions/s` }),
        lineChart(xs, [{ name: "p50", color: COLORS[1], values: values("p50_ms") }, { name: "p99", color: COLORS[4], values: values("p99_ms") }], { title: `${model}: inference latency (ms)` }),
        lineChart(xs, [{ name: "rows", color: COLORS[2], values: values("batch") }], { title: `${model}: batch size` }),
      );
    }
    // Methods that saw traffic in the window (the services declare a series for every method).
    const methods = [...new Set(points.flatMap((p) => Object.keys(p.requests).filter((m) => p.requests[m].rate > 0)))].sort();
    const short = (method) => method.replace(/(^|\/)([a-z_]\w*\.)+(?=[A-Z])/g, "$1");
    const byMethod = (key) => methods.map((m, i) => ({
      name: short(m), color: COLORS[i % COLORS.length], values: points.map((p) => (p.requests[m] ? p.requests[m][key] : null)),
    }));
    const [rate, p99] = [byMethod("rate"), byMethod("p99_ms")];
    if (methods.length) {
      grid.append(lineChart(xs, rate, { title: "requests/s by method", width: 420 }), lineChart(xs, p99, { title: "p99 latency by method (ms)", width: 420 }));
    }
    section.append(grid);
    root.append(section);
  }
}

// ---- start -------------------------------------------------------------------------------------

async function start() {
  for (const button of document.querySelectorAll("#tabs button")) button.addEventListener("click", () => showTab(button.dataset.tab));
  setupDigits();
  $("translate-go").addEventListener("click", translate);
  $("generate-go").addEventListener("click", generate);
  $("generate-stop-button").addEventListener("click", () => generation.controller && generation.controller.abort());
  $("neighbours-go").addEventListener("click", neighbours);
  $("analogy-go").addEventListener("click", analogy);
  $("odd-go").addEventListener("click", oddOneOut);
  $("pca-go").addEventListener("click", plotWords);
  await loadFamilies();
  const selects = [["translator", "translate-model"], ["generator", "generate-model"], ["embedder", "words-model"]];
  for (const [family, id] of selects) {
    if (state.families[family].ready) fillSelect(family, id).catch((e) => setStatus("models-status", e.message, true));
  }
  await loadModelsTable();
  document.body.dataset.ready = "true";
}

document.addEventListener("DOMContentLoaded", start);
