"""The report's text primitives, which know nothing of a Report: how numbers and names are written,
the Cell and Table a table is made of, and how a Table is written as Markdown or as a LaTeX table."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from .load import DATASET_SHORT, TRANSFER, short_condition

NONE = "\u2013"  # shown where a baseline has no cell at all (not part of the suite)


# -- numbers -----------------------------------------------------------------------------------------

def pct(value: float) -> str:
    return f"{100 * value:.2f}"


def rank_text(value: float) -> str:
    return NONE if math.isnan(value) else f"{value:.2f}".rstrip("0").rstrip(".")


def hours_text(value: float) -> str:
    """Three significant figures without an exponent: smoke runs take seconds, paper runs days."""
    if value == 0 or math.isnan(value):
        return "0"
    if value < 0.001:
        return "<0.001"
    decimals = max(0, 2 - math.floor(math.log10(value)))
    return f"{value:.{decimals}f}"


@dataclass(frozen=True)
class ParamsUnit:
    """How a table writes parameter counts: divided by `divisor`, to `decimals` places."""

    divisor: float
    word: str  # for captions: "millions"
    symbol: str  # for headers: "M"
    decimals: int


MILLIONS = ParamsUnit(1e6, "millions", "M", 2)  # as the paper writes them: 3.41
THOUSANDS = ParamsUnit(1e3, "thousands", "k", 1)


def params_unit(values: Sequence[float]) -> ParamsUnit:
    """Millions, unless every count is below a million: then thousands, where millions would read
    0.01 for every small network (the demo's have 8,000 to 13,000 parameters)."""
    known = [v for v in values if not math.isnan(v)]
    return THOUSANDS if known and max(known) < 1e6 else MILLIONS


def params_text(value: float, unit: ParamsUnit = MILLIONS) -> str:
    return NONE if math.isnan(value) else f"{value / unit.divisor:.{unit.decimals}f}"


def p_text(value: float) -> str:
    if math.isnan(value):
        return NONE
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def tex_hours(value: float) -> str:
    """Hours for a paper: two significant digits (whole hours from 10 on), `$<$0.001` below 0.001."""
    if value == 0 or math.isnan(value):
        return "0"
    if value < 0.001:
        return "$<$0.001"
    rounded = float(f"{value:.2g}")  # first, so that 0.0999 reads 0.10, not 0.100
    if rounded >= 10:
        return f"{value:.0f}"
    return f"{rounded:.{max(0, 1 - math.floor(math.log10(rounded)))}f}"


def tex_p(value: float) -> str:
    if math.isnan(value):
        return "--"
    return f"{value:.3f}" if value >= 0.001 else "$<$0.001"


def tex_number(value: float, decimals: int = 2) -> str:
    """A signed number with a typographic minus."""
    if math.isnan(value):
        return "--"
    text = f"{value:.{decimals}f}"
    return f"$-${text[1:]}" if text.startswith("-") else text


# -- table values ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    value: str
    note: str = ""
    bold: bool = False


@dataclass(frozen=True)
class Table:
    """A table for one output: Markdown (plain text, escaped when written) or LaTeX (`latex`: caption,
    note, header and cells are LaTeX already; the caption one sentence, the details in `note`, set
    below the table)."""

    name: str
    caption: str
    header: list[str]
    rows: list[list[Cell]]
    align: str = ""  # one of l/r per column; default: first left, the rest right
    note: str = ""
    latex: bool = False

    @property
    def alignment(self) -> str:
        return self.align or "l" + "r" * (len(self.header) - 1)


# -- names for a paper --------------------------------------------------------------------------------

# How the methods are written in papers; a name not listed is written as it is (escaped).
METHOD_NAMES_TEX = {
    "darts": "DARTS", "darts-minus": "DARTS-", "beta-darts": r"$\beta$-DARTS", "pcdarts": "PC-DARTS",
    "gaea-erm": "GAEA (ERM)", "gaea-bilevel": "GAEA (bilevel)", "spdarts": "SP-DARTS",
    "ss-darts": "SS-DARTS", "pcd-darts": "PCD-DARTS", "edd-darts": "EDD-DARTS", "dropnas": "DropNAS",
    "drnas": "DrNAS", "milenas": "MiLeNAS", "surgenas": "SurgeNAS", "gdas": "GDAS", "random": "Random",
}
DATASET_NAMES_TEX = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN"}


def tex_method(name: str) -> str:
    return METHOD_NAMES_TEX.get(name) or tex_escape(name)


def tex_dataset(dataset: str) -> str:
    """`CIFAR-10`; a transfer label `cifar10>svhn` as `CIFAR-10$\\to$SVHN`."""
    return r"$\to$".join(DATASET_NAMES_TEX.get(d) or tex_escape(d) for d in dataset.split(TRANSFER))


def tex_condition(condition: str) -> str:
    """`C10 base`, `C10 base pt`, `C10$\\to$SVHN base`."""
    dataset, policy = condition.split("/", 1)
    short = r"$\to$".join(tex_escape(DATASET_SHORT.get(d, d)) for d in dataset.split(TRANSFER))
    return f"{short} {tex_escape(policy.replace('/', ' '))}"


@dataclass(frozen=True)
class Style:
    """How names and numbers are written in one output: Markdown (plain) or LaTeX."""

    tex: bool = False

    @property
    def none(self) -> str:
        return "--" if self.tex else NONE

    def text(self, value: str) -> str:
        return tex_escape(value) if self.tex else value

    def method(self, name: str) -> str:
        return tex_method(name) if self.tex else name

    def condition(self, condition: str) -> str:
        return tex_condition(condition) if self.tex else short_condition(condition)

    def hours(self, value: float) -> str:
        return tex_hours(value) if self.tex else hours_text(value)

    def p(self, value: float) -> str:
        return tex_p(value) if self.tex else p_text(value)

    def number(self, value: float, decimals: int = 2) -> str:
        if not self.tex:
            return NONE if math.isnan(value) else f"{value:.{decimals}f}"
        return tex_number(value, decimals)


MD, TEX = Style(False), Style(True)


# -- Markdown ----------------------------------------------------------------------------------------

def md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def md_cell(cell: Cell) -> str:
    value = f"**{cell.value}**" if cell.bold else cell.value
    return md_escape(value + (f" {cell.note}" if cell.note else ""))


def md_table(table: Table) -> str:
    lines = ["| " + " | ".join(md_escape(h) for h in table.header) + " |",
             "|" + "|".join("--:" if a == "r" else "---" for a in table.alignment) + "|"]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)



# -- LaTeX -------------------------------------------------------------------------------------------

TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
               "<": r"$<$", ">": r"$>$", "|": r"$|$", '"': "''",
               "\u00b1": r"$\pm$", "\u2013": "--", "\u2014": "---", "\u03c4": r"$\tau$",
               "\u00d7": r"$\times$", "\u03b1": r"$\alpha$", "\u03b2": r"$\beta$", "\u2192": r"$\to$",
               "\u2018": "`", "\u2019": "'", "\u201c": "``", "\u201d": "''", "\u2026": r"\ldots{}"}


def tex_escape(text: str) -> str:
    """Text for LaTeX's text mode that any engine compiles: special characters escaped, other
    non-ASCII characters as their closest ASCII letters (`é` -> `e`), or `?`."""
    out = []
    for ch in text:
        if ch in TEX_SPECIAL:
            out.append(TEX_SPECIAL[ch])
        elif ord(ch) < 128:
            out.append(ch)
        else:
            out.append(unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode() or "?")
    return "".join(out)


def tex_cell(cell: Cell, latex: bool = False) -> str:
    value = cell.value if latex else tex_escape(cell.value)
    if cell.bold:
        value = rf"\textbf{{{value}}}"
    note = cell.note if latex else tex_escape(cell.note)
    return value + (r" {\scriptsize " + note + "}" if note else "")


COLUMN_INCHES = 3.3  # a two-column paper's column (ICML, NeurIPS, ACL: 3.25 in to 3.3 in)


def _visible(tex: str) -> str:
    """Roughly the characters a LaTeX cell prints: commands and math markup dropped."""
    tex = re.sub(r"\\(textbf|scriptsize|textasciitilde|textasciicircum|ldots)\b|[{}$]", "", tex)
    return re.sub(r"\\[a-zA-Z]+", "x", tex).replace("\\", "")


def tex_width(table: Table) -> float:
    """An estimate of the table's natural width in inches at \\footnotesize (average glyph 0.5 em of
    8 pt, notes at two thirds of that, 12 pt between columns)."""
    texts = [[h for h in table.header]] + [[tex_cell(c, table.latex) for c in row] for row in table.rows]
    if not table.latex:
        texts[0] = [tex_escape(h) for h in table.header]
    widths = [max(len(_visible(row[j])) for row in texts) for j in range(len(table.header))]
    return sum(widths) * 4 / 72 + len(widths) * 12 / 72


def tex_table(table: Table) -> str:
    """A complete table environment (booktabs): a one-sentence caption above, the table, and its note
    below in small type. A table wider than a column spans both (`table*`); one still wider than its
    space is shrunk to fit (only then: a narrow table keeps its type size)."""
    wide = tex_width(table) > COLUMN_INCHES
    env = "table*" if wide else "table"
    text = (lambda t: t) if table.latex else tex_escape
    tabular = [rf"\begin{{tabular}}{{{table.alignment}}}", r"\toprule",
               " & ".join(text(h) for h in table.header) + r" \\", r"\midrule"]
    tabular += [" & ".join(tex_cell(c, table.latex) for c in row) + r" \\" for row in table.rows]
    tabular += [r"\bottomrule", r"\end{tabular}"]
    # Box 0 is TeX's scratch box, local to the float's group: no preamble definition needed.
    body = ([r"\sbox0{%"] + tabular + ["}%", r"\ifdim\wd0>\linewidth\resizebox{\linewidth}{!}{\usebox0}"
                                             r"\else\usebox0\fi"])
    note = ([r"\par\smallskip", r"{\scriptsize\raggedright " + text(table.note) + r"\par}"]
            if table.note else [])
    lines = [rf"\begin{{{env}}}[t]", r"\centering", r"\footnotesize",
             rf"\caption{{{text(table.caption)}}}", rf"\label{{tab:lhdbench-{table.name}}}",
             *body, *note, rf"\end{{{env}}}"]
    return "\n".join(lines) + "\n"
