// The demo page of `eomt serve`: send an image to /v1/segment, draw the segments over it, list them.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, file: null, image: null, result: null, index: null, hovered: -1, selected: -1,
  key: sessionStorage.getItem("eomt-api-key") || "" };

// The colours of eomt's own overlays (eomt.outputs.overlay.PALETTE): golden-ratio hue steps.
const PALETTE = (() => {
  const golden = (Math.sqrt(5) - 1) / 2, sats = [0.75, 0.55, 0.95], vals = [0.95, 0.75];
  const colours = [];
  for (let i = 0; i < 256; i++) {
    const h = (0.08 + i * golden) % 1, s = sats[i % 3], v = vals[Math.floor(i / 3) % 2];
    const sector = Math.floor(h * 6), f = h * 6 - sector;
    const p = v * (1 - s), q = v * (1 - s * f), t = v * (1 - s * (1 - f));
    const rgb = [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][sector % 6];
    colours.push(rgb.map((c) => Math.round(c * 255)));
  }
  return colours;
})();

function colourOf(segment) {
  const id = state.result.task === "panoptic" ? segment.id - 1 : segment.id;  // as `eomt predict` colours them
  return PALETTE[((id % 256) + 256) % 256];
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.key) headers.Authorization = `Bearer ${state.key}`;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    $("key-form").hidden = false;
    throw new Error("this service needs an API key: enter it above");
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response.json();
}

async function loadModel() {
  try {
    state.model = await api("/v1/model");
  } catch (error) {
    $("model-info").textContent = "";
    showError(error.message);
    setTimeout(loadModel, 3000);  // e.g. still loading (503): try again
    return;
  }
  showError("");
  $("key-form").hidden = true;
  const m = state.model;
  const labels = Object.keys(m.labels).length;
  $("model-info").textContent = `${m.model} · ${m.task} · ${labels} classes · input ${m.input_size.height}x` +
    `${m.input_size.width} · ${m.backend} ${m.dtype} on ${m.devices.join(", ")}`;
  $("task").replaceChildren(...m.tasks.map((t) => new Option(t, t, t === m.task, t === m.task)));
  $("threshold").value = m.threshold;
  updateThreshold();
  if (state.file) segment();
}

function updateThreshold() {
  $("threshold-value").textContent = Number($("threshold").value).toFixed(2);
  $("threshold-label").classList.toggle("disabled", $("task").value === "semantic");
  $("threshold").disabled = $("task").value === "semantic";  // semantic results keep every class
}

function chooseFile(file) {
  if (!file) return;
  state.file = file;
  const image = new Image();
  image.onload = () => { state.image = image; segment(); };
  image.onerror = () => showError(`${file.name}: this browser cannot show the image (the service may still read it)`);
  image.src = URL.createObjectURL(file);
}

async function segment() {
  if (!state.file || !state.model || !state.image) return;
  const query = new URLSearchParams({ task: $("task").value, threshold: $("threshold").value, format: "json" });
  $("status").textContent = "segmenting…";
  showError("");
  const started = performance.now();
  try {
    const result = await api(`/v1/segment?${query}`, { method: "POST", body: state.file,
      headers: { "Content-Type": state.file.type || "application/octet-stream" } });
    state.index = await segmentIndex(result);
    state.result = result;
    state.hovered = state.selected = -1;
    $("status").textContent = `${result.segments.length} segments in ${Math.round(performance.now() - started)} ms`;
    renderList();
    render();
  } catch (error) {
    $("status").textContent = "";
    showError(error.message);
  }
}

// Per pixel, the index in result.segments of the segment shown there (-1: none).
async function segmentIndex(result) {
  const n = result.width * result.height, index = new Int32Array(n).fill(-1);
  if (result.task === "instance") {
    const order = result.segments.map((s, i) => i).sort((a, b) => result.segments[a].score - result.segments[b].score);
    for (const i of order) {  // the highest score is drawn last, on top
      const mask = decodeRle(result.segments[i].rle);
      for (let p = 0; p < n; p++) if (mask[p]) index[p] = i;
    }
    return index;
  }
  const png = await loadImage(`data:image/png;base64,${result.png}`);
  const canvas = new OffscreenCanvas(result.width, result.height);
  const context = canvas.getContext("2d");
  context.drawImage(png, 0, 0);
  const pixels = context.getImageData(0, 0, result.width, result.height).data;
  const byId = new Map(result.segments.map((s, i) => [s.id, i]));
  for (let p = 0; p < n; p++) {
    const r = pixels[4 * p], g = pixels[4 * p + 1], b = pixels[4 * p + 2];
    const id = result.task === "panoptic" ? r + 256 * g + 65536 * b : r;  // panoptic: COCO ids; semantic: class
    const i = byId.get(id);
    if (i !== undefined) index[p] = i;
  }
  return index;
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("could not decode the segmentation PNG"));
    image.src = src;
  });
}

// COCO compressed RLE (pycocotools' string form), column-major, runs of 0 then 1 alternating.
function decodeRle(rle) {
  const [h, w] = rle.size, s = rle.counts, counts = [];
  for (let p = 0; p < s.length;) {
    let x = 0, k = 0, more = 1;
    while (more) {
      const c = s.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = c & 0x20;
      p++; k++;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  const mask = new Uint8Array(h * w);
  let position = 0, value = 0;
  for (const run of counts) {
    if (value) for (let q = position; q < position + run; q++) mask[(q % h) * w + Math.floor(q / h)] = 1;
    position += run;
    value = 1 - value;
  }
  return mask;
}

function renderList() {
  const r = state.result;
  $("segment-count").textContent = `(${r.segments.length})`;
  const total = r.width * r.height;
  $("segments").replaceChildren(...r.segments.map((s, i) => {
    const item = document.createElement("li");
    item.dataset.index = i;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${colourOf(s).join(",")})`;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = s.label;
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `${s.score === null ? "" : s.score.toFixed(3) + " · "}${(100 * s.area / total).toFixed(1)}%`;
    item.append(swatch, label, score);
    item.addEventListener("mouseenter", () => highlight(i));
    item.addEventListener("mouseleave", () => highlight(-1));
    item.addEventListener("click", () => { state.selected = state.selected === i ? -1 : i; render(); });
    return item;
  }));
}

function highlight(i) {
  if (state.hovered === i) return;
  state.hovered = i;
  render();
}

function render() {
  const r = state.result, canvas = $("overlay");
  if (!r) return;
  canvas.width = r.width;
  canvas.height = r.height;
  const context = canvas.getContext("2d");
  context.drawImage(state.image, 0, 0, r.width, r.height);
  const frame = context.getImageData(0, 0, r.width, r.height), px = frame.data, index = state.index;
  const focus = state.hovered >= 0 ? state.hovered : state.selected;
  const colours = r.segments.map(colourOf);
  for (let y = 0; y < r.height; y++) {
    for (let x = 0; x < r.width; x++) {
      const p = y * r.width + x, i = index[p];
      if (i < 0) continue;
      const edge = (x + 1 < r.width && index[p + 1] !== i) || (y + 1 < r.height && index[p + r.width] !== i) ||
        (x > 0 && index[p - 1] !== i) || (y > 0 && index[p - r.width] !== i);
      const alpha = edge ? (focus < 0 || focus === i ? 1 : 0.3) : focus < 0 ? 0.5 : focus === i ? 0.7 : 0.12;
      const c = colours[i];
      for (let k = 0; k < 3; k++) px[4 * p + k] = Math.round(px[4 * p + k] * (1 - alpha) + c[k] * alpha);
    }
  }
  context.putImageData(frame, 0, 0);
  canvas.dataset.focus = String(focus);
  for (const item of $("segments").children) {
    const i = Number(item.dataset.index);
    item.classList.toggle("active", i === state.hovered);
    item.classList.toggle("selected", i === state.selected);
  }
  $("hover-label").textContent = focus >= 0 ? describe(r.segments[focus]) : "";
}

function describe(s) {
  return `${s.label}${s.score === null ? "" : ` (${s.score.toFixed(3)})`} · ${s.area} px · ${s.isthing ? "thing" : "stuff"}`;
}

function pixelUnder(event) {
  const canvas = $("overlay"), box = canvas.getBoundingClientRect();
  const x = Math.floor((event.clientX - box.left) * canvas.width / box.width);
  const y = Math.floor((event.clientY - box.top) * canvas.height / box.height);
  if (!state.index || x < 0 || y < 0 || x >= canvas.width || y >= canvas.height) return -1;
  return state.index[y * canvas.width + x];
}

$("overlay").addEventListener("mousemove", (event) => highlight(pixelUnder(event)));
$("overlay").addEventListener("mouseleave", () => highlight(-1));
$("overlay").addEventListener("click", (event) => {
  const i = pixelUnder(event);
  state.selected = state.selected === i ? -1 : i;
  render();
});
$("file").addEventListener("change", (event) => chooseFile(event.target.files[0]));
$("task").addEventListener("change", () => { updateThreshold(); segment(); });
$("threshold").addEventListener("input", updateThreshold);
$("threshold").addEventListener("change", segment);
const drop = $("drop");
for (const name of ["dragenter", "dragover"]) {
  drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
}
for (const name of ["dragleave", "drop"]) {
  drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.remove("over"); });
}
drop.addEventListener("drop", (event) => chooseFile(event.dataTransfer.files[0]));
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = $("key").value.trim();
  sessionStorage.setItem("eomt-api-key", state.key);
  loadModel();
});
loadModel();
