// The "compare two backbones" panel: the two ticked rows' bootstrap replicates (embedded JSON, see
// compare_view.py) give, per shared setting, the paired difference, its percentile interval, the
// paired-bootstrap p-value and Holm's correction, as `bob compare` computes them. The result table is
// built with createElement and textContent only: nothing from a result file is parsed as HTML. Names
// are read from the page's own tables (board row i, settings row j): the JSON holds numbers only.
(function () {
  const data = document.getElementById("replicates");
  const out = document.getElementById("compare-out");
  if (!data || !out) return;
  const payload = JSON.parse(data.textContent);
  const level = payload.confidence;
  const alpha = 1 - level;
  const ticked = [];
  const settingRows = Array.from(document.querySelectorAll("#settings tbody tr"));
  payload.settings.forEach((s, j) => {
    s.name = settingRows[j].cells[0].textContent;
    s.metric = settingRows[j].cells[2].textContent;
  });
  function rowName(i) {
    const box = document.querySelector('input.cmp[data-row="' + i + '"]');
    return box.closest("tr").cells[1].textContent;
  }

  function decode(q) {
    const bin = atob(q.b64);
    const values = new Float64Array(bin.length / 2);
    for (let i = 0; i < values.length; i++) {
      const code = bin.charCodeAt(2 * i) | (bin.charCodeAt(2 * i + 1) << 8);
      values[i] = code > 65534 ? NaN : q.lo + code * q.step;
    }
    return values;
  }
  function quantile(sorted, q) { // numpy's default (linear) interpolation
    const pos = q * (sorted.length - 1), lo = Math.floor(pos), hi = Math.ceil(pos);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
  }
  function paired(a, b) { // {low, high, p} of a - b, resample by resample
    const d = [];
    for (let i = 0; i < a.length; i++) { const x = a[i] - b[i]; if (Number.isFinite(x)) d.push(x); }
    if (!d.length) return null;
    d.sort((x, y) => x - y);
    const n = d.length;
    const below = (d.filter((x) => x <= 0).length + 1) / (n + 1);
    const above = (d.filter((x) => x >= 0).length + 1) / (n + 1);
    return { low: quantile(d, alpha / 2), high: quantile(d, 1 - alpha / 2), p: Math.min(1, 2 * Math.min(below, above)) };
  }
  function holm(ps) {
    const order = ps.map((p, i) => [p, i]).filter((x) => x[0] !== null).sort((x, y) => x[0] - y[0]);
    const adjusted = ps.map(() => null);
    let running = 0;
    order.forEach(([p, i], rank) => { running = Math.max(running, Math.min(1, (order.length - rank) * p)); adjusted[i] = running; });
    return adjusted;
  }
  function num(x, digits, signed) {
    if (x === null || !Number.isFinite(x)) return "–";
    const s = x.toFixed(digits);
    return signed && x >= 0 ? "+" + s : s;
  }
  function pval(p) { return p === null ? "–" : p >= 1e-4 ? p.toPrecision(2) : p.toExponential(1); }
  function el(tag, text) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; return e; }

  function compareRows(a, b) {
    const rows = [], ps = [];
    payload.settings.forEach((s, idx) => {
      const ca = a.cells[idx], cb = b.cells[idx];
      if (!ca || !cb) return;
      const sign = s.higher ? 1 : -1;
      const r = paired(decode(ca), decode(cb)); // score units: higher is better
      const diff = ca.point - cb.point;
      rows.push({ s, diff, better: sign * diff, low: r ? (s.higher ? r.low : -r.high) : null, high: r ? (s.higher ? r.high : -r.low) : null, p: r ? r.p : null });
      ps.push(r ? r.p : null);
    });
    holm(ps).forEach((p, i) => { rows[i].holm = p; });
    return rows;
  }
  function verdict(a, b, rows) {
    const tested = rows.filter((r) => r.holm !== null);
    const better = tested.filter((r) => r.holm < alpha && r.better > 0).length;
    const worse = tested.filter((r) => r.holm < alpha && r.better < 0).length;
    if (!tested.length) return "No shared setting has replicates on both sides.";
    let text = a.key + " is better than " + b.key + " on " + better + " of " + tested.length + " settings and worse on " + worse +
      " (Holm-corrected, family-wise " + Math.round(level * 100) + "%)";
    if (better && !worse) text += "; overall, " + a.key + " is the better backbone on these settings.";
    else if (worse && !better) text += "; overall, " + b.key + " is the better backbone on these settings.";
    else if (better && worse) text += "; neither is better everywhere: the answer depends on the task.";
    else text += "; the two cannot be told apart on these test sets.";
    return text;
  }
  function render() {
    out.replaceChildren();
    if (ticked.length < 2) { out.appendChild(el("p", ticked.length ? "Tick one more row." : "No two rows ticked.")); return; }
    const a = payload.rows[ticked[0]], b = payload.rows[ticked[1]];
    a.key = rowName(ticked[0]);
    b.key = rowName(ticked[1]);
    out.appendChild(el("p", "A = " + a.key + "   B = " + b.key));
    const table = el("table");
    table.id = "compare-table";
    const head = el("tr");
    ["setting", "metric", "A", "B", "Δ (A − B)", Math.round(level * 100) + "% interval", "p", "p (Holm)", "verdict"].forEach((h) => head.appendChild(el("th", h)));
    table.appendChild(el("thead")).appendChild(head);
    const body = table.appendChild(el("tbody"));
    const rows = compareRows(a, b);
    rows.forEach((r) => {
      const tr = body.appendChild(el("tr"));
      const v = r.holm === null ? "not tested" : r.holm < alpha ? (r.better > 0 ? "A better" : "B better") : "no significant difference";
      [r.s.name, r.s.metric, num(a.cells[payload.settings.indexOf(r.s)].point, 4), num(b.cells[payload.settings.indexOf(r.s)].point, 4),
        num(r.diff, 4, true), r.low === null ? "–" : "[" + num(r.low, 4, true) + ", " + num(r.high, 4, true) + "]", pval(r.p), pval(r.holm), v]
        .forEach((c) => tr.appendChild(el("td", c)));
    });
    out.appendChild(table);
    out.appendChild(el("p", verdict(a, b, rows)));
    if (a.overall && b.overall) {
      const r = paired(decode(a.overall), decode(b.overall));
      const d = a.overall.point - b.overall.point;
      out.appendChild(el("p", "Overall score A − B: " + num(d, 2, true) + (r ? " [" + num(r.low, 2, true) + ", " + num(r.high, 2, true) + "], paired-bootstrap p = " + pval(r.p) : "")));
    }
  }
  document.querySelectorAll("input.cmp").forEach((box) => {
    box.addEventListener("change", () => {
      const row = parseInt(box.getAttribute("data-row"), 10);
      const at = ticked.indexOf(row);
      if (box.checked && at < 0) ticked.push(row);
      if (!box.checked && at >= 0) ticked.splice(at, 1);
      while (ticked.length > 2) {
        const old = ticked.shift();
        const other = document.querySelector('input.cmp[data-row="' + old + '"]');
        if (other) other.checked = false;
      }
      render();
    });
  });
})();
