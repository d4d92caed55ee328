// Sorting and filtering of the server-rendered board: rows are only reordered or hidden, never built
// from strings, so nothing from a result file is ever parsed as HTML here.
(function () {
  const table = document.getElementById("board");
  if (!table) return;
  const body = table.tBodies[0];
  const heads = Array.from(table.tHead.rows[0].cells);
  function key(row, col, numeric) {
    const cell = row.cells[col];
    if (!numeric) return cell.textContent.trim().toLowerCase();
    const v = cell.getAttribute("data-sort");
    return v === null || v === "" ? NaN : parseFloat(v);
  }
  function sortBy(th) {
    const col = parseInt(th.getAttribute("data-col"), 10);
    const numeric = th.getAttribute("data-type") === "num";
    const asc = th.getAttribute("aria-sort") !== "ascending";
    heads.forEach((h) => h.removeAttribute("aria-sort"));
    th.setAttribute("aria-sort", asc ? "ascending" : "descending");
    const rows = Array.from(body.rows);
    rows.sort((a, b) => {
      const x = key(a, col, numeric), y = key(b, col, numeric);
      if (numeric) {
        if (isNaN(x) && isNaN(y)) return 0;
        if (isNaN(x)) return 1; // missing values last in both directions
        if (isNaN(y)) return -1;
        return asc ? x - y : y - x;
      }
      return asc ? x.localeCompare(y) : y.localeCompare(x);
    });
    rows.forEach((r) => body.appendChild(r));
  }
  heads.forEach((th) => {
    th.addEventListener("click", () => sortBy(th));
    th.addEventListener("keydown", (e) => { if (e.key === "Enter") sortBy(th); });
  });
  const filter = document.getElementById("board-filter");
  const count = document.getElementById("board-count");
  filter.addEventListener("input", () => {
    const needle = filter.value.trim().toLowerCase();
    let shown = 0;
    Array.from(body.rows).forEach((r) => {
      const hit = !needle || r.textContent.toLowerCase().includes(needle);
      r.hidden = !hit;
      if (hit) shown += 1;
    });
    count.textContent = shown + " backbones";
  });
})();
