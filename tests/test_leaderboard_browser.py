"""The leaderboard page in a real headless Chromium: rows, sorting, filtering, plots, XSS stays inert.

Chromium comes from the system (scripts/setup.sh installs it); playwright drives it through
`executable_path`, so no browser download is needed. Without Chromium the test is skipped with the
reason, unless BOB_REQUIRE_BROWSER is set (scripts/test.sh sets it), in which case it fails.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from leaderboard_results import XSS_NAMES, xss_results

from bob.leaderboard import build_leaderboard
from bob.leaderboard.figures import PLOT_IDS

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _unavailable(reason: str) -> None:
    if os.environ.get("BOB_REQUIRE_BROWSER"):
        pytest.fail(f"{reason} (BOB_REQUIRE_BROWSER is set, so this is a failure, not a skip)")
    pytest.skip(reason)


def _chromium() -> str:
    path = os.environ.get("BOB_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
    )
    if not path:
        _unavailable(
            "no Chromium found (install it with scripts/setup.sh, apt-get install chromium, or set BOB_CHROMIUM)"
        )
    return str(path)


@pytest.fixture
def page(tmp_path: Path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install 'bob-bench[dev]')")
    executable = _chromium()
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=executable, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def _rows(page) -> list[list[str]]:
    return page.eval_on_selector_all(
        "#board tbody tr:not([hidden])", "rows => rows.map(r => Array.from(r.cells, c => c.textContent))"
    )


def _column(page, col: int) -> list[float]:
    values = page.eval_on_selector_all(
        "#board tbody tr", f"rows => rows.map(r => r.cells[{col}].getAttribute('data-sort'))"
    )
    return [float(v) if v else float("nan") for v in values]


def test_leaderboard_page_in_headless_chromium(page, tmp_path):
    n_backbones = xss_results(tmp_path / "raw")
    build_leaderboard(tmp_path / "raw", tmp_path / "out")
    dialogs, errors, requests = [], [], []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on(
        "request",
        lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:", "blob:")) else None,
    )
    page.goto((tmp_path / "out" / "leaderboard.html").as_uri())
    page.wait_for_load_state("load")

    # The table renders every backbone, names as plain text.
    rows = _rows(page)
    assert len(rows) == n_backbones
    names = [r[1] for r in rows]
    for payload in XSS_NAMES:
        assert f"{payload} [pretrained]" in names

    # Sorting by a column reorders the rows: overall z (column 6) ascending, then descending.
    header = page.locator("#board thead th", has_text="overall z")
    before = _column(page, 6)
    header.click()
    ascending = _column(page, 6)
    assert ascending == sorted(before) and ascending != before
    header.click()
    assert _column(page, 6) == sorted(before, reverse=True)
    page.locator("#board thead th", has_text="backbone").click()
    assert [r[1] for r in _rows(page)] == sorted(names, key=str.lower)

    # Filtering hides the rows that do not match.
    page.fill("#board-filter", "hierarchical")
    assert [r[2] for r in _rows(page)] == ["hierarchical"]
    page.fill("#board-filter", "")
    assert len(_rows(page)) == n_backbones

    # The three plots render (plotly drew an SVG with data in it), labels shown as text.
    for plot_id in PLOT_IDS:
        page.wait_for_selector(f"#{plot_id} .main-svg", timeout=20_000)
    assert (
        page.eval_on_selector_all("#plot-suite-heatmap .hm image, #plot-suite-heatmap .hm", "e => e.length")
        > 0
    )
    assert page.eval_on_selector_all("#plot-params .scatterlayer .point", "e => e.length") == n_backbones
    ticks = page.eval_on_selector_all("#plot-suite-heatmap .ytick text", "ts => ts.map(t => t.textContent)")
    assert {f"{name} [pretrained]" for name in XSS_NAMES} <= set(ticks)

    # The payloads stayed inert: no dialog, no injected element, no script error, nothing fetched.
    page.wait_for_timeout(300)
    assert dialogs == []
    assert page.eval_on_selector_all("img", "e => e.length") == 0
    assert (
        page.evaluate("Array.from(document.scripts).filter(s => s.textContent.trim() === 'alert(1)').length")
        == 0
    )
    assert errors == [] and requests == []


def test_the_compare_panel_agrees_with_bob_compare(page, tmp_path):
    """Ticking two rows shows, per shared setting, the paired difference and interval that
    `bob compare` computes from the same resamples (two seeds per cell: both use the bootstrap test)."""
    import numpy as np
    from sample_results import hits_samples, write_sampled_result

    from bob.compare import compare
    from bob.leaderboard import BoardOptions

    rng = np.random.default_rng(0)
    for name, acc in {"a": 0.8, "b": 0.7, "c": 0.5}.items():
        for task in ("knn/x", "ncm/x"):
            for seed in (0, 1):
                write_sampled_result(
                    tmp_path / "raw", name, task, hits_samples(rng.random(200) < acc), seed=seed
                )
    out = build_leaderboard(tmp_path / "raw", tmp_path / "out", BoardOptions(resamples=300))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((tmp_path / "out" / "leaderboard.html").as_uri())
    keys = list(out.table["backbone_key"])
    page.check('input.cmp[data-row="0"]')
    page.check('input.cmp[data-row="2"]')
    rows = page.eval_on_selector_all(
        "#compare-table tbody tr", "rows => rows.map(r => Array.from(r.cells, c => c.textContent))"
    )
    expected = compare(tmp_path / "raw", keys[0], keys[2], resamples=300)
    assert [r[0] for r in rows] == [s.setting for s in expected.settings]
    for row, s in zip(rows, expected.settings, strict=True):
        low, high = (float(v) for v in row[5].strip("[]").split(","))
        assert float(row[4]) == pytest.approx(s.diff, abs=1e-4)
        assert (low, high) == pytest.approx((s.ci_low, s.ci_high), abs=2e-4)
        assert float(row[7]) == pytest.approx(s.p_holm, rel=0.05) and row[8] == s.verdict
    assert expected.verdict in page.inner_text("#compare-out")
    page.check('input.cmp[data-row="1"]')  # a third tick drops the oldest
    assert page.is_checked('input.cmp[data-row="0"]') is False
    assert errors == []


def test_a_first_board_shows_raw_scores_and_no_empty_plot(page, tmp_path):
    """The quickstart's board (one pretrained backbone, its random init, three settings, MACs): every
    raw score is on screen, each plot either draws data or is replaced by a line saying why, and a
    screenshot of the first screen is taken (into $BOB_SCREENSHOT_DIR when set, else the test's
    folder; the whole page beside it in the test's folder)."""
    from leaderboard_results import first_board_results

    from bob.leaderboard import BoardOptions
    from bob.leaderboard import format as fmt
    from bob.leaderboard.figures import PARETO_PLOT_ID

    first_board_results(tmp_path / "raw")
    out = build_leaderboard(tmp_path / "raw", tmp_path / "out", BoardOptions(resamples=200))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto((tmp_path / "out" / "leaderboard.html").as_uri())
    page.wait_for_selector(f"#{PARETO_PLOT_ID} .main-svg", timeout=20_000)

    raw = page.inner_text("#raw")
    cells = out.board.cells
    assert len(cells) == 6
    for value in cells["mean"]:
        assert fmt.num(value, 4) in raw
    assert [r[0] for r in _rows(page)] == ["unranked", "rand"]  # no position without a z-score
    assert "unranked" in page.inner_text(".unranked-note")

    # Each drawn plot holds data; each plot with nothing to show is a visible line instead.
    drawn = page.eval_on_selector_all(".plot .js-plotly-plot", "ps => ps.map(p => p.id)")
    assert PARETO_PLOT_ID in drawn
    for plot_id in drawn:
        points = page.eval_on_selector_all(
            f"#{plot_id} .scatterlayer .point, #{plot_id} .hm", "e => e.length"
        )
        assert points > 0, f"{plot_id} is drawn empty"
    notes = page.eval_on_selector_all(".plot-note", "ns => ns.map(n => n.getAttribute('data-plot'))")
    assert set(PLOT_IDS) <= set(notes) and not set(notes) & set(drawn)
    assert all(page.is_visible(f'.plot-note[data-plot="{n}"]') for n in notes)
    assert errors == []

    folder = Path(os.environ.get("BOB_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    shot = folder / "first-board.png"  # the first screen: the board and its raw scores
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shot))
    page.screenshot(path=str(tmp_path / "first-board-full.png"), full_page=True)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
