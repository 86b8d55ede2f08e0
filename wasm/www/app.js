// podnet visualiser: draws the reference cluster, runs a flow in the wasm build of podnet,
// and replays its hops. Trace JSON comes straight from the Rust engine.
const $ = (id) => document.getElementById(id);
let mod = null;        // the wasm module's exports
let cluster = null;    // a Podnet handle
let generation = 0;    // bumped on re-instantiation after a trap
let trace = null, cur = -1, timer = null;
const pos = new Map(); // "netns|device" -> {x, y}
// Large clusters are drawn compact: nodes in a grid, each node's pods collapsed into one box
// that names the pod a packet is in. podBox: pod netns -> {rect, label, name, count}.
const COMPACT_NODES = 6, COMPACT_PODS = 8;
const podBox = new Map();

async function load() {
  generation += 1;
  // A fresh module URL gives a fresh instance (a trapped instance is unusable).
  const m = await import(`./pkg/podnet_wasm.js?g=${generation}`);
  await m.default();
  mod = m;
  cluster = new m.Podnet(Number($("seed").value) || 0);
}

async function safe(fn) {
  try {
    return fn();
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) {
      status(`engine crashed (${e.message}); restarting it`);
      await load();
      return null;
    }
    throw e;
  }
}

function status(s) { $("status").textContent = s; }

function drawTopology(topo) {
  const svg = $("topo");
  svg.innerHTML = "";
  pos.clear();
  const el = (tag, attrs, text) => {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e);
    return e;
  };
  const dev = (ns, name, x, y, w, label) => {
    const r = el("rect", { x: x - w / 2, y: y - 11, width: w, height: 22, rx: 4, class: "dev", id: `dev:${ns}|${name}` });
    el("text", { x, y: y + 4, "text-anchor": "middle", class: "lbl" }, label || name);
    pos.set(`${ns}|${name}`, { x, y });
    return r;
  };
  // The edge on top: internet host(s) and gateway on the left, load balancers on the right,
  // the VPC router in the middle.
  el("rect", { x: 380, y: 10, width: 240, height: 60, rx: 8, class: "box", id: "ns:vpc" });
  el("text", { x: 500, y: 26, "text-anchor": "middle", class: "lbl" }, `VPC router ${topo.vpc_router}`);
  dev("vpc", "vpc0", 470, 52, 60);
  if (topo.edge.some((b) => b.kind === "gateway")) dev("vpc", "vpc1", 560, 52, 60);
  pos.set("vpc|", { x: 500, y: 40 });
  const left = topo.edge.filter((b) => b.kind === "gateway" || b.kind === "host");
  const right = topo.edge.filter((b) => b.kind === "lb" || b.kind === "alb");
  const place = (list, x0, dir) => list.forEach((b, i) => {
    const x = x0 + dir * i * 190;
    el("rect", { x, y: 10, width: 180, height: 60, rx: 8, class: "box", id: `ns:${b.netns}` });
    el("text", { x: x + 90, y: 26, "text-anchor": "middle", class: "small" }, b.label);
    const w = 170 / Math.max(b.devices.length, 1);
    b.devices.forEach(([name, addr], j) => dev(b.netns, name, x + 5 + w * (j + 0.5), 52, w - 6, w < 120 ? name : `${name} ${addr}`.trim()));
    pos.set(`${b.netns}|`, { x: x + 90, y: 40 });
  });
  place(left.slice().reverse(), 0, 1);
  place(right, 630, 1);
  podBox.clear();
  const compact = topo.nodes.length > COMPACT_NODES || topo.nodes.some((x) => x.pods.length > COMPACT_PODS);
  svg.dataset.compact = compact ? "1" : "0";
  if (compact) return drawCompact(topo, el, dev);
  svg.setAttribute("viewBox", "0 0 1000 560");
  const n = topo.nodes.length;
  const w = Math.min(320, 960 / n - 10);
  topo.nodes.forEach((node, i) => {
    const x0 = 20 + i * (960 / n);
    const cx = x0 + w / 2;
    el("path", { d: `M${cx},128 L${cx},100 L500,100 L500,63`, class: "wire" });
    el("rect", { x: x0, y: 110, width: w, height: 430, rx: 8, class: "box", id: `ns:${node.name}` });
    el("text", { x: x0 + 8, y: 126, class: "lbl" }, `${node.name}  (root netns)`);
    el("text", { x: x0 + 8, y: 140, class: "small" }, `pod CIDR ${node.pod_cidr}`);
    dev(node.name, "eth0", cx, 160, 150, `eth0 ${node.ip}`);
    dev(node.name, "cbr0", cx, 240, 170, `cbr0 ${node.bridge_ip}`);
    el("path", { d: `M${cx},171 L${cx},229`, class: "wire" });
    pos.set(`${node.name}|`, { x: cx, y: 200 });
    const k = Math.max(node.pods.length, 1);
    node.pods.forEach((p, j) => {
      const px = x0 + (w / k) * (j + 0.5);
      el("path", { d: `M${cx},251 L${px},300`, class: "wire" });
      dev(node.name, p.veth, px, 310, 64);
      el("path", { d: `M${px},321 L${px},388`, class: "wire" });
      el("rect", { x: px - w / k / 2 + 6, y: 370, width: w / k - 12, height: 150, rx: 6, class: "nsbox", id: `ns:${p.key}` });
      dev(p.key, "eth0", px, 398, 70, "eth0");
      dev(p.key, "lo", px, 440, 50, "lo");
      el("text", { x: px, y: 470, "text-anchor": "middle", class: "lbl" }, p.name);
      el("text", { x: px, y: 486, "text-anchor": "middle", class: "small" }, p.ip);
      el("text", { x: px, y: 502, "text-anchor": "middle", class: "small" }, p.containers.join(" + "));
      pos.set(`${p.key}|`, { x: px, y: 420 });
    });
  });
  el("circle", { id: "pkt", r: 7, cx: -20, cy: -20, class: "pkt" });
}

// Nodes in a grid of small boxes: eth0, cbr0, and the node's pods as one box.
function drawCompact(topo, el, dev) {
  const n = topo.nodes.length;
  const cols = Math.min(10, Math.max(1, Math.ceil(Math.sqrt(n * 2))));
  const cw = 980 / cols, w = cw - 8, h = 92;
  const rows = Math.ceil(n / cols);
  const top = 110;
  svg().setAttribute("viewBox", `0 0 1000 ${top + rows * (h + 8) + 10}`);
  // The VPC subnet as a bus: a trunk down the left margin, one line above each row.
  const lastY = top + (rows - 1) * (h + 8) - 4;
  el("path", { d: `M500,63 L500,100 L4,100 L4,${lastY}`, class: "wire" });
  for (let r = 0; r < rows; r++) {
    const y = top + r * (h + 8) - 4;
    el("path", { d: `M4,${y} L990,${y}`, class: "wire" });
  }
  topo.nodes.forEach((node, i) => {
    const x0 = 10 + (i % cols) * cw, y0 = top + Math.floor(i / cols) * (h + 8);
    const cx = x0 + w / 2;
    el("path", { d: `M${cx},${y0} L${cx},${y0 - 4}`, class: "wire" });
    el("rect", { x: x0, y: y0, width: w, height: h, rx: 6, class: "box", id: `ns:${node.name}` });
    el("text", { x: x0 + 4, y: y0 + 12, class: "small" }, node.name);
    dev(node.name, "eth0", cx, y0 + 26, w - 10, w > 150 ? `eth0 ${node.ip}` : "eth0");
    dev(node.name, "cbr0", cx, y0 + 50, w - 10, w > 150 ? `cbr0 ${node.bridge_ip}` : "cbr0");
    pos.set(`${node.name}|`, { x: cx, y: y0 + 38 });
    const py = y0 + 76;
    const rect = el("rect", { x: x0 + 5, y: py - 11, width: w - 10, height: 22, rx: 4, class: "podsbox", id: `pods:${node.name}` });
    const count = node.pods.length;
    const label = el("text", { x: cx, y: py + 4, "text-anchor": "middle", class: "small" }, `${count} pods`);
    for (const p of node.pods) {
      pos.set(`${p.key}|`, { x: cx, y: py });
      pos.set(`${p.key}|eth0`, { x: cx, y: py });
      pos.set(`${p.key}|lo`, { x: cx, y: py });
      pos.set(`${node.name}|${p.veth}`, { x: cx, y: py - 12 });
      podBox.set(p.key, { rect, label, name: `${p.name} ${p.ip}`, count, node: node.name });
      podBox.set(`${node.name}|${p.veth}`, { rect, label, name: `${p.veth} → ${p.name}`, count, node: node.name });
    }
  });
  el("circle", { id: "pkt", r: 6, cx: -20, cy: -20, class: "pkt" });
}

function svg() { return $("topo"); }

function fmtView(v) {
  if (!v) return "";
  const ep = (a, p) => (p === undefined || p === null ? a : `${a}:${p}`);
  const info = v.info ? (v.proto === "tcp" ? ` [${v.info}]` : ` ${v.info}`) : "";
  return `${ep(v.src, v.sport)} > ${ep(v.dst, v.dport)} ${v.proto}${info}`;
}

function showHop(i) {
  if (!trace || i < 0 || i >= trace.hops.length) return;
  cur = i;
  const h = trace.hops[i];
  $("counter").textContent = `hop ${i + 1} / ${trace.hops.length}`;
  $("hop-step").textContent = `(${i + 1}) packet ${h.packet}`;
  $("hop-dir").textContent = h.direction;
  $("hop-action").textContent = h.action;
  $("hop-place").textContent = `${h.netns}${h.device ? " " + h.device : ""}${h.hook ? " · " + h.hook : ""}`;
  $("hop-detail").textContent = h.detail;
  // An nf_tables table is named with its family ("ip kube-proxy"), an iptables one is not.
  const nft = (h.table ?? "").includes(" ");
  $("hop-rule").textContent = h.rule
    ? (nft ? `table ${h.table} chain ${h.chain}: ${h.rule}` : `${h.table} ${h.chain}: -A ${h.chain} ${h.rule}`) +
      (h.origin ? "\n← " + h.origin : "")
    : h.action === "policy"
      ? `NetworkPolicy verdict at ${h.device}: allowed by ${h.origin}`
      : (h.reason ?? "").startsWith("policy_denied_")
        ? `NetworkPolicy verdict at ${h.device}: ${h.reason}`
        : "";
  const tb = $("hop-headers").querySelector("tbody");
  tb.innerHTML = "";
  const b = h.before || {}, a = h.after || null;
  for (const k of ["src_mac", "dst_mac", "proto", "src", "sport", "dst", "dport", "info"]) {
    if (b[k] === undefined && (!a || a[k] === undefined)) continue;
    const tr = document.createElement("tr");
    const changed = a && a[k] !== b[k];
    tr.innerHTML = `<th>${k}</th><td>${b[k] ?? ""}</td><td class="${changed ? "changed" : ""}">${a ? a[k] ?? "" : ""}</td>`;
    tb.appendChild(tr);
  }
  $("hop-after").textContent = a ? `${fmtView(b)}  ⇒  ${fmtView(a)}` : "";
  document.querySelectorAll(".dev.hot, .podsbox.hot").forEach((e) => e.classList.remove("hot", "nat", "drop", "policy"));
  const key = `${h.netns}|${h.device ?? ""}`;
  // Collapsed pods: the node's box names the pod (or veth) the packet is at.
  for (const b of podBox.values()) b.label.textContent = `${b.count} pods`;
  const box = podBox.get(key) ?? podBox.get(h.netns);
  if (box) box.label.textContent = box.name;
  const target = document.getElementById(`dev:${key}`) ?? box?.rect;
  if (target) target.classList.add("hot", h.action === "nat" ? "nat" : h.action === "drop" ? "drop" : h.action === "policy" ? "policy" : "x");
  const p = pos.get(key) || pos.get(`${h.netns}|`);
  if (p) {
    const dot = $("pkt");
    dot.style.transitionDuration = `${Math.min(0.35, 0.7 / Number($("speed").value))}s`;
    dot.setAttribute("cx", p.x);
    dot.setAttribute("cy", p.y);
    dot.setAttribute("class", `pkt ${h.direction}`);
  }
  document.querySelectorAll("#hoplist li").forEach((li, j) => li.classList.toggle("cur", j === i));
  const li = $("hoplist").children[i];
  if (li) li.scrollIntoView({ block: "nearest" });
}

function setTrace(json) {
  trace = JSON.parse(json);
  window.podnetLastTraceJson = json;
  const r = trace;
  $("result").textContent = `${r.from} → ${r.to} (${r.proto}): ${r.disposition}` +
    `${r.delivered_to ? " to " + r.delivered_to : ""}; ${r.completed ? "completed" : "NOT completed"}` +
    `${r.server_saw ? "; server saw " + r.server_saw : ""}; reply from ${r.reply_from ?? "nobody"}` +
    `${r.reason ? "\nreason: " + r.reason + ": " + r.reason_text : ""}`;
  const ol = $("hoplist");
  ol.innerHTML = "";
  trace.hops.forEach((h, i) => {
    const li = document.createElement("li");
    li.className = `a-${h.action}`;
    li.textContent = `${h.direction === "reply" ? "←" : "→"} ${h.netns} ${h.device ?? ""} ${h.action}: ${h.detail || h.rule || ""}`;
    li.onclick = () => showHop(i);
    ol.appendChild(li);
  });
  showHop(0);
  refreshTable();
}

async function run() {
  stop();
  const sel = $("scenario").value;
  await safe(() => {
    cluster = custom ?? new mod.Podnet(Number($("seed").value) || 0);
    cluster.set_policy_enforcement($("netpol").value);
    const s = sel && !custom ? scenarios.find((x) => x.id === sel) : null;
    if (s && $("mode").value === (s.ipvs ? "ipvs" : "iptables")) {
      setTrace(mod.golden_trace(sel, Number($("seed").value) || 0));
      // Keep the handle's tables in step with what was traced.
      cluster.set_ipvs(s.ipvs);
      cluster.trace(s.from, s.to, s.proto);
    } else {
      // A free-form flow, or a scenario replayed in another mode.
      cluster.set_proxy_mode($("mode").value);
      setTrace(s ? cluster.trace(s.from, s.to, s.proto)
        : cluster.trace($("from").value, $("to").value, $("proto").value));
    }
    status("ready");
  }).catch((e) => status(`error: ${e.message}`));
}

function refreshTable() {
  try {
    $("table").textContent = cluster.table($("tnode").value, $("twhat").value);
  } catch (e) {
    $("table").textContent = `error: ${e.message}`;
  }
}

function stop() { if (timer) { clearInterval(timer); timer = null; $("play").textContent = "▶"; } }
function play() {
  if (timer) return stop();
  $("play").textContent = "⏸";
  timer = setInterval(() => {
    if (!trace || cur + 1 >= trace.hops.length) return stop();
    showHop(cur + 1);
  }, 1000 / Number($("speed").value));
}

let scenarios = [];
let custom = null; // a cluster loaded from the YAML box, if any

function drawCluster() {
  const t0 = performance.now();
  const topo = JSON.parse(cluster.topology());
  drawTopology(topo);
  window.podnetDrawMs = performance.now() - t0;
  $("tnode").innerHTML = topo.nodes.map((n) => `<option>${n.name}</option>`).join("");
}

async function main() {
  await load();
  scenarios = JSON.parse(mod.scenarios());
  const sel = $("scenario");
  sel.innerHTML = `<option value="">(free-form flow)</option>` +
    scenarios.map((s) => `<option value="${s.id}">Figures ${s.figures}: ${s.title}</option>`).join("");
  sel.onchange = () => {
    const s = scenarios.find((x) => x.id === sel.value);
    if (s) {
      $("from").value = s.from; $("to").value = s.to; $("proto").value = s.proto;
      $("mode").value = s.ipvs ? "ipvs" : "iptables";
    }
  };
  drawCluster();
  $("tnode").onchange = refreshTable;
  $("twhat").onchange = refreshTable;
  $("trace-btn").onclick = run;
  $("load-yaml").onclick = () => {
    try {
      const c = mod.Podnet.from_yaml($("yaml").value);
      custom = c;
      cluster = c;
      drawCluster();
      $("scenario").value = "";
      status("loaded your cluster: pick from/to and Trace");
    } catch (e) {
      status(`error: ${e.message}`);
    }
  };
  $("load-seed").onclick = () => {
    custom = null;
    cluster = new mod.Podnet(Number($("seed").value) || 0);
    drawCluster();
    status("reference cluster");
  };
  $("step").onclick = () => showHop(cur + 1);
  $("prev").onclick = () => showHop(cur - 1);
  $("first").onclick = () => showHop(0);
  $("play").onclick = play;
  // Test hook: the JSON of a golden trace, exactly as the engine produced it.
  window.podnetGoldenJson = (id) => mod.golden_trace(id, 0);
  status("ready");
  document.body.dataset.ready = "1";
}

main().catch((e) => status(`failed to start: ${e}`));
