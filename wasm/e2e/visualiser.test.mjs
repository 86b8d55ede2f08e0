// Browser tests of the visualiser: headless Debian Chromium driven by playwright-core.
// PAGE_URL points at a server of wasm/www; ARTIFACTS receives screenshots.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const URL = process.env.PAGE_URL ?? "http://127.0.0.1:8765/index.html";
const HERE = path.dirname(fileURLToPath(import.meta.url));
const GOLDEN = path.join(HERE, "..", "..", "core", "tests", "golden");
const ARTIFACTS = process.env.ARTIFACTS ?? path.join(HERE, "..", "..", "artifacts");
fs.mkdirSync(ARTIFACTS, { recursive: true });

let browser;
before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
});
after(async () => { await browser?.close(); });

async function open() {
  const page = await browser.newPage({ viewport: { width: 1500, height: 950 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(URL);
  await page.locator("body[data-ready='1']").waitFor({ timeout: 20000 });
  return { page, errors };
}

test("figure 8: stepping to the DNAT hop shows the VIP rewritten to an endpoint pod IP", async () => {
  const { page, errors } = await open();
  await page.selectOption("#scenario", "fig08_09_service_tcp");
  await page.click("#trace-btn");
  await page.locator("#hop-action").filter({ hasText: /./ }).waitFor();
  let steps = 0;
  while ((await page.textContent("#hop-action")) !== "nat") {
    await page.click("#step");
    steps += 1;
    assert.ok(steps < 400, "no nat hop reached");
  }
  const place = await page.textContent("#hop-place");
  assert.match(place, /^node1 cbr0 · PREROUTING$/);
  const rewrite = await page.textContent("#hop-after");
  assert.match(rewrite, /10\.96\.0\.10:80 tcp \[S\]\s+⇒\s+10\.244\.1\.3:\d+ > 10\.244\.(1\.2|2\.2):8080 tcp \[S\]/);
  assert.equal(await page.locator("#hop-headers td.changed").count(), 2, "dst and dport changed");
  assert.ok(await page.locator(".dev.hot.nat").count() === 1, "the bridge is highlighted as the NAT point");
  await page.screenshot({ path: path.join(ARTIFACTS, "fig08-dnat.png") });
  // The traced flow shows in node1's rule counters: one connection through one DNAT rule.
  await page.click("text=Node tables");
  await page.selectOption("#tnode", "node1");
  await page.selectOption("#twhat", "iptables-save -c");
  const saved = await page.textContent("#table");
  const dnat = saved.split("\n").filter((l) => /default\/web:http.*-j DNAT/.test(l));
  assert.ok(dnat.length >= 2, saved);
  assert.equal(dnat.filter((l) => l.startsWith("[1:")).length, 1, dnat.join("\n"));
  assert.deepEqual(errors, []);
  await page.close();
});

test("figure 8 replayed in nftables mode: the service-ips map hit, the DNAT by an endpoint chain, and nft's listing", async () => {
  const { page, errors } = await open();
  await page.selectOption("#scenario", "fig08_09_service_tcp");
  await page.selectOption("#mode", "nftables");
  await page.click("#trace-btn");
  await page.locator("#result").filter({ hasText: "delivered to pod/default/pod" }).waitFor();
  const map = page.locator("#hoplist li.a-rule").filter({ hasText: "10.96.0.10 . tcp . 80 : goto service-" }).first();
  await map.click();
  const rule = await page.textContent("#hop-rule");
  assert.match(rule, /^table ip kube-proxy chain services: ip daddr \. meta l4proto \. th dport vmap @service-ips\n← svc\/default\/web:http$/);
  const nat = page.locator("#hoplist li.a-nat").first();
  await nat.click();
  assert.match(await page.textContent("#hop-detail"), /^DNAT 10\.96\.0\.10:80 -> 10\.244\.(1\.2|2\.2):8080$/);
  // The rule hop before it is the endpoint chain's dnat.
  const dnat = page.locator("#hoplist li.a-rule").filter({ hasText: /ip kube-proxy endpoint-\S+ handle \d+$/ }).first();
  await dnat.click();
  assert.match(await page.textContent("#hop-rule"), /^table ip kube-proxy chain endpoint-[A-Z2-7]{8}-default\/web\/tcp\/http__10\.244\.(1\.2|2\.2)\/8080: meta l4proto tcp dnat to 10\.244\.(1\.2|2\.2):8080\n← svc\/default\/web:http$/);
  await page.screenshot({ path: path.join(ARTIFACTS, "fig08-nftables.png") });
  await page.click("text=Node tables");
  await page.selectOption("#tnode", "node1");
  await page.selectOption("#twhat", "nft");
  const listing = await page.textContent("#table");
  assert.match(listing, /^table ip kube-proxy \{\n\tcomment "rules for kube-proxy"\n/);
  assert.deepEqual(errors, []);
  await page.close();
});

test("figure 13: the ALB's path-routing step picks the /api target group", async () => {
  const { page, errors } = await open();
  await page.selectOption("#scenario", "fig13_ingress");
  await page.click("#trace-btn");
  await page.locator("#result").filter({ hasText: "delivered to pod/default/pod4" }).waitFor();
  // Step to the ALB's own connection to a node: the routing decision made on the path.
  let steps = 0;
  for (;;) {
    const place = await page.textContent("#hop-place");
    const after = await page.textContent("#hop-headers");
    if (place.startsWith("lb/default/shop eth0") && (await page.textContent("#hop-action")) === "tx" && /30080/.test(after)) break;
    await page.click("#step");
    steps += 1;
    assert.ok(steps < 600, "no ALB-to-node hop reached");
  }
  const headers = await page.textContent("#hop-headers");
  assert.match(headers, /192\.168\.0\.200/);
  assert.match(await page.textContent("#result"), /reply from 203\.0\.113\.200:80/);
  assert.ok(await page.locator("[id='dev:lb/default/shop|eth0'].hot").count() === 1);
  await page.screenshot({ path: path.join(ARTIFACTS, "fig13-alb.png") });
  assert.deepEqual(errors, []);
  await page.close();
});

test("the page's traces are byte-identical to the golden files", async () => {
  const { page, errors } = await open();
  const ids = fs.readdirSync(GOLDEN).filter((f) => f.endsWith(".json")).map((f) => f.slice(0, -5));
  assert.ok(ids.length >= 5);
  for (const id of ids) {
    const ours = await page.evaluate((i) => window.podnetGoldenJson(i), id);
    assert.equal(ours + "\n", fs.readFileSync(path.join(GOLDEN, `${id}.json`), "utf8"), id);
  }
  assert.deepEqual(errors, []);
  await page.close();
});

test("a pasted cluster loads, draws and traces; bad YAML shows where it is wrong", async () => {
  const { page, errors } = await open();
  const fixture = path.join(HERE, "..", "..", "core", "tests", "fixtures", "shop");
  const text = fs.readdirSync(fixture).sort().map((f) => fs.readFileSync(path.join(fixture, f), "utf8")).filter((t) => !t.trim().startsWith("{")).join("\n---\n");
  await page.click("#yaml-box summary");
  await page.fill("#yaml", text);
  await page.click("#load-yaml");
  await page.locator("#status").filter({ hasText: "loaded your cluster" }).waitFor();
  assert.equal(await page.locator("[id='dev:ip-10-0-0-11|cbr0']").count(), 1, "the loaded nodes are drawn");
  await page.fill("#from", "pod/shop/frontend-7d9f8c6b5-abcde");
  await page.fill("#to", "svc/shop/backend:api");
  await page.selectOption("#proto", "tcp");
  await page.click("#trace-btn");
  await page.locator("#result").filter({ hasText: "delivered to pod/shop/backend" }).waitFor();
  await page.fill("#yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  clusterIP: 10.96.0.9\n  ports:\n  - port: eighty\n");
  await page.click("#load-yaml");
  await page.locator("#status").filter({ hasText: "error" }).waitFor();
  assert.match(await page.textContent("#status"), /line 7, column 11: spec\.ports\[0\]\.port/);
  await page.screenshot({ path: path.join(ARTIFACTS, "yaml-cluster.png") });
  assert.deepEqual(errors, []);
  await page.close();
});

test("NetworkPolicy verdicts show at the pod's interface, and the enforcement picker changes them", async () => {
  const { page, errors } = await open();
  const fixture = path.join(HERE, "..", "..", "core", "tests", "fixtures", "shop");
  const policy = [
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: allow-frontend, namespace: shop}",
    "spec:\n  podSelector: {matchLabels: {app: backend}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {app: frontend}}}]",
  ].join("\n");
  const egress = [
    "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: frontend-out, namespace: shop}",
    "spec:\n  podSelector: {matchLabels: {app: frontend}}\n  policyTypes: [Egress]\n  egress:\n  - to: [{ipBlock: {cidr: 10.96.0.0/12}}]",
  ].join("\n");
  const text = fs.readdirSync(fixture).sort().map((f) => fs.readFileSync(path.join(fixture, f), "utf8"))
    .filter((t) => !t.trim().startsWith("{")).concat([policy]).join("\n---\n");
  await page.click("#yaml-box summary");
  await page.fill("#yaml", text);
  await page.click("#load-yaml");
  await page.locator("#status").filter({ hasText: "loaded your cluster" }).waitFor();
  await page.fill("#from", "pod/shop/frontend-7d9f8c6b5-abcde");
  await page.fill("#to", "svc/shop/backend:api");
  await page.click("#trace-btn");
  await page.locator("#result").filter({ hasText: "delivered to pod/shop/backend" }).waitFor();
  // The allow verdict is a hop of its own at the backend's host-side veth.
  const allow = page.locator("#hoplist li.a-policy").first();
  assert.match(await allow.textContent(), /allowed by netpol\/shop\/allow-frontend spec\.ingress\[0\]/);
  await allow.click();
  assert.match(await page.textContent("#hop-rule"), /NetworkPolicy verdict at veth\d: allowed by netpol\/shop\/allow-frontend/);
  assert.equal(await page.locator(".dev.hot.policy").count(), 1, "the veth is lit as an allow");
  await page.screenshot({ path: path.join(ARTIFACTS, "netpol-allow.png") });
  // A pod the policy does not name is dropped there, and the result says by what.
  await page.fill("#from", "pod/shop/backend-5c4b9d7f8-bbbbb");
  await page.fill("#to", "pod/shop/backend-5c4b9d7f8-aaaaa:9000");
  await page.click("#trace-btn");
  await page.locator("#result").filter({ hasText: "policy_denied_ingress" }).waitFor();
  assert.match(await page.textContent("#result"), /isolated for ingress by netpol\/shop\/allow-frontend; no rule allows 10\.244\.2\.9 → 10\.244\.1\.7 TCP 9000/);
  // Egress to the Service CIDR only: denied after DNAT, allowed before it.
  await page.fill("#yaml", text + "\n---\n" + egress);
  await page.click("#load-yaml");
  await page.locator("#status").filter({ hasText: "loaded your cluster" }).waitFor();
  await page.fill("#from", "pod/shop/frontend-7d9f8c6b5-abcde");
  await page.fill("#to", "svc/shop/backend:api");
  await page.click("#trace-btn");
  await page.locator("#result").filter({ hasText: "policy_denied_egress" }).waitFor();
  await page.selectOption("#netpol", "pre-dnat");
  await page.click("#trace-btn");
  await page.locator("#result").filter({ hasText: "delivered to pod/shop/backend" }).waitFor();
  assert.deepEqual(errors, []);
  await page.close();
});

test("a free-form flow traces and errors are shown, not thrown", async () => {
  const { page, errors } = await open();
  await page.selectOption("#scenario", "");
  await page.fill("#from", "pod/default/pod1");
  await page.fill("#to", "10.244.2.2:8080");
  await page.selectOption("#proto", "udp");
  await page.click("#trace-btn");
  await page.locator("#result").filter({ hasText: "delivered" }).waitFor();
  assert.match(await page.textContent("#result"), /delivered to pod\/default\/pod3; completed/);
  await page.fill("#from", "pod/default/nope");
  await page.click("#trace-btn");
  await page.locator("#status").filter({ hasText: "error" }).waitFor();
  assert.match(await page.textContent("#status"), /no pod named 'pod\/default\/nope'/);
  await page.screenshot({ path: path.join(ARTIFACTS, "free-form.png") });
  assert.deepEqual(errors, []);
  await page.close();
});

// The same cluster as `podnet_benches::cluster_yaml(50, 30, 100)`: 50 nodes, 1,500 pods
// spread over 100 Services, no status (the engine assigns addresses).
function bigCluster(nodes = 50, perNode = 30, services = 100) {
  const docs = [];
  for (let n = 1; n <= nodes; n++) {
    docs.push(`apiVersion: v1\nkind: Node\nmetadata: {name: node${n}}\nspec: {podCIDR: 10.244.${n}.0/24}\nstatus: {addresses: [{type: InternalIP, address: 192.168.0.${n}}]}\n`);
  }
  for (let s = 0; s < services; s++) {
    docs.push(`apiVersion: v1\nkind: Service\nmetadata: {name: app${s}, namespace: default}\nspec:\n  selector: {app: app${s}}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n`);
  }
  for (let n = 1; n <= nodes; n++) {
    for (let k = 0; k < perNode; k++) {
      const app = ((n - 1) * perNode + k) % services;
      docs.push(`apiVersion: v1\nkind: Pod\nmetadata: {name: p${n}-${k}, namespace: default, labels: {app: app${app}}}\nspec:\n  nodeName: node${n}\n  containers: [{name: c, image: x, ports: [{containerPort: 8080}]}]\n`);
    }
  }
  return docs.join("---\n");
}

test("a 50-node, 1,500-pod cluster draws collapsed per node and replays; frame times recorded", async () => {
  const { page, errors } = await open();
  await page.click("#yaml-box summary");
  await page.locator("#yaml").waitFor();
  await page.evaluate((text) => { document.getElementById("yaml").value = text; }, bigCluster());
  const t0 = Date.now();
  await page.click("#load-yaml");
  await page.locator("#status").filter({ hasText: "loaded your cluster" }).waitFor({ timeout: 60000 });
  const loadMs = Date.now() - t0;
  assert.equal(await page.getAttribute("#topo", "data-compact"), "1");
  assert.equal(await page.locator("[id^='ns:node']").count(), 50, "one box per node");
  assert.equal(await page.locator(".podsbox").count(), 50, "pods collapsed into one box per node");
  assert.equal(await page.textContent("[id='pods:node7'] + text"), "30 pods");
  await page.fill("#from", "pod/default/p1-0");
  await page.fill("#to", "svc/default/app3:http");
  await page.selectOption("#proto", "tcp");
  await page.click("#trace-btn");
  await page.locator("#result").filter({ hasText: "completed" }).waitFor({ timeout: 30000 });
  const result = await page.textContent("#result");
  // app3's pods are the 4th, 104th, ... pod: p1-3, p4-13, p7-23, ...
  assert.match(result, /delivered to pod\/default\/p\d+-\d+; completed/);
  // At the first hop the packet is in p1-0, which node1's collapsed box names.
  assert.match(await page.textContent("[id='pods:node1'] + text"), /^p1-0 10\.244\.1\.\d+$/);
  assert.equal(await page.locator(".podsbox.hot").count(), 1);
  // Frame times while the trace plays at full speed (20 hops/s).
  await page.fill("#speed", "20");
  const frames = await page.evaluate(async () => {
    const gaps = [];
    let last = performance.now();
    let stop = false;
    const tick = (t) => { gaps.push(t - last); last = t; if (!stop) requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
    document.getElementById("first").click();
    document.getElementById("play").click();
    await new Promise((r) => setTimeout(r, 3000));
    stop = true;
    document.getElementById("play").click();
    return gaps.slice(1);
  });
  assert.ok(frames.length > 10, `only ${frames.length} frames in 3 s`);
  const sorted = frames.slice().sort((a, b) => a - b);
  const q = (f) => sorted[Math.min(sorted.length - 1, Math.floor(f * sorted.length))];
  const stats = {
    cluster: "50 nodes, 1,500 pods, 100 Services",
    load_and_draw_ms: loadMs,
    draw_ms: Math.round(await page.evaluate(() => window.podnetDrawMs)),
    frames: frames.length,
    frame_ms_median: Number(q(0.5).toFixed(1)),
    frame_ms_p95: Number(q(0.95).toFixed(1)),
    frame_ms_max: Number(sorted[sorted.length - 1].toFixed(1)),
  };
  fs.writeFileSync(path.join(ARTIFACTS, "frame-times.json"), JSON.stringify(stats, null, 2) + "\n");
  console.log(`# frame times: ${JSON.stringify(stats)}`);
  await page.screenshot({ path: path.join(ARTIFACTS, "cluster-50-nodes.png") });
  assert.deepEqual(errors, []);
  await page.close();
});
