"""The HTML report: rendering in headless Chromium, regeneration, comparison, plots."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from kpkeys_sim.analysis import plots
from kpkeys_sim.analysis.store import ResultStore
from test_run_cmd import run_cli, shared_quick_run

CHROMIUM = Path("/usr/bin/chromium")
PREFIX = "kpkeys-sim: error: "
#: Section id -> number of figures it shows when its part of the run is ok.
FIGURES = {"bench": 1, "breakdown": 2, "v6v7": 1, "v6v7-other": 1, "attack": 1, "pba": 1}
#: Section id -> the run section whose status decides what it shows.
STATUS_OF = {"breakdown": "bench"}
SECTIONS = [
    "summary",
    "configuration",
    "arch",
    "boot",
    "kunit",
    "bench",
    "breakdown",
    "v6v7",
    "v6v7-other",
    "attack",
    "pba",
    "assumptions",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's quick run (shared with test_run_cmd.py)."""
    out, _, stdout, stderr = shared_quick_run(tmp_path_factory)
    assert (out / "report.html").is_file(), stdout + stderr
    return out


def statuses(run_dir: Path) -> dict[str, str]:
    """Run section id -> status, from the store."""
    with ResultStore.open(run_dir / "results.sqlite") as st:
        return {s["id"]: s["status"] for s in st.meta()["run"]["sections"]}


class _Dom(HTMLParser):
    """Collects each <section>'s id, its figures, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, dict[str, Any]] = {}
        self._current: str | None = None
        self.tags: set[str] = set()
        self.attrs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        a = {k: v or "" for k, v in attrs}
        self.attrs.extend((k, v) for k, v in a.items())
        if tag == "section":
            self._current = a.get("id", "")
            self.sections[self._current] = {"figures": 0, "text": ""}
        elif tag == "svg" and "fig" in a.get("class", "").split() and self._current:
            self.sections[self._current]["figures"] += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._current = None

    def handle_data(self, data: str) -> None:
        if self._current:
            self.sections[self._current]["text"] += data


def parse(html: str) -> _Dom:
    """Parse ``html`` into a :class:`_Dom`."""
    dom = _Dom()
    dom.feed(html)
    return dom


def chromium(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[bytes]:
    """Run Debian's headless Chromium with the flags that keep it off the network."""
    if not CHROMIUM.exists():
        pytest.fail(
            "/usr/bin/chromium is missing: the report test renders the page in Debian's "
            "headless Chromium (`make chromium`, run by `make test`, installs it)"
        )
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            *args,
        ],
        capture_output=True,
        timeout=timeout,
        check=False,
    )


# --- the page in a browser --------------------------------------------------------------------


@pytest.mark.slow
def test_report_renders_in_headless_chromium(run_dir: Path, tmp_path: Path) -> None:
    """Chromium's DOM has every section and figure; phone screenshots are not blank."""
    url = (run_dir / "report.html").resolve().as_uri()
    profile = tmp_path / "profile"
    dumped = chromium(f"--user-data-dir={profile}", "--dump-dom", url)
    assert dumped.returncode == 0, dumped.stderr.decode(errors="replace")[-2000:]
    dom = parse(dumped.stdout.decode())
    assert list(dom.sections) == SECTIONS
    status = statuses(run_dir)
    for sid in SECTIONS:
        sec = dom.sections[sid]
        st = status.get(STATUS_OF.get(sid, sid), "ok")
        if st == "ok":
            assert sec["figures"] == FIGURES.get(sid, 0), sid
            assert "not available in this version" not in sec["text"], sid
        else:
            assert sec["figures"] == 0, sid
            assert st in ("unavailable", "skipped"), (sid, st, sec["text"][:300])
            assert "not available in this version" in sec["text"] or (
                "not applicable" in sec["text"]
            ), sid

    top = tmp_path / "top.png"
    shot = chromium(
        f"--user-data-dir={profile}", f"--screenshot={top}", "--window-size=412,2000", url
    )
    assert shot.returncode == 0, shot.stderr.decode(errors="replace")[-2000:]
    with Image.open(top) as im:
        assert im.format == "PNG"
        assert im.size == (412, 2000)
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, "the phone screenshot is (nearly) blank"
    white = sum(n for n, c in colours if c == (255, 255, 255))
    assert white < 0.97 * 412 * 2000

    # the whole page at phone width: the figures' colours are drawn
    full = tmp_path / "full.png"
    shot = chromium(
        f"--user-data-dir={profile}", f"--screenshot={full}", "--window-size=412,16000", url
    )
    assert shot.returncode == 0
    with Image.open(full) as im:
        seen = {c for _, c in im.convert("RGB").getcolors(maxcolors=1 << 22) or []}
    if status.get("bench") == "ok":
        assert _near(seen, (0x00, 0x72, 0xB2)), "no bar of the benchmark charts was drawn"
    if status.get("attack") == "ok":
        assert _near(seen, (0xA5, 0x00, 0x26)) or _near(seen, (0x00, 0x68, 0x37)), (
            "the attack heat map was not drawn"
        )


def _near(colours: set[tuple[int, int, int]], target: tuple[int, int, int], tol: int = 12) -> bool:
    return any(all(abs(a - b) <= tol for a, b in zip(c, target, strict=True)) for c in colours)


@pytest.mark.slow
def test_report_is_self_contained(run_dir: Path) -> None:
    """No JavaScript, no external resource, a viewport for phones, inline SVG only."""
    html = (run_dir / "report.html").read_text()
    dom = parse(html)
    assert not dom.tags & {"script", "iframe", "img", "link", "object", "embed"}
    assert not [v for k, v in dom.attrs if k.startswith("on")]
    assert not [v for k, v in dom.attrs if k in ("src", "srcset") or v.startswith("javascript:")]
    assert not re.search(r"url\((?!#)", html), "a CSS or SVG url() that is not a local reference"
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "@import" not in html


@pytest.mark.slow
def test_report_says_quick_and_shows_the_configuration(run_dir: Path) -> None:
    """A --quick report says so, and lists the version, seed and every config knob."""
    dom = parse((run_dir / "report.html").read_text())
    html = (run_dir / "report.html").read_text()
    assert 'id="quick-note"' in html
    assert "smaller workloads and fewer attack trials" in html
    conf = dom.sections["configuration"]["text"]
    for knob in ("arch", "page_size", "series", "linear_map", "lazy_mmu_batching", "seed"):
        assert knob in conf
    assert "kpkeys-sim 0.1.0" in html and "seed 0" in html


@pytest.mark.slow
def test_report_shows_assumptions_and_calibration_sources(run_dir: Path) -> None:
    """The assumptions document and every calibration constant with its source are included."""
    text = parse((run_dir / "report.html").read_text()).sections["assumptions"]["text"]
    assert "Model assumptions" in text
    assert "pkey_reg_write" in text and "isb" in text
    assert "Neoverse" in text  # the arm64 target's source


class _Tables(HTMLParser):
    """Collects the cells of the <table> whose id is ``wanted``: a list of rows of cell texts."""

    def __init__(self, wanted: str) -> None:
        super().__init__()
        self.wanted = wanted
        self.rows: list[list[str]] = []
        self._inside = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and dict(attrs).get("id") == self.wanted:
            self._inside = True
        elif self._inside and tag == "tr":
            self.rows.append([])
        elif self._inside and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._inside = False
        elif self._inside and tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def side_by_side(html: str) -> list[list[str]]:
    """The rows (header first) of the report's arm64-vs-x86 v6/v7 table."""
    t = _Tables("v6v7-targets")
    t.feed(html)
    return t.rows


V6V7_HEADER = [
    "benchmark",
    "v6 arm64-poe",
    "v7 arm64-poe",
    "v6 x86-pks",
    "v7 x86-pks",
    "comparison",
]


@pytest.mark.slow
def test_v6v7_on_both_architectures(run_dir: Path) -> None:
    """The run compares v6 with v7 on arm64-poe and on x86-pks, and shows them side by side."""
    assert statuses(run_dir)["v6v7-other"] == "ok"
    doc = json.loads((run_dir / "results.json").read_text())
    by_exp: dict[str, list[dict[str, Any]]] = {}
    for r in doc["rows"]:
        by_exp.setdefault(r["experiment"], []).append(r)
    mine, other = by_exp["main/v6v7"], by_exp["main/v6v7-other"]
    assert {r["config"]["target"] for r in mine} == {"arm64-poe"}
    assert {r["config"]["arch"] for r in mine} == {"arm64"}
    assert {r["config"]["target"] for r in other} == {"x86-pks"}
    assert {r["config"]["arch"] for r in other} == {"x86"}

    def cells(rows: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {(r["results"]["label"], r["results"]["config"]) for r in rows}

    assert cells(mine) == cells(other)  # the same suite on both targets
    assert {c for _, c in cells(other)} == {"baseline-bbml2", "v6", "v7"}

    html = (run_dir / "report.html").read_text()
    text = parse(html).sections["v6v7-other"]["text"]
    assert "v6 vs v7 on the other architecture (x86-pks)" in text
    assert "arm64 POE and x86 PKS side by side" in text
    table = side_by_side(html)
    assert table[0] == V6V7_HEADER
    labels = {lb for lb, _ in cells(mine)}
    assert len(table) == 1 + len(labels) + 1  # header, one row per benchmark, the geomean
    assert table[-1][0] == "geomean"
    pct = re.compile(r"[+-]\d+\.\d\d%")
    for row in table[1:]:
        assert len(row) == len(V6V7_HEADER)
        assert all(pct.fullmatch(c) for c in row[1:5]), row
        assert re.fullmatch(
            r"v7 − v6: [+-]\d+\.\d pp on arm64-poe vs [+-]\d+\.\d pp on x86-pks "
            r"\((larger on (arm64-poe|x86-pks)|about the same)\)",
            row[5],
        ), row[5]
    # the cells are the suites' overheads (kernbench: one benchmark, one row)
    kb = next(row for row in table if row[0] == "kernbench syst")
    for i, (exp, cfg) in enumerate(
        [
            ("main/v6v7", "v6"),
            ("main/v6v7", "v7"),
            ("main/v6v7-other", "v6"),
            ("main/v6v7-other", "v7"),
        ]
    ):
        (res,) = [
            r["results"]
            for r in by_exp[exp]
            if r["results"]["label"] == "kernbench syst" and r["results"]["config"] == cfg
        ]
        assert kb[1 + i] == f"{res['overhead_pct']:+.2f}%"


@pytest.mark.slow
def test_v6v7_side_by_side_puts_arm64_first_on_an_x86_machine(
    run_dir: Path, tmp_path: Path
) -> None:
    """With x86-pks as the default machine's suite, the columns are still arm64 then x86."""
    db = tmp_path / "swapped.sqlite"
    shutil.copy(run_dir / "results.sqlite", db)
    conn = sqlite3.connect(db)
    conn.execute(
        "UPDATE results SET experiment = CASE experiment WHEN 'main/v6v7' THEN "
        "'main/v6v7-other' ELSE 'main/v6v7' END "
        "WHERE experiment IN ('main/v6v7', 'main/v6v7-other')"
    )
    conn.commit()
    conn.close()
    out = tmp_path / "swapped.html"
    assert run_cli(["report", str(db), "--html", str(out)])[0] == 0
    html = out.read_text()
    assert side_by_side(html) == side_by_side((run_dir / "report.html").read_text())
    dom = parse(html)
    assert "x86-pks (this run's default machine)" in dom.sections["v6v7-other"]["text"]
    assert "v6 vs v7 on the other architecture (arm64-poe)" in dom.sections["v6v7-other"]["text"]
    code, stdout, _ = run_cli(["report", str(db)])
    assert code == 0
    lines = [ln for ln in stdout.splitlines() if ln.startswith("v6 vs v7 on ")]
    assert [ln.split(" (")[0] for ln in lines] == ["v6 vs v7 on x86-pks", "v6 vs v7 on arm64-poe"]


# --- regeneration and comparison --------------------------------------------------------------


@pytest.mark.slow
def test_report_from_the_store_is_byte_identical(run_dir: Path, tmp_path: Path) -> None:
    """`kpkeys-sim report DB --html OUT` regenerates the run's report byte for byte."""
    out = tmp_path / "again.html"
    code, stdout, err = run_cli(["report", str(run_dir / "results.sqlite"), "--html", str(out)])
    assert (code, err) == (0, "")
    assert stdout == f"wrote {out}\n"
    assert out.read_bytes() == (run_dir / "report.html").read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["again.html"]


@pytest.mark.slow
def test_report_summary_and_json(run_dir: Path) -> None:
    """`report DB` prints the run's summary lines; `--json` prints results.json."""
    code, stdout, _ = run_cli(["report", str(run_dir / "results.sqlite")])
    assert code == 0
    assert "architecture vectors: 62/62 pass" in stdout.splitlines()
    code, stdout, _ = run_cli(["report", str(run_dir / "results.sqlite"), "--json"])
    assert code == 0
    assert stdout == (run_dir / "results.json").read_text()


@pytest.mark.slow
def test_compare_two_stores(run_dir: Path, tmp_path: Path) -> None:
    """--compare finds no difference between a store and its copy, and names a changed metric."""
    a = run_dir / "results.sqlite"
    b = tmp_path / "b.sqlite"
    shutil.copy(a, b)
    code, stdout, _ = run_cli(["report", "--compare", str(a), str(b), "--json"])
    assert code == 0
    same = json.loads(stdout)
    assert same["changed"] == [] and same["only_in_a"] == [] and same["only_in_b"] == []
    assert same["unchanged_metrics"] > 0
    conn = sqlite3.connect(b)
    conn.execute(
        'UPDATE results SET counters = \'{"vectors":62,"vectors_failed":1}\' '
        "WHERE experiment = 'main/arch'"
    )
    conn.execute(
        "DELETE FROM results WHERE experiment = 'main/boot' AND rowid = "
        "(SELECT MIN(rowid) FROM results WHERE experiment = 'main/boot')"
    )
    conn.commit()
    conn.close()
    page = tmp_path / "cmp.html"
    code, stdout, _ = run_cli(["report", "--compare", str(a), str(b), "--html", str(page)])
    assert code == 0
    lines = stdout.splitlines()
    assert lines[0] == f"comparing {a} (A) with {b} (B)"
    assert "  main/arch architecture vectors seed 0: counters.vectors_failed: 0 -> 1" in lines
    assert any(ln.startswith("  only in A: main/boot ") for ln in lines)
    assert lines[-1] == f"wrote {page}"
    html = page.read_text()
    assert "counters.vectors_failed" in html and "<script" not in html


# --- bad input --------------------------------------------------------------------------------


def test_report_of_a_foreign_file_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    """A store that is not one is named with the problem; --html OUT is not created."""
    bad = tmp_path / "bad.sqlite"
    bad.write_text("hello\n" * 100)
    out = tmp_path / "out.html"
    code, stdout, err = run_cli(["report", str(bad), "--html", str(out)])
    assert (code, stdout) == (2, "")
    assert err.startswith(f"{PREFIX}{bad}: not a kpkeys-sim results store: not an SQLite database")
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.sqlite"]
    code, _, err = run_cli(["report", "--compare", str(bad), str(bad)])
    assert code == 2 and err.startswith(f"{PREFIX}{bad}: not a kpkeys-sim results store")


def test_report_needs_a_store_or_compare(tmp_path: Path) -> None:
    """Without DB or --compare, and with both, the command says what it needs."""
    code, _, err = run_cli(["report"])
    assert (code, err) == (
        2,
        f"{PREFIX}give a results store DB (kpkeys-sim report DB --html OUT) or --compare A B\n",
    )
    code, _, err = run_cli(["report", "x.sqlite", "--compare", "a", "b"])
    assert (code, err) == (2, f"{PREFIX}give either DB or --compare A B, not both\n")
    code, _, err = run_cli(["report", str(tmp_path / "none.sqlite")])
    assert (code, err) == (2, f"{PREFIX}{tmp_path / 'none.sqlite'}: no such results store\n")


def test_report_of_a_sweep_store_lists_its_rows(tmp_path: Path) -> None:
    """A store written by a sweep renders, with its rows in 'Other results'."""
    spec = tmp_path / "s.toml"
    spec.write_text('experiment = "arch-vectors"\n[axes]\nseed = [0, 1]\n')
    assert run_cli(["sweep", str(spec), "--jobs", "1"])[0] == 0
    out = tmp_path / "s.html"
    code, _, _ = run_cli(["report", str(tmp_path / "s.sqlite"), "--html", str(out)])
    assert code == 0
    dom = parse(out.read_text())
    assert "2 rows not written by the main job" in dom.sections["other"]["text"]
    assert "sweep/arch-vectors" in dom.sections["other"]["text"]
    assert "not in this results store" in dom.sections["kunit"]["text"]
    code, stdout, _ = run_cli(["report", str(tmp_path / "s.sqlite")])
    assert (code, stdout) == (0, "sweep/arch-vectors: 2 rows (2 ok, 0 failed)\n")


# --- plots ------------------------------------------------------------------------------------


def _figures() -> list[str]:
    return [
        plots.grouped_hbar_svg(
            "g", "Overhead", ["a", "b"], {"x": [1.0, -2.5], "y": [3.0, 0.0]}, "%"
        ),
        plots.stacked_hbar_svg(
            "s", "Split", ["a", "b"], {"isb": [1.0, 2.0], "tlbi": [0.5, -1.0]}, "%"
        ),
        plots.heatmap_svg(
            "h",
            "Matrix",
            ["S1", "S2"],
            ["none", "kpkeys"],
            [[1.0, 0.0], [0.5, 0.1]],
            [["S10", "P10"], ["S5 F5", "S1"]],
            "rate",
        ),
        plots.timeseries_svg(
            "t",
            "PBA",
            [1, 5, 9],
            {"cached": [0.0, 512.0, 480.0]},
            {"refill": [1, 5], "shrink": [9]},
            "op",
            "pages",
        ),
    ]


def test_plots_are_deterministic_inline_svg() -> None:
    """The same data gives byte-identical SVG: no dates, no random ids, scalable, titled."""
    first, second = _figures(), _figures()
    assert first == second
    ids: list[str] = []
    for name, svg in zip("gsht", first, strict=True):
        assert svg.startswith("<svg ") and svg.rstrip().endswith("</svg>")
        head = svg[: svg.index(">")]
        assert 'viewBox="' in head and " width=" not in head and " height=" not in head
        assert 'class="fig"' in head
        assert "<metadata" not in svg and "<?xml" not in svg and "DOCTYPE" not in svg
        assert f'<title id="fig-{name}-title">' in svg
        mine = re.findall(r'\sid="([^"]+)"', svg)
        assert all(i.startswith(f"{name}-") or i == f"fig-{name}-title" for i in mine)
        ids.extend(mine)
        for ref in re.findall(r'(?:href="#|url\(#)([^")]+)', svg):
            assert ref in mine, ref
    assert len(ids) == len(set(ids)), "two figures of one page share an id"


def test_plot_text_stays_text() -> None:
    """Labels are SVG text (svg.fonttype none), so they are selectable and small."""
    svg = plots.grouped_hbar_svg("g", "Overhead", ["micromm/fork h:0"], {"x": [1.0]}, "%")
    assert ">micromm/fork h:0</text>" in svg
