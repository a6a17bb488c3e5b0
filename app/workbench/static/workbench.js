/* Stepwise Workbench: one page, no dependencies, no network beyond this app.
 * Sections are rendered from the JSON API under workbench/api/ (relative to this page).
 * All text goes through textContent (never innerHTML), so data cannot inject markup. */
"use strict";

(function () {
  const API = "workbench/api/";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const main = document.getElementById("main");
  const app = { timers: [], aborts: [], flows: null, section: null };

  // -- small helpers ---------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  // Like el.replaceChildren, but null/false children are skipped (the DOM would print "null").
  function replace(el, ...children) {
    while (el.firstChild) el.firstChild.remove();
    return append(el, children);
  }

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, String(v));
    }
    for (const child of children.flat()) if (child) el.append(child);
    return el;
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function token() {
    return sessionStorage.getItem("stepwise.token") || "";
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    if (token()) headers.Authorization = "Bearer " + token();
    return headers;
  }

  async function api(path, opts) {
    opts = opts || {};
    const headers = authHeaders(opts.headers);
    const init = { method: opts.method || "GET", headers };
    if (init.method !== "GET") headers["X-Stepwise-Workbench"] = "1";
    if (opts.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(opts.body);
    }
    const res = await fetch(API + path, init);
    if (res.status === 204) return null;
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = { error: text }; }
    if (!res.ok) {
      const err = new Error((data && data.error) || res.statusText);
      err.status = res.status;
      err.body = data;
      if (!opts.quiet) toast(`${res.status} ${err.message}` + detailText(data), "error");
      throw err;
    }
    return data;
  }

  function detailText(data) {
    if (!data || !Array.isArray(data.details) || !data.details.length) return "";
    return " — " + data.details.map((d) => (d.field ? d.field + ": " : "") + d.message).join("; ");
  }

  function qs(params) {
    const out = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (v !== null && v !== undefined && v !== "" && v !== false) out.set(k, v);
    }
    const text = out.toString();
    return text ? "?" + text : "";
  }

  let toastTimer = null;
  function toast(text, kind) {
    const el = document.getElementById("toast");
    el.textContent = text;
    el.className = kind || "";
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, kind === "error" ? 8000 : 3000);
  }

  function confirmAction(title, text, okLabel) {
    const dialog = document.getElementById("confirm");
    document.getElementById("confirm-title").textContent = title;
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-ok").textContent = okLabel || "Confirm";
    return new Promise((resolve) => {
      const ok = document.getElementById("confirm-ok");
      const cancel = document.getElementById("confirm-cancel");
      const done = (value) => {
        ok.removeEventListener("click", onOk);
        cancel.removeEventListener("click", onCancel);
        dialog.removeEventListener("cancel", onCancel);
        if (dialog.open) dialog.close();
        resolve(value);
      };
      const onOk = () => done(true);
      const onCancel = () => done(false);
      ok.addEventListener("click", onOk);
      cancel.addEventListener("click", onCancel);
      dialog.addEventListener("cancel", onCancel);
      dialog.showModal();
    });
  }

  function every(ms, fn) {
    const id = setInterval(() => { if (!document.hidden) fn(); }, ms);
    app.timers.push(id);
  }

  function cleanup() {
    for (const id of app.timers) clearInterval(id);
    for (const ctrl of app.aborts) ctrl.abort();
    app.timers = [];
    app.aborts = [];
  }

  function time(ts) {
    if (ts === null || ts === undefined) return "—";
    const d = new Date(ts * 1000);
    return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  }

  function dateTime(ts) {
    if (ts === null || ts === undefined) return "—";
    return new Date(ts * 1000).toLocaleString([], { hour12: false });
  }

  function ago(ts) {
    if (ts === null || ts === undefined) return "—";
    const diff = Date.now() / 1000 - ts;
    const abs = Math.abs(diff);
    const unit = abs < 60 ? [abs, "s"] : abs < 3600 ? [abs / 60, "min"] : abs < 86400 ? [abs / 3600, "h"] : [abs / 86400, "d"];
    const text = `${Math.round(unit[0])} ${unit[1]}`;
    return diff >= 0 ? text + " ago" : "in " + text;
  }

  function ms(value) {
    if (value === null || value === undefined) return "—";
    if (value < 1) return value.toFixed(2) + " ms";
    if (value < 1000) return value.toFixed(value < 10 ? 1 : 0) + " ms";
    return (value / 1000).toFixed(2) + " s";
  }

  function shortId(id) {
    return id && id.length > 12 ? id.slice(0, 8) + "…" : id;
  }

  function traceLink(id) {
    if (!id) return h("span", { class: "muted", text: "—" });
    return h("a", { class: "trace-link mono", href: "#/traces/" + encodeURIComponent(id), title: id, text: shortId(id) });
  }

  function badge(text, kind) {
    return h("span", { class: "badge " + (kind || text), text });
  }

  function jsonView(value, opts) {
    const pre = h("pre", { class: "json" + (opts && opts.compact ? " compact" : "") });
    renderJson(pre, value, 0);
    return pre;
  }

  function renderJson(el, value, depth) {
    const pad = "  ".repeat(depth);
    if (value === null) return append(el, [h("span", { class: "j-null", text: "null" })]);
    if (Array.isArray(value)) {
      if (!value.length) return append(el, ["[]"]);
      append(el, ["[\n"]);
      value.forEach((v, i) => {
        append(el, [pad + "  "]);
        renderJson(el, v, depth + 1);
        append(el, [i < value.length - 1 ? ",\n" : "\n"]);
      });
      return append(el, [pad + "]"]);
    }
    if (typeof value === "object") {
      const keys = Object.keys(value);
      if (!keys.length) return append(el, ["{}"]);
      append(el, ["{\n"]);
      keys.forEach((k, i) => {
        append(el, [pad + "  ", h("span", { class: "j-key", text: JSON.stringify(k) }), ": "]);
        renderJson(el, value[k], depth + 1);
        append(el, [i < keys.length - 1 ? ",\n" : "\n"]);
      });
      return append(el, [pad + "}"]);
    }
    const kind = typeof value === "string" ? "j-str" : typeof value === "number" ? "j-num" : "j-bool";
    return append(el, [h("span", { class: kind, text: JSON.stringify(value) })]);
  }

  function preview(value) {
    const text = JSON.stringify(value);
    return text && text.length > 120 ? text.slice(0, 117) + "…" : text;
  }

  function table(headers, rows, opts) {
    return h("table", { class: "grid" + (opts && opts.class ? " " + opts.class : "") },
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { text: t })))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { class: "empty", colspan: headers.length, text: (opts && opts.empty) || "Nothing here yet." }))));
  }

  function page(title, subtitle, ...body) {
    return h("div", { class: "page" },
      h("div", { class: "page-head" }, h("h1", { text: title }), subtitle ? h("p", { class: "muted", text: subtitle }) : null),
      body);
  }

  async function loadFlows() {
    if (!app.flows) app.flows = await api("flows");
    return app.flows;
  }

  function stepOptions(flows, selected) {
    return [h("option", { value: "", text: "all steps" }),
      flows.steps.map((st) => h("option", { value: st.name, selected: st.name === selected, text: st.name }))];
  }

  // -- layout: a small layered (Sugiyama-style) layout for the flow diagram --------------------

  const NODE_W = 196, NODE_H = 54, TOPIC_W = 150, TOPIC_H = 30, GAP_X = 150, GAP_Y = 26;

  function layeredLayout(nodes, edges) {
    const byId = new Map(nodes.map((n) => [n.id, n]));
    const out = new Map(nodes.map((n) => [n.id, []]));
    const indeg = new Map(nodes.map((n) => [n.id, 0]));
    // 1. break cycles: edges that go back in a DFS are reversed for layering
    const state = new Map();
    const forward = [];
    const visit = (id) => {
      state.set(id, 1);
      for (const e of edges.filter((e) => e.from === id)) {
        const st = state.get(e.to);
        if (st === 1 || e.from === e.to) forward.push({ ...e, from: e.to, to: e.from, reversed: true });
        else {
          forward.push(e);
          if (!st) visit(e.to);
        }
      }
      state.set(id, 2);
    };
    const roots = nodes.filter((n) => !edges.some((e) => e.to === n.id && e.from !== n.id));
    for (const n of [...roots, ...nodes]) if (!state.get(n.id)) visit(n.id);
    const seen = new Set();
    const dag = forward.filter((e) => {
      const key = e.from + "\u0000" + e.to;
      if (e.from === e.to || seen.has(key)) return false;
      seen.add(key);
      return true;
    });
    for (const e of dag) { out.get(e.from).push(e.to); indeg.set(e.to, indeg.get(e.to) + 1); }
    // 2. layers: longest path from the sources
    const layer = new Map();
    const queue = nodes.filter((n) => indeg.get(n.id) === 0).map((n) => n.id);
    for (const id of queue) layer.set(id, 0);
    while (queue.length) {
      const id = queue.shift();
      for (const next of out.get(id)) {
        layer.set(next, Math.max(layer.get(next) || 0, layer.get(id) + 1));
        indeg.set(next, indeg.get(next) - 1);
        if (indeg.get(next) === 0) queue.push(next);
      }
    }
    // 3. long edges get a dummy node per layer they cross, so they route around other nodes
    const layers = [];
    const place = (id) => { const l = layer.get(id) || 0; (layers[l] = layers[l] || []).push(id); };
    nodes.forEach((n) => place(n.id));
    const chains = [];
    let dummies = 0;
    for (const e of dag) {
      const chain = [e.from];
      for (let l = layer.get(e.from) + 1; l < layer.get(e.to); l++) {
        const id = "\u0000d" + dummies++;
        byId.set(id, { id, dummy: true, w: 8, h: 8 });
        layer.set(id, l);
        place(id);
        chain.push(id);
      }
      chain.push(e.to);
      chains.push(chain);
    }
    const up = new Map(), down = new Map();
    for (const chain of chains) {
      for (let i = 0; i + 1 < chain.length; i++) {
        (down.get(chain[i]) || down.set(chain[i], []).get(chain[i])).push(chain[i + 1]);
        (up.get(chain[i + 1]) || up.set(chain[i + 1], []).get(chain[i + 1])).push(chain[i]);
      }
    }
    // 4. order within layers: barycentre sweeps down and up
    const pos = new Map();
    const index = () => layers.forEach((ids) => ids.forEach((id, i) => pos.set(id, i)));
    index();
    for (let sweep = 0; sweep < 12; sweep++) {
      const downward = sweep % 2 === 0;
      const order = downward ? layers.map((_, i) => i) : layers.map((_, i) => layers.length - 1 - i);
      for (const l of order) {
        const ids = layers[l];
        if (!ids) continue;
        const bary = new Map(ids.map((id) => {
          const ns = (downward ? up : down).get(id) || [];
          return [id, ns.length ? ns.reduce((a, n) => a + pos.get(n), 0) / ns.length : pos.get(id)];
        }));
        ids.sort((a, b) => bary.get(a) - bary.get(b));
        ids.forEach((id, i) => pos.set(id, i));
      }
    }
    // 5. coordinates: columns left to right; rows stacked, then pulled towards neighbours
    const y = new Map();
    const x = new Map();
    layers.forEach((ids, l) => {
      let cursor = 0;
      for (const id of ids || []) {
        const n = byId.get(id);
        y.set(id, cursor + n.h / 2);
        x.set(id, l * (NODE_W + GAP_X) + NODE_W / 2);
        cursor += n.h + (n.dummy ? 8 : GAP_Y);
      }
    });
    for (let pass = 0; pass < 8; pass++) {
      layers.forEach((ids) => {
        if (!ids) return;
        const want = ids.map((id) => {
          const ns = [...(up.get(id) || []), ...(down.get(id) || [])];
          return ns.length ? ns.reduce((a, n) => a + y.get(n), 0) / ns.length : y.get(id);
        });
        // keep the order and the gaps: push down from the top, then up from the bottom
        let prevBottom = -Infinity;
        ids.forEach((id, i) => {
          const n = byId.get(id);
          const top = Math.max(want[i] - n.h / 2, prevBottom + (n.dummy ? 8 : GAP_Y));
          y.set(id, top + n.h / 2);
          prevBottom = top + n.h;
        });
      });
    }
    let minY = Infinity, maxY = -Infinity, maxX = 0;
    for (const [id, n] of byId) {
      minY = Math.min(minY, y.get(id) - n.h / 2);
      maxY = Math.max(maxY, y.get(id) + n.h / 2);
      maxX = Math.max(maxX, x.get(id) + NODE_W / 2);
    }
    if (!isFinite(minY)) { minY = 0; maxY = 0; }
    for (const id of byId.keys()) y.set(id, y.get(id) - minY);
    const routes = chains.map((chain) => chain.map((id) => ({ x: x.get(id), y: y.get(id), id })));
    return { x, y, routes, dag, width: maxX, height: maxY - minY, byId };
  }

  function curve(points, fromW, toW) {
    const pts = points.map((p) => ({ ...p }));
    pts[0].x += fromW / 2;
    pts[pts.length - 1].x -= toW / 2;
    let d = `M ${pts[0].x} ${pts[0].y}`;
    for (let i = 1; i < pts.length; i++) {
      const a = pts[i - 1], b = pts[i];
      const mid = (a.x + b.x) / 2;
      d += ` C ${mid} ${a.y}, ${mid} ${b.y}, ${b.x} ${b.y}`;
    }
    return d;
  }

  // -- Flows -----------------------------------------------------------------------------------

  async function viewFlows(params) {
    const graph = await api("flows");
    app.flows = graph;
    const selected = params[0] ? decodeURIComponent(params[0]) : "";
    const flow = graph.flows.find((f) => f.name === selected);
    const names = new Set(flow ? flow.steps : graph.steps.map((st) => st.name));
    const detail = h("aside", { class: "detail", id: "step-detail" }, h("p", { class: "muted", text: "Click a step to see its config, file and schemas." }));
    const list = h("nav", { class: "flow-list" },
      h("a", { href: "#/flows", class: selected ? "" : "active" }, "All steps ", h("span", { class: "count", text: graph.steps.length })),
      graph.flows.map((f) => h("a", {
        href: "#/flows/" + encodeURIComponent(f.name),
        class: f.name === selected ? "active" : "",
        title: f.labelled ? (f.wired_in.length ? "Also wired in: " + f.wired_in.join(", ") : "") : "No flows label: grouped by its emit/subscribe wiring",
      }, f.labelled ? f.name : h("i", { text: f.name }), " ", h("span", { class: "count", text: f.steps.length }))));
    const legend = h("div", { class: "legend" },
      ["api", "event", "cron", "noop"].map((t) => h("span", {}, h("span", { class: "swatch " + t }), t)),
      h("span", {}, h("span", { class: "swatch topic" }), "topic without a subscriber / emitter"));
    const canvas = h("div", { class: "canvas", id: "flow-canvas" });
    const warnings = graph.warnings.length ? h("ul", { class: "warnings" }, graph.warnings.map((w) => h("li", { text: w }))) : null;
    replace(main, page("Flows", flow
      ? `${flow.name}: ${flow.steps.length} steps` + (flow.wired_in.length ? ` (wired in by topic: ${flow.wired_in.join(", ")})` : "")
      : `${graph.steps.length} steps, ${Object.keys(graph.topics).length} topics, ${graph.edges.length} edges`,
      h("div", { class: "flows-layout" }, list, h("div", { class: "flow-main" }, legend, canvas, warnings), detail)));
    drawGraph(canvas, graph, names, (step) => showStep(detail, step));
  }

  function drawGraph(canvas, graph, names, onSelect) {
    const steps = graph.steps.filter((st) => names.has(st.name));
    const components = new Map();
    for (const st of steps) {
      if (!components.has(st.component)) components.set(st.component, []);
      components.get(st.component).push(st);
    }
    const svg = s("svg", { class: "graph", role: "img", "aria-label": "Flow diagram" });
    svg.append(s("defs", {},
      s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }))));
    let offsetY = 10, width = 0;
    const flowOf = (names) => graph.flows.find((f) => f.steps.length === names.length && f.steps.every((n) => names.includes(n)));
    for (const members of components.values()) {
      const memberNames = members.map((m) => m.name);
      const nodes = members.map((st) => ({ id: st.name, w: NODE_W, h: NODE_H, step: st }));
      const edges = graph.edges.filter((e) => memberNames.includes(e.from) && memberNames.includes(e.to))
        .map((e) => ({ from: e.from, to: e.to, label: e.topic }));
      // topics with nobody on one end still show, as small topic nodes
      for (const [topic, ends] of Object.entries(graph.topics)) {
        const emitters = ends.emitted_by.filter((n) => memberNames.includes(n));
        const subscribers = ends.subscribed_by.filter((n) => memberNames.includes(n));
        if (!ends.subscribed_by.length && emitters.length) {
          nodes.push({ id: "topic:" + topic, w: TOPIC_W, h: TOPIC_H, topic });
          emitters.forEach((n) => edges.push({ from: n, to: "topic:" + topic, label: "" }));
        }
        if (!ends.emitted_by.length && subscribers.length) {
          nodes.push({ id: "topic:" + topic, w: TOPIC_W, h: TOPIC_H, topic });
          subscribers.forEach((n) => edges.push({ from: "topic:" + topic, to: n, label: "" }));
        }
      }
      const layout = layeredLayout(nodes, edges);
      const group = s("g", { transform: `translate(16, ${offsetY + 22})` });
      const flow = flowOf(memberNames);
      group.append(s("text", { x: 0, y: -10, class: "component-title", text: flow ? (flow.labelled ? "flow: " + flow.name : "wired: " + flow.name) : "" }));
      // edges first, under the nodes; one label per pair of steps (topics joined)
      const labels = new Map();
      for (const e of edges) {
        const key = e.from + "\u0000" + e.to;
        labels.set(key, [...(labels.get(key) || []), e.label].filter(Boolean));
      }
      const virtual = new Set();
      for (const st of members) for (const t of st.virtual_emits || []) virtual.add(st.name + "\u0000" + t);
      const drawn = new Set();
      const labelled = new Set();
      const perSource = new Map();
      layout.routes.forEach((route, i) => {
        const e = layout.dag[i];
        const from = layout.byId.get(route[0].id), to = layout.byId.get(route[route.length - 1].id);
        const key = e.reversed ? e.to + "\u0000" + e.from : e.from + "\u0000" + e.to;
        if (drawn.has(key)) return;
        drawn.add(key);
        const text = (labels.get(key) || []).join(", ");
        const dashed = (labels.get(key) || []).some((t) => virtual.has((e.reversed ? e.to : e.from) + "\u0000" + t));
        const path = s("path", { d: curve(route, from.w, to.w), class: "edge" + (dashed ? " virtual" : ""),
          "marker-end": e.reversed ? null : "url(#arrow)", "marker-start": e.reversed ? "url(#arrow)" : null });
        group.append(path);
        // a topic fanning out to several subscribers is labelled once, where its edges leave
        const source = route[0].id;
        const fresh = text && !labelled.has(source + "\u0000" + text);
        if (fresh) {
          labelled.add(source + "\u0000" + text);
          const stacked = perSource.get(source) || 0;
          perSource.set(source, stacked + 1);
          const a = route[0];
          const label = s("text", { x: a.x + from.w / 2 + 8, y: a.y - 7 - 14 * stacked, class: "edge-label", "text-anchor": "start", text });
          group.append(label);
        }
      });
      for (const n of nodes) {
        const cx = layout.x.get(n.id), cy = layout.y.get(n.id);
        group.append(n.topic ? topicNode(n, cx, cy) : stepNode(n.step, cx, cy, onSelect));
      }
      svg.append(group);
      offsetY += layout.height + 70;
      width = Math.max(width, layout.width + 40);
    }
    if (graph.streams && graph.streams.length) {
      const g = s("g", { transform: `translate(16, ${offsetY + 12})` });
      g.append(s("text", { x: 0, y: -10, class: "component-title", text: "streams" }));
      graph.streams.forEach((st, i) => {
        const x = i * (TOPIC_W + 20);
        g.append(s("rect", { x, y: 0, width: TOPIC_W, height: TOPIC_H, rx: 15, class: "node stream" }));
        g.append(s("text", { x: x + TOPIC_W / 2, y: TOPIC_H / 2 + 4, "text-anchor": "middle", class: "node-title", text: st.name }));
      });
      svg.append(g);
      offsetY += TOPIC_H + 40;
    }
    svg.setAttribute("width", Math.max(width, 300));
    svg.setAttribute("height", offsetY);
    svg.setAttribute("viewBox", `0 0 ${Math.max(width, 300)} ${offsetY}`);
    replace(canvas, svg);
  }

  function stepNode(step, cx, cy, onSelect) {
    const x = cx - NODE_W / 2, y = cy - NODE_H / 2;
    const g = s("g", { class: "step-node " + step.type, tabindex: 0, role: "button", "data-step": step.name,
      onclick: () => { selectNode(g); onSelect(step); },
      onkeydown: (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); selectNode(g); onSelect(step); } } });
    g.append(s("title", { text: `${step.name} (${step.type})` }));
    if (step.type === "cron") {
      const k = 12;
      g.append(s("path", { class: "node " + step.type, d: `M ${x + k} ${y} H ${x + NODE_W - k} L ${x + NODE_W} ${cy} L ${x + NODE_W - k} ${y + NODE_H} H ${x + k} L ${x} ${cy} Z` }));
    } else {
      g.append(s("rect", { class: "node " + step.type, x, y, width: NODE_W, height: NODE_H, rx: step.type === "api" ? 14 : 6 }));
    }
    g.append(s("text", { x: x + 14, y: y + 16, class: "node-kind " + step.type, text: step.type.toUpperCase() }));
    g.append(s("text", { x: x + 14, y: y + 33, class: "node-title", text: clip(step.name, 24) }));
    let sub = "";
    if (step.type === "api") sub = `${step.method} ${step.path}`;
    else if (step.type === "cron") sub = `${step.schedule} ${step.timezone !== "UTC" ? step.timezone : ""}`;
    else if (step.type === "event") sub = step.retry ? `retry ×${step.retry.max_attempts}` + (step.concurrency ? ` · max ${step.concurrency}` : "") : "";
    else sub = "virtual";
    g.append(s("text", { x: x + 14, y: y + 47, class: "node-sub", text: clip(sub, 30) }));
    return g;
  }

  function topicNode(n, cx, cy) {
    const x = cx - n.w / 2, y = cy - n.h / 2;
    return s("g", { class: "topic-node" },
      s("rect", { class: "node topic", x, y, width: n.w, height: n.h, rx: n.h / 2 }),
      s("text", { x: cx, y: cy + 4, "text-anchor": "middle", class: "node-sub", text: clip(n.topic, 22) }));
  }

  function clip(text, n) {
    text = String(text || "");
    return text.length > n ? text.slice(0, n - 1) + "…" : text;
  }

  function selectNode(g) {
    document.querySelectorAll(".step-node.selected").forEach((n) => n.classList.remove("selected"));
    g.classList.add("selected");
  }

  function showStep(detail, step) {
    const rows = [
      ["type", badge(step.type)],
      ["file", h("code", { text: step.file })],
      step.description ? ["description", step.description] : null,
      step.flows.length ? ["flows", step.flows.join(", ")] : null,
      step.subscribes.length ? ["subscribes", step.subscribes.join(", ")] : null,
      step.emits.length ? ["emits", step.emits.join(", ")] : null,
      step.virtual_emits.length ? ["virtual emits", step.virtual_emits.join(", ")] : null,
      step.type === "api" ? ["route", h("code", { text: `${step.method} ${step.path}` })] : null,
      step.type === "api" ? ["auth", step.auth] : null,
      step.type === "cron" ? ["schedule", `${step.schedule} (${step.timezone})`] : null,
    ].filter(Boolean);
    const schemas = [];
    for (const [label, key] of [["body", "body"], ["query", "query"], ["input", "input"]]) {
      if (step[key]) schemas.push(h("h4", { text: label + " schema" }), jsonView(step[key]));
    }
    const links = [h("a", { href: "#/traces?step=" + encodeURIComponent(step.name), text: "recent traces" }), " · ",
      h("a", { href: "#/logs?step=" + encodeURIComponent(step.name), text: "logs" })];
    if (step.type === "api") links.push(" · ", h("a", { href: "#/endpoints/" + encodeURIComponent(step.name), text: "try it" }));
    replace(detail, 
      h("h3", { text: step.name }),
      h("dl", { class: "facts" }, rows.map(([k, v]) => [h("dt", { text: k }), h("dd", {}, v)])),
      h("p", {}, links),
      ...schemas,
      h("h4", { text: "config" }), jsonView(step.config));
  }

  // -- Logs ------------------------------------------------------------------------------------

  async function viewLogs(params, query) {
    const flows = await loadFlows();
    const filters = { level: query.get("level") || "", step: query.get("step") || "", trace_id: query.get("trace_id") || "", q: query.get("q") || "" };
    const status = h("span", { class: "live-status", text: "connecting…" });
    const counter = h("span", { class: "muted" });
    const body = h("tbody", {});
    let live = true;
    const levelSel = h("select", { name: "level", "aria-label": "Level" }, ["", "debug", "info", "warning", "error"].map((l) => h("option", { value: l, selected: l === filters.level, text: l ? l + " and up" : "all levels" })));
    const stepSel = h("select", { name: "step", "aria-label": "Step" }, stepOptions(flows, filters.step));
    const traceIn = h("input", { name: "trace_id", placeholder: "trace id", value: filters.trace_id, class: "mono" });
    const textIn = h("input", { name: "q", placeholder: "search text", value: filters.q, type: "search" });
    const apply = () => {
      const next = { level: levelSel.value, step: stepSel.value, trace_id: traceIn.value.trim(), q: textIn.value.trim() };
      location.hash = "#/logs" + qs(next);
    };
    levelSel.addEventListener("change", apply);
    stepSel.addEventListener("change", apply);
    traceIn.addEventListener("change", apply);
    textIn.addEventListener("change", apply);
    const pause = h("button", { class: "secondary", onclick: () => {
      live = !live;
      pause.textContent = live ? "Pause" : "Resume";
      status.textContent = live ? "live" : "paused";
      status.classList.toggle("on", live);
    }, text: "Pause" });
    const shown = [];
    const MAX_ROWS = 2000;
    let capacity = 0;
    const render = () => { counter.textContent = `${shown.length} shown · newest ${capacity.toLocaleString()} kept by the server`; };
    const add = (records, prepend) => {
      const rows = records.map(logRow);
      if (prepend) {
        for (const row of rows) body.prepend(row);
      } else {
        append(body, rows.reverse());
      }
      shown.push(...records);
      while (body.children.length > MAX_ROWS) body.lastChild.remove();
      if (shown.length > MAX_ROWS) shown.splice(0, shown.length - MAX_ROWS);
      render();
    };
    replace(main, page("Logs", "Every structured log record of this process, live. Click a trace id to open its trace.",
      h("div", { class: "toolbar" }, levelSel, stepSel, traceIn, textIn, pause, status, counter),
      h("table", { class: "grid logs" }, h("thead", {}, h("tr", {}, ["time", "level", "step", "message", "fields", "trace"].map((t) => h("th", { text: t })))), body)));
    const first = await api("logs" + qs({ ...filters, limit: 500 }));
    capacity = first.capacity;
    add(first.logs, false);
    let after = first.last_seq;
    const ctrl = new AbortController();
    app.aborts.push(ctrl);
    followLogs(filters, () => after, (records) => {
      after = records[records.length - 1].seq;
      if (live) add(records, true);
    }, status, ctrl);
  }

  function logRow(r) {
    const fields = Object.entries(r.fields || {}).map(([k, v]) => h("span", { class: "field" }, h("span", { class: "k", text: k + "=" }), typeof v === "string" ? v : JSON.stringify(v)));
    return h("tr", { class: "log " + r.level, "data-seq": r.seq },
      h("td", { class: "mono nowrap", text: new Date(r.timestamp).toLocaleTimeString([], { hour12: false }) + "." + String(new Date(r.timestamp).getMilliseconds()).padStart(3, "0") }),
      h("td", {}, badge(r.level, "lvl-" + r.level)),
      h("td", {}, r.step ? h("a", { href: "#/logs?step=" + encodeURIComponent(r.step), text: r.step }) : h("span", { class: "muted", text: "—" })),
      h("td", { class: "message", text: r.message }),
      h("td", { class: "fields" }, fields),
      h("td", {}, traceLink(r.trace_id)));
  }

  async function followLogs(filters, getAfter, onRecords, status, ctrl) {
    while (!ctrl.signal.aborted) {
      try {
        const res = await fetch(API + "logs/stream" + qs({ ...filters, after: getAfter() }), { headers: authHeaders(), signal: ctrl.signal });
        if (!res.ok || !res.body) throw new Error("stream refused: " + res.status);
        status.textContent = "live";
        status.classList.add("on");
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          const batch = [];
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const chunk = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const data = chunk.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
            if (data) batch.push(JSON.parse(data));
          }
          if (batch.length) onRecords(batch);
        }
      } catch (err) {
        if (ctrl.signal.aborted) return;
        status.textContent = "reconnecting…";
        status.classList.remove("on");
        await sleep(1500);
      }
    }
  }

  // -- Traces ----------------------------------------------------------------------------------

  async function viewTraces(params, query) {
    if (params[0]) return viewTrace(decodeURIComponent(params[0]));
    const flows = await loadFlows();
    const step = query.get("step") || "";
    const errors = query.get("errors") === "1";
    const stepSel = h("select", { "aria-label": "Step" }, stepOptions(flows, step));
    const errBox = h("input", { type: "checkbox", checked: errors });
    const go = () => { location.hash = "#/traces" + qs({ step: stepSel.value, errors: errBox.checked ? "1" : "" }); };
    stepSel.addEventListener("change", go);
    errBox.addEventListener("change", go);
    const body = h("tbody", {});
    replace(main, page("Traces", "Recent traces: every step a request or event went through. Refreshes every 3 s.",
      h("div", { class: "toolbar" }, stepSel, h("label", {}, errBox, " with failures only")),
      h("table", { class: "grid traces" }, h("thead", {}, h("tr", {}, ["started", "root", "steps", "runs", "errors", "duration", "trace"].map((t) => h("th", { text: t })))), body)));
    const load = async () => {
      const data = await api("traces" + qs({ step, errors: errors ? "true" : "" }), { quiet: true });
      replace(body, ...(data.traces.length ? data.traces.map((t) => h("tr", { class: "clickable" + (t.errors ? " failed" : ""), "data-trace": t.trace_id, onclick: (ev) => { if (ev.target.tagName !== "A") location.hash = "#/traces/" + encodeURIComponent(t.trace_id); } },
        h("td", { class: "nowrap", title: dateTime(t.started_at), text: ago(t.started_at) }),
        h("td", {}, t.root ? [badge(t.root.kind), " ", h("b", { text: t.root.step }), t.root.detail ? h("span", { class: "muted mono", text: "  " + t.root.detail }) : null] : "—"),
        h("td", {}, t.steps.map((n) => h("span", { class: "chip", text: n }))),
        h("td", { text: t.runs }),
        h("td", {}, t.errors ? badge(String(t.errors), "error") : "0"),
        h("td", { class: "nowrap", text: ms(t.duration_ms) }),
        h("td", {}, traceLink(t.trace_id)))) : [h("tr", {}, h("td", { colspan: 7, class: "empty", text: "No traces in this window yet. Call an endpoint, or send one from Endpoints." }))]));
    };
    await load();
    every(3000, load);
  }

  async function viewTrace(traceId) {
    const holder = h("div", {});
    replace(main, page("Trace", null, h("p", {}, h("a", { href: "#/traces", text: "← all traces" })), holder));
    // Follow the trace while it is unknown (the recorder writes within a second) or running.
    let finished = 0;
    const load = async () => {
      if (finished >= 3) return;  // a few more looks: the last run is recorded just after its commit
      let trace;
      try {
        trace = await api("traces/" + encodeURIComponent(traceId), { quiet: true });
      } catch (err) {
        replace(holder, h("p", { class: "empty", text: err.status === 404 ? `No trace ${traceId} (yet).` : err.message }));
        return;
      }
      replace(holder, traceView(trace));
      finished = trace.outcome === "running" ? 0 : finished + 1;
    };
    await load();
    every(1000, load);
  }

  function traceView(trace) {
    const total = Math.max(trace.duration_ms, 1);
    const rows = trace.runs.map((r) => {
      const bar = h("div", { class: "bar " + r.outcome + " " + r.kind });
      bar.style.left = (100 * r.offset_ms / total).toFixed(3) + "%";
      bar.style.width = Math.max(0.4, 100 * r.duration_ms / total).toFixed(3) + "%";
      return h("div", { class: "span-row", "data-step": r.step },
        h("div", { class: "span-label" }, badge(r.kind), " ", h("b", { text: r.step }),
          r.attempt > 1 ? h("span", { class: "muted", text: ` attempt ${r.attempt}` }) : null,
          h("div", { class: "muted small mono", text: r.detail || "" })),
        h("div", { class: "span-track" }, bar),
        h("div", { class: "span-meta" }, badge(r.outcome), " ", h("span", { class: "mono", text: ms(r.duration_ms) }),
          h("div", { class: "muted small", text: "+" + ms(r.offset_ms) })),
        r.error ? h("div", { class: "span-error mono", text: r.error }) : null);
    });
    const waiting = trace.deliveries.filter((d) => d.status !== "done");
    return h("div", { class: "trace" },
      h("div", { class: "trace-head" },
        h("div", {}, h("div", { class: "muted small", text: "trace id" }), h("code", { class: "trace-id", text: trace.trace_id })),
        h("div", {}, h("div", { class: "muted small", text: "outcome" }), badge(trace.outcome)),
        h("div", {}, h("div", { class: "muted small", text: "started" }), dateTime(trace.started_at)),
        h("div", {}, h("div", { class: "muted small", text: "duration" }), ms(trace.duration_ms)),
        h("div", {}, h("div", { class: "muted small", text: "root" }), trace.root ? `${trace.root.step} ${trace.root.detail || ""}` : "—")),
      h("h3", { text: `Timeline · ${trace.runs.length} run(s) through ${trace.steps.length} step(s)` }),
      h("div", { class: "timeline" }, rows.length ? rows : h("p", { class: "empty", text: "No step has finished in this trace yet." })),
      waiting.length ? [h("h3", { text: "Waiting or dead deliveries" }), table(["delivery", "step", "topic", "status", "attempts", "errors"], waiting.map((d) => h("tr", {},
        h("td", { class: "mono", text: d.id }), h("td", { text: d.step }), h("td", { text: d.topic || "(cron)" }), h("td", {}, badge(d.status)),
        h("td", { text: `${d.attempts}/${d.max_attempts}` }), h("td", {}, d.errors.map((e) => h("div", { class: "mono small", text: `#${e.attempt}: ${e.error}` }))))))] : null,
      h("h3", { text: `Emitted events · ${trace.events.length}` }),
      table(["time", "topic", "emitted by", "data"], trace.events.map((e) => h("tr", {},
        h("td", { class: "mono nowrap", text: time(e.created_at) }), h("td", {}, h("b", { text: e.topic })), h("td", { text: e.emitted_by || "cli" }), h("td", {}, jsonView(e.data, { compact: true })))), { empty: "This trace emitted no event." }),
      h("h3", { text: `Logs · ${trace.logs.length}` }),
      h("table", { class: "grid logs" }, h("thead", {}, h("tr", {}, ["time", "level", "step", "message", "fields", "trace"].map((t) => h("th", { text: t })))),
        h("tbody", {}, trace.logs.length ? trace.logs.map(logRow) : h("tr", {}, h("td", { class: "empty", colspan: 6, text: "No log lines of this trace are in this process's buffer." })))));
  }

  // -- State -----------------------------------------------------------------------------------

  async function viewState(params, query) {
    const group = params[0] ? decodeURIComponent(params[0]) : "";
    const filter = h("input", { type: "search", placeholder: "filter groups", value: query.get("prefix") || "" });
    const groupsNav = h("nav", { class: "side-list" });
    const right = h("div", { class: "state-main" });
    replace(main, page("State", "ctx.state: groups of keys with JSON values. Edits apply at once, like a step's set.",
      h("div", { class: "split" }, h("div", { class: "side" }, filter, groupsNav), right)));
    const loadGroups = async () => {
      const data = await api("state" + qs({ prefix: filter.value.trim() }));
      replace(groupsNav, ...(data.groups.length ? data.groups.map((g) => h("a", { href: "#/state/" + encodeURIComponent(g.group), class: g.group === group ? "active" : "", "data-group": g.group },
        h("span", { text: g.group }), h("span", { class: "count", text: g.keys }))) : [h("p", { class: "empty", text: "No state yet." })]));
    };
    filter.addEventListener("input", loadGroups);
    await loadGroups();
    if (!group) {
      replace(right, h("p", { class: "muted", text: "Pick a group." }), newKeyForm(""));
      return;
    }
    const data = await api("state" + qs({ group }));
    const editor = h("div", { class: "editor" });
    const rows = data.items.map((item) => h("tr", { class: "clickable", "data-key": item.key, onclick: () => openEditor(editor, group, item.key, item.value) },
      h("td", { class: "mono", text: item.key }), h("td", { class: "mono value", text: preview(item.value) }), h("td", { class: "nowrap muted", text: ago(item.updated_at) })));
    replace(right, 
      h("div", { class: "toolbar" }, h("h2", { text: group }), h("span", { class: "muted", text: `${data.items.length} key(s)` }),
        h("button", { class: "danger", onclick: async () => {
          if (!(await confirmAction(`Clear group "${group}"?`, `Delete all ${data.items.length} key(s) of this group. Steps reading them will see nothing.`, "Clear group"))) return;
          await api("state" + qs({ group, all: "true" }), { method: "DELETE" });
          toast(`Cleared ${group}`);
          location.hash = "#/state";
        }, text: "Clear group" })),
      table(["key", "value", "updated"], rows), editor, newKeyForm(group));
  }

  function openEditor(editor, group, key, value) {
    const area = h("textarea", { class: "mono", rows: 12, spellcheck: "false", "aria-label": "JSON value" });
    area.value = JSON.stringify(value, null, 2);
    const save = h("button", { text: "Save", onclick: async () => {
      let parsed;
      try { parsed = JSON.parse(area.value); } catch (err) { toast("Not valid JSON: " + err.message, "error"); return; }
      if (!(await confirmAction(`Save ${group} / ${key}?`, "The new value replaces the stored one for every step.", "Save"))) return;
      await api("state" + qs({ group, key }), { method: "PUT", body: { value: parsed } });
      toast(`Saved ${group} / ${key}`);
      route();
    } });
    const del = h("button", { class: "danger", text: "Delete key", onclick: async () => {
      if (!(await confirmAction(`Delete ${group} / ${key}?`, "The key is removed; steps reading it get None.", "Delete"))) return;
      await api("state" + qs({ group, key }), { method: "DELETE" });
      toast(`Deleted ${group} / ${key}`);
      route();
    } });
    replace(editor, h("h3", {}, "Edit ", h("code", { text: `${group} / ${key}` })), area, h("div", { class: "actions" }, save, del));
    area.focus();
  }

  function newKeyForm(group) {
    const g = h("input", { placeholder: "group", value: group, "aria-label": "group" });
    const k = h("input", { placeholder: "key", "aria-label": "key" });
    const v = h("input", { placeholder: "JSON value, e.g. {\"on\": true}", class: "mono wide", "aria-label": "value" });
    return h("details", { class: "new-key" }, h("summary", { text: "Add a key" }),
      h("div", { class: "toolbar" }, g, k, v, h("button", { text: "Add", onclick: async () => {
        let parsed;
        try { parsed = JSON.parse(v.value); } catch (err) { toast("Not valid JSON: " + err.message, "error"); return; }
        if (!g.value || !k.value) { toast("A group and a key are needed", "error"); return; }
        await api("state" + qs({ group: g.value, key: k.value }), { method: "PUT", body: { value: parsed } });
        location.hash = "#/state/" + encodeURIComponent(g.value);
        route();
      } })));
  }

  // -- Streams ---------------------------------------------------------------------------------

  async function viewStreams(params) {
    const stream = params[0] ? decodeURIComponent(params[0]) : "";
    const group = params[1] ? decodeURIComponent(params[1]) : "";
    const data = await api("streams");
    const side = h("nav", { class: "side-list" }, data.streams.length ? data.streams.map((st) => h("a", { href: "#/streams/" + encodeURIComponent(st.name), class: st.name === stream ? "active" : "" },
      h("span", { text: st.name }), h("span", { class: "count", text: `${st.groups} groups` }))) : h("p", { class: "empty", text: "No stream has items yet." }));
    const right = h("div", {});
    replace(main, page("Streams", "Real-time streams: their groups and current items. Watching a group refreshes it every 2 s.",
      h("div", { class: "split" }, h("div", { class: "side" }, side), right)));
    if (!stream) { replace(right, h("p", { class: "muted", text: "Pick a stream." })); return; }
    const groups = await api("streams" + qs({ stream }));
    const groupNav = h("div", { class: "chips" }, groups.groups.map((g) => h("a", { class: "chip" + (g.group === group ? " active" : ""), href: `#/streams/${encodeURIComponent(stream)}/${encodeURIComponent(g.group)}`, text: `${g.group} (${g.items})` })));
    const items = h("div", {});
    replace(right, h("h2", { text: stream }), groupNav, items);
    if (!group) return;
    const versions = new Map();
    const load = async () => {
      const data = await api("streams" + qs({ stream, group }), { quiet: true });
      replace(items, h("h3", {}, group, " ", h("span", { class: "live-status on", text: "watching" })),
        table(["id", "data", "version", "updated"], data.items.map((it) => {
          const changed = versions.has(it.id) && versions.get(it.id) !== it.version;
          versions.set(it.id, it.version);
          return h("tr", { class: changed ? "flash" : "" }, h("td", { class: "mono", text: it.id }), h("td", {}, jsonView(it.data, { compact: true })), h("td", { text: it.version }), h("td", { class: "nowrap muted", text: ago(it.updated_at) }));
        })));
    };
    await load();
    every(2000, load);
  }

  // -- Dead letters ----------------------------------------------------------------------------

  async function viewDlq() {
    const data = await api("dlq");
    updateDlqCount(data.dead_letters.length);
    const replayAll = h("button", { class: "danger", disabled: !data.dead_letters.length, text: `Replay all (${data.dead_letters.length})`, onclick: async () => {
      if (!(await confirmAction("Replay every dead letter?", `${data.dead_letters.length} delivery(ies) go back to the queue with fresh attempts.`, "Replay all"))) return;
      const out = await api("dlq/replay", { method: "POST", body: { all: true } });
      toast(`Replayed ${out.replayed.length}`);
      route();
    } });
    const cards = data.dead_letters.map((d) => h("div", { class: "card dead", "data-delivery": d.id },
      h("div", { class: "card-head" },
        h("div", {}, h("b", { text: d.step }), h("span", { class: "muted", text: `  ${d.topic || "(cron firing)"} · delivery ${d.id} · ${d.attempts} attempt(s) · dead ${ago(d.dead_at)}` })),
        h("div", {}, traceLink(d.trace_id), " ", h("button", { class: "replay", text: "Replay", onclick: async () => {
          if (!(await confirmAction(`Replay delivery ${d.id}?`, `${d.step} runs again with fresh attempts.`, "Replay"))) return;
          await api(`dlq/${d.id}/replay`, { method: "POST" });
          toast(`Replayed delivery ${d.id}`);
          route();
        } }))),
      h("div", { class: "two-col" },
        h("div", {}, h("h4", { text: "payload" }), jsonView(d.data)),
        h("div", {}, h("h4", { text: "errors, every attempt" }), h("ol", { class: "errors" }, d.errors.map((e) => h("li", {}, h("span", { class: "muted", text: `attempt ${e.attempt} · ${time(e.at)}  ` }), h("code", { text: e.error }))))))));
    replace(main, page("Dead letters", "Deliveries that failed every attempt. Fix the cause, then replay.",
      h("div", { class: "toolbar" }, replayAll), cards.length ? cards : h("p", { class: "empty", text: "No dead letters. Everything that failed was retried successfully." })));
  }

  function updateDlqCount(n) {
    const el = document.getElementById("dlq-count");
    el.textContent = n;
    el.hidden = !n;
  }

  // -- Endpoints -------------------------------------------------------------------------------

  async function viewEndpoints(params) {
    const data = await api("endpoints");
    const name = params[0] ? decodeURIComponent(params[0]) : (data.endpoints[0] || {}).name;
    const ep = data.endpoints.find((e) => e.name === name);
    const side = h("nav", { class: "side-list endpoints" }, data.endpoints.map((e) => h("a", { href: "#/endpoints/" + encodeURIComponent(e.name), class: e.name === name ? "active" : "" },
      h("span", {}, h("span", { class: "method " + e.method, text: e.method }), " ", h("span", { class: "mono", text: e.path })), e.auth !== "public" ? h("span", { class: "count", text: e.auth }) : null)));
    const right = h("div", { class: "tester" });
    replace(main, page("Endpoints", "Every API step with its schemas. Send a request; its response and its trace show below.",
      h("div", { class: "split" }, h("div", { class: "side" }, side), right)));
    if (!ep) { replace(right, h("p", { class: "empty", text: "No API step." })); return; }
    const paramInputs = ep.path_params.map((p) => h("input", { name: p, placeholder: p, "aria-label": p }));
    const queryIn = h("input", { placeholder: "query string, e.g. page=2&size=10", class: "wide mono" });
    const bodyIn = h("textarea", { class: "mono", rows: 8, spellcheck: "false", "aria-label": "request body" });
    bodyIn.value = ep.body ? JSON.stringify(example(ep.body, ep.body), null, 2) : ["POST", "PUT", "PATCH"].includes(ep.method) ? "{}" : "";
    const result = h("div", { class: "result" });
    const send = h("button", { text: "Send", onclick: () => sendRequest(ep, paramInputs, queryIn, bodyIn, result) });
    replace(right, 
      h("h2", {}, h("span", { class: "method " + ep.method, text: ep.method }), " ", h("span", { class: "mono", text: ep.path })),
      h("p", {}, h("b", { text: ep.name }), ep.description ? " — " + ep.description : ""),
      h("dl", { class: "facts" },
        h("dt", { text: "auth" }), h("dd", { text: ep.auth + (ep.auth !== "public" ? " (put a token in the header field)" : "") }),
        ep.emits.length ? [h("dt", { text: "emits" }), h("dd", { text: ep.emits.join(", ") })] : null,
        ep.rate_limit ? [h("dt", { text: "rate limit" }), h("dd", { text: ep.rate_limit })] : null),
      paramInputs.length ? h("div", { class: "toolbar" }, h("span", { class: "muted", text: "path" }), paramInputs) : null,
      ep.method === "GET" || ep.query ? h("div", { class: "toolbar" }, queryIn) : null,
      ep.method !== "GET" ? bodyIn : null,
      h("div", { class: "actions" }, send),
      result,
      h("details", {}, h("summary", { text: "schemas" }),
        ep.body ? [h("h4", { text: "body" }), jsonView(ep.body)] : null,
        ep.query ? [h("h4", { text: "query" }), jsonView(ep.query)] : null,
        Object.entries(ep.responses).map(([status, schema]) => [h("h4", { text: "response " + status }), schema ? jsonView(schema) : h("p", { class: "muted", text: "no schema" })])));
  }

  function example(schema, root, depth) {
    depth = depth || 0;
    if (!schema || depth > 6) return null;
    if (schema.$ref) {
      const name = schema.$ref.split("/").pop();
      return example((root.$defs || root.definitions || {})[name], root, depth + 1);
    }
    if (schema.example !== undefined) return schema.example;
    if (schema.examples && schema.examples.length) return schema.examples[0];
    if (schema.default !== undefined) return schema.default;
    if (schema.enum) return schema.enum[0];
    const options = schema.anyOf || schema.oneOf || schema.allOf;
    if (options) return example(options.find((o) => o.type !== "null") || options[0], root, depth + 1);
    switch (schema.type) {
      case "object": {
        const out = {};
        for (const [k, v] of Object.entries(schema.properties || {})) out[k] = example(v, root, depth + 1);
        return out;
      }
      case "array": return [example(schema.items, root, depth + 1)].filter((v) => v !== null);
      case "integer": return schema.minimum !== undefined ? schema.minimum : 1;
      case "number": return schema.minimum !== undefined ? schema.minimum : 1.5;
      case "boolean": return true;
      case "string":
        if (schema.format === "email") return "ada@example.com";
        if (schema.format === "date-time") return new Date().toISOString();
        return "hello from the Workbench".slice(0, schema.maxLength || 100);
      default: return null;
    }
  }

  async function sendRequest(ep, paramInputs, queryIn, bodyIn, result) {
    let path = ep.path;
    for (const input of paramInputs) path = path.replace("{" + input.name + "}", encodeURIComponent(input.value));
    if (queryIn.value.trim()) path += "?" + queryIn.value.trim().replace(/^\?/, "");
    const init = { method: ep.method, headers: authHeaders() };
    if (ep.method !== "GET" && bodyIn.value.trim()) {
      try { JSON.parse(bodyIn.value); } catch (err) { toast("The body is not valid JSON: " + err.message, "error"); return; }
      init.headers["Content-Type"] = "application/json";
      init.body = bodyIn.value;
    }
    replace(result, h("p", { class: "muted", text: "sending…" }));
    const t0 = performance.now();
    let res, text;
    try {
      res = await fetch(path, init);
      text = await res.text();
    } catch (err) {
      replace(result, h("p", { class: "error", text: "Request failed: " + err.message }));
      return;
    }
    const elapsed = performance.now() - t0;
    let shown;
    try { shown = jsonView(JSON.parse(text)); } catch (err) { shown = h("pre", { class: "json", text }); }
    const traceId = res.headers.get("x-trace-id");
    const traceBox = h("div", { class: "tester-trace" });
    replace(result, 
      h("div", { class: "response-head" }, badge(String(res.status), res.ok ? "ok" : "error"), " ", h("span", { class: "mono", text: ms(elapsed) }),
        "  trace ", traceLink(traceId)),
      shown, traceBox);
    if (traceId) followTesterTrace(traceId, traceBox);
  }

  async function followTesterTrace(traceId, box) {
    const ctrl = new AbortController();
    app.aborts.push(ctrl);
    for (let i = 0; i < 20 && !ctrl.signal.aborted; i++) {
      try {
        const trace = await api("traces/" + encodeURIComponent(traceId), { quiet: true });
        replace(box, h("h3", { text: "Its trace" }), traceView(trace));
        if (trace.outcome !== "running" && i > 2) return;
      } catch (err) { /* not recorded yet */ }
      await sleep(500);
    }
  }

  // -- Cron ------------------------------------------------------------------------------------

  async function viewCron() {
    const holder = h("div", {});
    replace(main, page("Cron", "Scheduled steps. Each firing runs once across every instance.", holder));
    const load = async () => {
      const data = await api("cron", { quiet: true });
      const rows = data.cron.map((c) => h("tr", { "data-step": c.name },
        h("td", {}, h("b", { text: c.name }), c.description ? h("div", { class: "muted small", text: c.description }) : null),
        h("td", {}, h("code", { text: c.schedule }), h("div", { class: "muted small", text: c.timezone })),
        h("td", { class: "nowrap", title: c.last_run ? dateTime(c.last_run.started_at) : "schedule tracked since " + dateTime(c.last_fire_at), text: c.last_run ? ago(c.last_run.started_at) : "—" }),
        h("td", {}, c.last_run ? [badge(c.last_run.outcome), " ", ms(c.last_run.duration_ms), " ", traceLink(c.last_run.trace_id)] : h("span", { class: "muted", text: "never ran" })),
        h("td", { class: "nowrap", title: dateTime(c.next_fire_at), text: ago(c.next_fire_at) }),
        h("td", { text: c.pending }),
        h("td", {}, h("button", { text: "Fire now", onclick: async () => {
          if (!(await confirmAction(`Fire ${c.name} now?`, "It runs once now, outside its schedule.", "Fire"))) return;
          const out = await api(`cron/${encodeURIComponent(c.name)}/fire`, { method: "POST" });
          toast(`Fired ${c.name}`);
          location.hash = "#/traces/" + encodeURIComponent(out.trace_id);
        } }))));
      replace(holder, table(["step", "schedule", "last firing", "last run", "next firing", "queued", ""], rows, { empty: "No cron step." }));
    };
    await load();
    every(10000, () => { if (!document.querySelector("dialog[open]")) load(); });
  }

  // -- Metrics ---------------------------------------------------------------------------------

  async function viewMetrics(params, query) {
    const window = Number(query.get("window") || 300);
    const sel = h("select", { "aria-label": "Window", onchange: () => { location.hash = "#/metrics" + qs({ window: sel.value }); } },
      [[60, "last minute"], [300, "last 5 minutes"], [900, "last 15 minutes"], [3600, "last hour"], [86400, "last day"]].map(([v, t]) => h("option", { value: v, selected: v === window, text: t })));
    const holder = h("div", {});
    replace(main, page("Metrics", "Per step over the window, from every instance's recorded runs; the queue right now. Refreshes every 5 s.",
      h("div", { class: "toolbar" }, sel, h("a", { href: "metrics", target: "_blank", text: "Prometheus /metrics" })), holder));
    const load = async () => {
      const data = await api("metrics" + qs({ window }), { quiet: true });
      const q = data.queue;
      const total = data.steps.reduce((a, st) => a + st.count, 0);
      const errors = data.steps.reduce((a, st) => a + st.errors, 0);
      const maxP99 = Math.max(1, ...data.steps.map((st) => st.p99_ms || 0));
      const cards = h("div", { class: "cards" },
        stat("runs", total.toLocaleString()), stat("failed runs", errors.toLocaleString(), errors ? "error" : ""),
        stat("queue depth", q.depth.toLocaleString()), stat("dead letters", q.totals.dead.toLocaleString(), q.totals.dead ? "error" : ""),
        stat("oldest due delivery", q.oldest_pending ? `${q.oldest_pending.waiting_seconds.toFixed(1)} s` : "none",
          q.oldest_pending ? "" : "", q.oldest_pending ? `${q.oldest_pending.step} · delivery ${q.oldest_pending.id}` : ""));
      const rows = data.steps.map((st) => {
        const bar50 = h("span", { class: "pbar p50" });
        const bar99 = h("span", { class: "pbar p99" });
        bar50.style.width = (100 * (st.p50_ms || 0) / maxP99).toFixed(1) + "%";
        bar99.style.width = (100 * (st.p99_ms || 0) / maxP99).toFixed(1) + "%";
        return h("tr", { "data-step": st.step },
          h("td", {}, h("b", { text: st.step })), h("td", {}, badge(st.type)),
          h("td", { class: "num", text: st.count }), h("td", { class: "num" + (st.errors ? " bad" : ""), text: st.errors }),
          h("td", { class: "num", text: st.retries }),
          h("td", { class: "num mono", text: ms(st.p50_ms) }), h("td", { class: "num mono", text: ms(st.p99_ms) }),
          h("td", { class: "bars" }, h("div", { class: "ptrack" }, bar99, bar50)),
          h("td", { class: "num", text: st.queue.due }), h("td", { class: "num", text: st.queue.running }),
          h("td", { class: "num" + (st.queue.dead ? " bad" : ""), text: st.queue.dead }));
      });
      replace(holder, cards, table(["step", "type", "runs", "errors", "retries", "p50", "p99", "", "due", "running", "dead"], rows, { class: "metrics" }));
    };
    await load();
    every(5000, load);
  }

  function stat(label, value, kind, sub) {
    return h("div", { class: "stat " + (kind || "") }, h("div", { class: "muted small", text: label }), h("div", { class: "big", text: value }), sub ? h("div", { class: "muted small", text: sub }) : null);
  }

  // -- routing ---------------------------------------------------------------------------------

  const VIEWS = { flows: viewFlows, logs: viewLogs, traces: viewTraces, state: viewState, streams: viewStreams, dlq: viewDlq, endpoints: viewEndpoints, cron: viewCron, metrics: viewMetrics };

  async function route() {
    cleanup();
    const raw = location.hash.replace(/^#\/?/, "") || "flows";
    const [path, search] = raw.split("?");
    const parts = path.split("/");
    const section = VIEWS[parts[0]] ? parts[0] : "flows";
    app.section = section;
    document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.section === section));
    document.body.dataset.section = section;
    try {
      await VIEWS[section](parts.slice(1), new URLSearchParams(search || ""));
    } catch (err) {
      replace(main, page("Cannot load this section", null,
        h("p", { class: "error", text: err.status === 401 || err.status === 403
          ? "The Workbench needs an admin here: put an admin token in the Token field."
          : String(err.message || err) })));
    }
  }

  const tokenInput = document.getElementById("token");
  tokenInput.value = token();
  tokenInput.addEventListener("change", () => {
    sessionStorage.setItem("stepwise.token", tokenInput.value.trim());
    app.flows = null;
    route();
  });
  window.addEventListener("hashchange", route);
  route();
  api("dlq?limit=1000", { quiet: true }).then((d) => updateDlqCount(d.dead_letters.length)).catch(() => {});
})();
