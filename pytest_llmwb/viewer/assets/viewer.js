// Draws the page data of pytest-llmwb's viewer. Bundle content is untrusted: it only
// ever reaches the document as text nodes (textContent), never as markup.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  var MARKS = { added: "+ added", removed: "\u2212 removed", changed: "~ changed", moved: "\u2195 moved",
    unreached: "not reached (the run stopped at the drift)", drifted: "\u2260 drifted (the run stopped here)" };

  function el(tag, cls) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    for (var i = 2; i < arguments.length; i++) add(node, arguments[i]);
    return node;
  }
  function add(parent, child) {
    if (child === null || child === undefined || child === "") return;
    if (Array.isArray(child)) { child.forEach(function (c) { add(parent, c); }); return; }
    parent.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }
  function svg(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    return node;
  }
  function json(value) {
    return typeof value === "string" ? value : JSON.stringify(value, null, 2);
  }
  function marker(name) {
    return name ? el("span", "marker " + name, MARKS[name] || name) : null;
  }
  function clip(text, width) {
    return text.length > width ? text.slice(0, width - 1) + "\u2026" : text;
  }
  function section(id, title) {
    var s = el("section");
    s.id = id;
    add(s, el("h2", "", title));
    return s;
  }
  function table(headers, rows, numeric) {
    var t = el("table");
    var head = el("tr");
    headers.forEach(function (h, i) { add(head, el("th", numeric && numeric[i] ? "num" : "", h)); });
    add(t, el("thead", "", head));
    var body = el("tbody");
    rows.forEach(function (r) {
      var tr = el("tr");
      r.forEach(function (c, i) { add(tr, el("td", numeric && numeric[i] ? "num" : "", c)); });
      add(body, tr);
    });
    add(t, body);
    return t;
  }

  function header(data) {
    var run = data;
    var parts = [];
    var title = data.diff ? "Run diff" : "Run";
    parts.push(el("h1", "", title + ": " + run.name));
    if (data.diff) {
      parts.push(el("div", "sub", "old: " + data.diff.old.source + " (" + data.diff.old.fact_count +
        " facts) \u2192 new: " + run.source + " (" + run.fact_count + " facts)"));
    } else {
      parts.push(el("div", "sub", run.source + " \u00b7 " + run.fact_count + " facts"));
    }
    parts.push(el("div", "sub", "DAG " + run.dag.name + (run.dag.declared ? " (declared)" : " (derived from the facts)") +
      " \u00b7 " + run.dag.nodes.length + " nodes \u00b7 " + run.dag.digest));
    var total = run.costs.total;
    var totals = el("div", "totals",
      el("div", "total", el("b", "", String(total.calls)), "model calls"),
      el("div", "total", el("b", "", String(total.tokens)), "tokens (" + total.input_tokens + " in, " + total.output_tokens + " out)"),
      el("div", "total", el("b", "", total.cost || "\u2014"), "cost" + (total.unpriced ? " (" + total.unpriced + " unpriced)" : "")),
      el("div", "total", el("b", "", String(run.gates.length)), "gate decisions"),
      el("div", "total", el("b", "", String(run.artifacts.length)), "artifact revisions"));
    parts.push(totals);
    var links = [["dag", "DAG"], ["gates", "Gates"], ["timeline", "Timeline"], ["artifacts", "Artifacts"], ["costs", "Costs"]];
    if (data.diff) links.unshift(["changes", "Changes"]);
    var nav = el("nav");
    links.forEach(function (l) { var a = el("a", "", l[1]); a.setAttribute("href", "#" + l[0]); add(nav, a); });
    parts.push(nav);
    if (data.diff) {
      var d = data.diff;
      var drift = d.drift || [];
      var banner = el("div", "panel banner" + (d.verdict === "same" && !drift.length ? " same" : "") + (drift.length ? " drift" : ""));
      banner.id = "verdict";
      if (drift.length) {
        add(banner, el("strong", "", "The replay stopped at " + (drift.length > 1 ? drift.length + " drift errors" : "a drift") + ":"));
        drift.forEach(function (e) { add(banner, driftError(e)); });
        add(banner, el("div", "sub", "Compared with the bundle: " + d.summary));
      } else {
        add(banner, el("strong", "", d.summary));
      }
      add(banner, el("div", "sub", d.stats.aligned + " facts aligned, " + d.stats.changed + " changed, " +
        d.stats.added + " added, " + d.stats.removed + " removed, " + d.stats.moved + " moved" +
        (d.stats.unreached ? ", " + d.stats.unreached + " not reached (the run stopped at the drift)" : "") + "; tokens " +
        d.total.old_tokens + " \u2192 " + d.total.new_tokens + (d.total.cost_delta ? "; cost " + d.total.cost_delta : "")));
      parts.push(banner);
    }
    return el("header", "", parts);
  }

  // One drift error of the banner: its class and first line, where, each changed path
  // with its recorded and its new value, the rest of its message, and the fix.
  function driftError(e) {
    var box = el("div", "drift-error");
    box.setAttribute("data-drift", e.kind);
    add(box, el("div", "", el("code", "kind", e.kind), " ", e.headline));
    if (e.node) add(box, el("div", "sub", "node " + e.node + (e.call ? ", " + e.call + " (ordinal " + e.ordinal + ")" : "")));
    if (e.changes.length) {
      var ul = el("ul", "value-change drift-changes");
      e.changes.forEach(function (c) {
        add(ul, el("li", "", el("code", "", c.path || "(the whole request)"), ": ",
          driftValue(c.old, "old"), " \u2192 ", driftValue(c.new, "new")));
      });
      add(box, [el("div", "sub", "changed (recorded \u2192 now):"), ul]);
    }
    if (e.details.length) add(box, el("pre", "", e.details.join("\n")));
    if (e.fix) add(box, el("div", "fix", el("b", "", "fix: "), el("code", "", e.fix)));
    return box;
  }

  function driftValue(value, side) {
    // a side the request does not have is said so, not shown as a string
    return value === "<absent>" ? el("em", side, "absent") : el("code", side, JSON.stringify(value));
  }

  function dag(run) {
    var s = section("dag", "DAG \u2014 tokens and cost per node");
    var d = run.dag;
    if (!d.nodes.length) { add(s, el("p", "empty", "The DAG has no nodes.")); return s; }
    var w = d.node_width, h = d.node_height;
    var root = svg("svg", { width: d.width, height: d.height, viewBox: "0 0 " + d.width + " " + d.height, role: "img" });
    var title = svg("title");
    title.textContent = "DAG " + d.name;
    root.appendChild(title);
    var defs = svg("defs");
    var arrow = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
    arrow.appendChild(svg("path", { d: "M0,0 L10,5 L0,10 z", "class": "arrow" }));
    defs.appendChild(arrow);
    root.appendChild(defs);
    var at = {};
    d.nodes.forEach(function (n) { at[n.id] = n; });
    d.edges.forEach(function (e) {
      var a = at[e.source], b = at[e.target];
      if (!a || !b) return;
      var x1 = a.x + w, y1 = a.y + h / 2, x2 = b.x, y2 = b.y + h / 2;
      var skips = Math.round((b.x - a.x) / d.column) - 1, shape;
      if (skips > 0) {
        // past the nodes between them: an arc below, deeper the more columns it skips
        x1 = a.x + w / 2; y1 = a.y + h; x2 = b.x + w / 2; y2 = b.y + h;
        var low = Math.max(y1, y2) + d.arc * skips * 1.3;
        shape = "M" + x1 + "," + y1 + " C" + x1 + "," + low + " " + x2 + "," + low + " " + x2 + "," + y2;
      } else {
        if (x2 <= x1) { x1 = a.x + w / 2; y1 = a.y + h; x2 = b.x + w / 2; y2 = b.y; }
        var mid = (x1 + x2) / 2;
        shape = "M" + x1 + "," + y1 + " C" + mid + "," + y1 + " " + mid + "," + y2 + " " + x2 + "," + y2;
      }
      var path = svg("path", { d: shape,
        "class": "edge" + (e.marker ? " mark-" + e.marker : ""), "marker-end": "url(#arrow)" });
      var tip = svg("title");
      tip.textContent = e.source + " \u2192 " + e.target + (e.marker ? " (" + e.marker + ")" : "");
      path.appendChild(tip);
      root.appendChild(path);
    });
    d.nodes.forEach(function (n) {
      var g = svg("g", { "class": "node kind-" + n.kind + (n.marker ? " mark-" + n.marker : ""), transform: "translate(" + n.x + "," + n.y + ")" });
      g.setAttribute("data-node", n.id);
      var tip = svg("title");
      tip.textContent = n.id + " (" + n.kind + "): " + n.spend.describe;
      g.appendChild(tip);
      g.appendChild(svg("rect", { width: w, height: h, rx: 7, ry: 7 }));
      var lines = [
        [clip(n.id, 19), "id", 20],
        [n.kind + (n.marker ? "  " + (MARKS[n.marker] || n.marker) : ""), "kind", 37],
        [n.spend.calls ? n.spend.tokens + " tok" + (n.spend.cost ? " \u00b7 " + n.spend.cost : "") : "no model calls", "spend", 54]
      ];
      lines.forEach(function (line) {
        var t = svg("text", { x: 10, y: line[2], "class": line[1] });
        t.textContent = line[0];
        g.appendChild(t);
      });
      root.appendChild(g);
    });
    add(s, el("div", "panel dag", root));
    return s;
  }

  function gateCard(g) {
    var card = el("article", "card gate" + (g.marker ? " mark-" + g.marker : ""));
    card.setAttribute("data-gate", g.gate_id);
    add(card, el("header", "", el("h3", "", g.gate_id), el("span", "badge decision-" + g.decision, g.decision), marker(g.marker)));
    var dl = el("dl");
    function row(k, v, mono) { if (v !== "" && v !== null && v !== undefined) { add(dl, el("dt", "", k)); add(dl, el("dd", mono ? "mono" : "", v)); } }
    row("decision", g.decision);
    row("reviewer", g.reviewer);
    row("policy", g.policy || "none recorded");
    row("node", g.node + " (fact #" + g.seq + ")");
    row("subject", g.subject);
    row("digest", g.digest, true);
    row("reason", g.reason);
    add(card, dl);
    if (g.reviewed !== null && g.reviewed !== undefined) add(card, el("div", "", el("div", "sub", "reviewed"), el("pre", "", json(g.reviewed))));
    if (g.edit !== null && g.edit !== undefined) add(card, el("div", "", el("div", "sub", "edit"), el("pre", "", json(g.edit))));
    if (g.changes && g.changes.length) add(card, valueChanges(g.changes));
    add(card, el("div", "sub", "what led to it (" + g.causes_total + " facts on the path " + g.path_nodes.join(" \u2192 ") + "):"));
    if (g.causes_total > g.causes.length) {
      add(card, el("div", "sub", "\u2026 " + (g.causes_total - g.causes.length) + " earlier facts (in the timeline), then the last " + g.causes.length + ":"));
    }
    var ol = el("ol", "causes");
    g.causes.forEach(function (c) {
      var li = el("li");
      c.lines.forEach(function (line) { add(li, el("div", "", line)); });
      add(ol, li);
    });
    add(card, ol);
    add(card, el("div", "sub", "spent on that path: " + g.spent));
    return card;
  }

  function gates(run) {
    var s = section("gates", "Gates");
    if (!run.gates.length) { add(s, el("p", "empty", "No gate fired in this run.")); return s; }
    var cards = el("div", "cards");
    run.gates.forEach(function (g) { add(cards, gateCard(g)); });
    add(s, cards);
    return s;
  }

  function valueChanges(changes) {
    var ul = el("ul", "value-change");
    changes.forEach(function (c) {
      var li = el("li", "", el("code", "", c.path || "/"), ": ");
      if (c.text_diff) add(li, el("pre", "", c.text_diff.join("\n")));
      else add(li, [show(c, "old"), " \u2192 ", show(c, "new")]);
      add(ul, li);
    });
    return ul;
  }
  function show(change, side) {
    if (change[side + "_truncated"] !== undefined) return el("code", "", change[side + "_truncated"]);
    if (!(side in change)) return el("em", "", "absent");
    return el("code", "", clip(JSON.stringify(change[side]), 200));
  }

  function timeline(data) {
    var run = data;
    var s = section("timeline", "Timeline \u2014 " + run.facts.length + (run.facts.length === 1 ? " fact" : " facts"));
    var input = el("input");
    input.setAttribute("type", "search");
    input.setAttribute("placeholder", "filter by kind, node or text");
    input.setAttribute("aria-label", "filter facts");
    var shown = el("span", "sub", "");
    add(s, el("div", "filter", input, shown));
    var t = el("table", "facts");
    add(t, el("thead", "", el("tr", "", el("th", "num", "#"), el("th", "", "kind"), el("th", "", "node"), el("th", "", "what happened"), el("th", "", ""))));
    var body = el("tbody");
    var rows = [];
    run.facts.forEach(function (f) {
      var tr = el("tr", "fact" + (f.marker ? " mark-" + f.marker : ""),
        el("td", "num", String(f.seq)), el("td", "kind", f.kind), el("td", "", f.node),
        el("td", "what", f.text || f.label), el("td", "", marker(f.marker)));
      tr.setAttribute("data-seq", String(f.seq));
      var detail = null;
      tr.addEventListener("click", function () {
        if (detail) { detail.remove(); detail = null; return; }
        var cell = el("td", "", el("pre", "", json(f.detail)));
        cell.colSpan = 5;
        if (f.changes && f.changes.length) add(cell, valueChanges(f.changes));
        detail = el("tr", "detail", cell);
        tr.after(detail);
      });
      rows.push([tr, (f.kind + " " + f.node + " " + f.text + " " + (f.marker || "")).toLowerCase()]);
      add(body, tr);
    });
    add(t, body);
    add(s, t);
    function count(n) { shown.textContent = n + " of " + run.facts.length + " facts shown"; }
    count(run.facts.length);
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase(), n = 0;
      rows.forEach(function (r) { var hit = !q || r[1].indexOf(q) >= 0; r[0].hidden = !hit; if (hit) n++; });
      count(n);
    });
    if (data.diff && data.diff.removed_facts.length) {
      add(s, el("h3", "", "Facts only the old run has"));
      add(s, table(["#", "kind", "node", "what happened", ""], data.diff.removed_facts.map(function (f) {
        return [String(f.seq), f.kind, f.node, f.text || f.label, marker(f.marker || "removed")];
      }), [true]));
    }
    return s;
  }

  function artifacts(run) {
    var s = section("artifacts", "Artifact revisions");
    if (!run.artifacts.length) { add(s, el("p", "empty", "No artifacts in this run.")); return s; }
    add(s, table(["#", "artifact", "revision", "node", "schema", "digest", "derived from", "content", ""],
      run.artifacts.map(function (a) {
        var content = el("details", "", el("summary", "", "show"), el("pre", "", json(a.content)));
        return [String(a.seq), a.name, String(a.revision) + (a.supersedes !== null && a.supersedes !== undefined ? " (supersedes #" + a.supersedes + ")" : ""),
          a.node, a.schema, el("span", "mono", a.digest), a.derived_from.map(function (x) { return "#" + x; }).join(", "), content, marker(a.marker)];
      }), [true]));
    return s;
  }

  function costs(data) {
    var run = data;
    var s = section("costs", "Costs");
    add(s, el("p", "", "Total: " + run.costs.total.describe));
    if (run.costs.by_node.length) {
      add(s, el("h3", "", "By node"));
      add(s, table(["node", "calls", "input tokens", "output tokens", "tokens", "cost"], run.costs.by_node.map(function (n) {
        return [n.node, String(n.calls), String(n.input_tokens), String(n.output_tokens), String(n.tokens), n.cost + (n.unpriced ? " (" + n.unpriced + " unpriced)" : "")];
      }), [false, true, true, true, true, true]));
    }
    if (run.costs.by_artifact.length) {
      add(s, el("h3", "", "By artifact revision (the model calls it was derived from)"));
      add(s, table(["artifact", "calls", "tokens", "cost"], run.costs.by_artifact.map(function (a) {
        return [a.artifact, String(a.calls), String(a.tokens), a.cost];
      }), [false, true, true, true]));
    }
    if (data.diff && data.diff.usage.length) {
      add(s, el("h3", "", "Old \u2192 new, by node"));
      add(s, table(["node", "old tokens", "new tokens", "\u0394 tokens", "old cost", "new cost", "\u0394 cost"], data.diff.usage.map(function (u) {
        return [u.node, String(u.old_tokens), String(u.new_tokens), (u.tokens_delta > 0 ? "+" : "") + u.tokens_delta, u.old_cost, u.new_cost, u.cost_delta];
      }), [false, true, true, true, true, true, true]));
    }
    return s;
  }

  function changes(diff) {
    var s = section("changes", "Changes");
    var all = diff.dag_changes.concat(diff.fact_changes);
    if (!all.length) { add(s, el("p", "empty", diff.summary)); return s; }
    var ul = el("ul", "changes");
    all.forEach(function (c) {
      var kind = c.marker ? c.marker : c.change.indexOf("added") >= 0 ? "added" : c.change.indexOf("removed") >= 0 ? "removed" : c.change === "facts_moved" ? "moved" : "changed";
      var li = el("li", "", marker(kind), " ", c.summary);
      if (c.changes && c.changes.length) add(li, valueChanges(c.changes));
      add(ul, li);
    });
    add(s, el("div", "panel", ul));
    if (diff.cut) add(s, el("p", "sub", diff.cut + " more changes not shown"));
    return s;
  }

  function main() {
    var app = document.getElementById("app");
    var data;
    try {
      data = JSON.parse(document.getElementById("llmwb-data").textContent);
    } catch (err) {
      add(app, el("p", "error", "This page's run data could not be read: " + err));
      return;
    }
    add(app, header(data));
    if (data.diff) add(app, changes(data.diff));
    add(app, dag(data));
    add(app, gates(data));
    add(app, timeline(data));
    add(app, artifacts(data));
    add(app, costs(data));
    document.body.setAttribute("data-ready", "true");
  }
  main();
})();
