"""The LaTeX tables are paper-ready: methods by their published names, conditions as `C10 base`, short
captions with the details in a note, n stated once, rounded numbers, math-mode symbols and LaTeX
quotes; and every table compiles, each wrapped in a minimal document, with whichever TeX engine is
installed (pdflatex, lualatex or tectonic; skipped when there is none. Debian/Ubuntu: `apt-get install
texlive-latex-base texlive-latex-recommended`, which hold graphicx and booktabs)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report import FAILED, MISSING, make_store, record
from test_report_figures import synthetic_store

from lhdbench.report import build_report, write_report
from lhdbench.report.text import METHOD_NAMES_TEX, tex_condition, tex_escape, tex_hours, tex_method, tex_p

DEMO = Path(__file__).resolve().parents[1] / "results" / "demo"
ENGINES = ("pdflatex", "lualatex", "tectonic")
DOCUMENT = r"""\documentclass[twocolumn]{article}
\usepackage{booktabs}
\usepackage{graphicx}
\begin{document}
\input{%s}
\end{document}
"""


def tex_engine() -> str | None:
    return next((e for e in ENGINES if shutil.which(e)), None)


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, Path]:
    """Every .tex table of three small reports: hand-made cells with failed and missing seeds and
    awkward names, an LHD-scale synthetic store (12 methods, tiny p-values), and one with perturbation
    and transfer conditions."""
    root = tmp_path_factory.mktemp("latex")
    cells = {("darts", "cifar10", "base"): [0.90, 0.92], ("darts", "cifar10", "1m"): [0.91, FAILED],
             ("beta-darts", "cifar10", "base"): [0.85, 0.86],
             ("beta-darts", "cifar10", "1m"): [MISSING, MISSING],
             ("pc_darts", "cifar10", "base"): [0.88, 0.80], ("pc_darts", "cifar10", "1m"): [0.93, 0.94],
             ("new&improved", "cifar10", "base"): [0.50, 0.60]}
    store = make_store(root / "small", cells)
    store.write_record(record("s-darts-cifar10-1", "search", "darts", "cifar10", 1, status="failed").update(
        reason="loss 100% non-finite at step_3 & <lr> \u2192 caf\u00e9 \"quoted\" {x} ~ ^ #1 $5"))
    synthetic_store(root / "full", epochs=2)
    synthetic_store(root / "extended", methods=("darts", "gdas", "random"), datasets=("cifar10",),
                    policies=("base", "4out"), epochs=2, transfer={"cifar10": ["svhn"]}, perturbation=True)
    out = {}
    for name in ("small", "full", "extended"):
        for path in write_report(build_report(root / name), root / f"{name}-report", ("tex",)):
            out[f"{name}/{path.stem}"] = path
    return out


def text(tables: dict[str, Path], key: str) -> str:
    return tables[key].read_text()


def test_method_display_names_and_escaping():
    assert tex_method("darts-minus") == "DARTS-" and tex_method("beta-darts") == r"$\beta$-DARTS"
    assert tex_method("gaea-erm") == "GAEA (ERM)" and tex_method("pcdarts") == "PC-DARTS"
    assert tex_method("pc_darts") == r"pc\_darts" and tex_method("new&improved") == r"new\&improved"
    assert set(METHOD_NAMES_TEX) >= {"darts", "darts-minus", "beta-darts", "pcdarts", "gaea-erm", "spdarts",
                                     "ss-darts", "pcd-darts", "edd-darts", "dropnas", "drnas", "milenas",
                                     "surgenas", "gdas", "random"}
    assert tex_condition("cifar10/base") == "C10 base"
    assert tex_condition("cifar10>svhn/1m") == r"C10$\to$SVHN 1m"
    assert tex_condition("cifar100/base/pt") == "C100 base pt"
    assert tex_escape('a<b "c"') == "a$<$b ''c''" and tex_escape("caf\u00e9") == "cafe"


@pytest.mark.parametrize("hours,expected", [(0.0, "0"), (4e-6, "$<$0.001"), (0.00132, "0.0013"),
                                            (0.0999, "0.10"), (2.54, "2.5"), (37.5, "38"), (1234.5, "1234")])
def test_hours_two_significant_digits(hours, expected):
    assert tex_hours(hours) == expected


def test_p_values_below_a_thousandth_in_math_mode(tables):
    assert tex_p(1e-7) == "$<$0.001" and tex_p(0.0412) == "0.041"
    assert r"$p$-value & $<$0.001 \\" in text(tables, "full/friedman")


def test_names_conditions_and_a_common_n_stated_once(tables):
    small = text(tables, "small/accuracy_cifar10")
    assert r"$\beta$-DARTS & " in small and r"pc\_darts" in small and r"new\&improved" in small
    assert "(n=2)" not in small and "$n = 2$ seeds per cell" in small
    assert r"91.00 {\scriptsize ($n$=1; failed 1/2)}" in small  # n shown only where it differs
    assert r"\textbf{93.50 $\pm$ 0.71}" in small
    assert "``failed $k$/$m$''" in small and "'failed" not in small
    full = text(tables, "full/leaderboard")
    assert "C10 base & C10 1m" in full and "SVHN 4out" in full and "GAEA (bilevel)" in full
    extended = text(tables, "extended/accuracy_cifar10-to-svhn")
    assert r"\caption{CIFAR-10$\to$SVHN:" in extended
    assert r"C10$\to$SVHN base pt" in text(tables, "extended/leaderboard")


def test_short_captions_with_the_details_in_a_note(tables):
    for key, path in tables.items():
        tex = path.read_text()
        caption = re.search(r"\\caption\{(.*)\}\n", tex).group(1)
        assert caption.endswith(".") and caption.count(". ") == 0 and len(caption) < 120, (key, caption)
        assert r"\par\smallskip" in tex
        assert tex.index(r"\end{tabular}") < tex.index(r"\scriptsize\raggedright")


def test_numbers_are_rounded_for_a_paper(tables):
    for key, path in tables.items():
        assert not re.search(r"\d\.\d{5,}", path.read_text()), key


def test_failure_reasons_are_escaped(tables):
    tex = text(tables, "small/failed")
    assert (r"loss 100\% non-finite at step\_3 \& $<$lr$>$ $\to$ cafe ''quoted'' \{x\} \textasciitilde{} "
            r"\textasciicircum{} \#1 \$5") in tex


def _compile(engine: str, table: Path, folder: Path) -> tuple[int, str]:
    """(exit status, output and log) of compiling the table in a minimal two-column document."""
    document = folder / f"{table.parent.parent.name}-{table.stem}.tex"
    document.write_text(DOCUMENT % table.resolve().as_posix())
    if engine == "tectonic":
        command = [engine, "--keep-logs", "--outdir", str(folder), str(document)]
    else:
        command = [engine, "-interaction=nonstopmode", "-halt-on-error", f"-output-directory={folder}",
                   str(document)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=folder)
    log = document.with_suffix(".log")
    return result.returncode, result.stdout + result.stderr + (log.read_text(errors="replace")
                                                               if log.is_file() else "")


def test_every_table_compiles(tables, tmp_path):
    engine = tex_engine()
    if engine is None:
        pytest.skip("no TeX engine installed (pdflatex, lualatex or tectonic); on Debian/Ubuntu "
                    "`apt-get install texlive-latex-base texlive-latex-recommended` provides pdflatex, "
                    "graphicx and booktabs")
    paths = list(tables.values())
    if (DEMO / "tables").is_dir():
        paths += sorted((DEMO / "tables").glob("*.tex"))
    failures = []
    for table in paths:
        status, log = _compile(engine, table, tmp_path)
        if status != 0 or "Missing character" in log:
            lines = [line for line in log.splitlines() if line.startswith("!") or "Missing" in line]
            failures.append(f"{table}: {lines[:3] or log[-300:]}")
    assert failures == []
