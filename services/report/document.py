"""A small document model (headings, paragraphs, bullets, tables, images) and its two renderings:
Markdown linking the plot files beside it, and a self-contained HTML page (inline CSS, the same
plots as SVG data URIs, nothing fetched)."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from dataclasses import dataclass

from ..results.layout import figure_link


# The report as a list of blocks, rendered the same way to Markdown and to HTML.
@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    bold_rows: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Image:
    name: str  # key into Report.figures; the file figure_link(name) beside report.md
    caption: str


Block = Heading | Paragraph | Bullets | Table | Image


def _markdown_table(table: Table) -> list[str]:
    def cell(text: str, bold: bool) -> str:
        text = text.replace("|", "\\|")
        return f"**{text}**" if bold and text else text

    lines = ["| " + " | ".join(table.header) + " |", "|" + "|".join(" --- " for _ in table.header) + "|"]
    for index, row in enumerate(table.rows):
        lines.append("| " + " | ".join(cell(text, index in table.bold_rows) for text in row) + " |")
    return lines


def render_markdown(blocks: Iterable[Block]) -> str:
    """Markdown text of the blocks; images link their files beside report.md (relative paths)."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Bullets):
            if block.items:
                lines += [*(f"- {item}" for item in block.items), ""]
        elif isinstance(block, Table):
            lines += [*_markdown_table(block), ""]
        elif isinstance(block, Image):
            alt = block.caption.replace("[", "(").replace("]", ")")
            lines += [f"![{alt}]({figure_link(block.name)})", "", f"*{block.caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 80em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr.cheapest td { font-weight: bold; background: #eef8ee; }
figure { margin: 1.5em 0; }
figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; }
"""


def render_html(blocks: Iterable[Block], figures: dict[str, str], title: str) -> str:
    """A self-contained HTML page: inline CSS, plots as base64 SVG data URIs, nothing fetched."""
    escape = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            if block.items:
                parts.append("<ul>" + "".join(f"<li>{escape(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            parts.append("<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in block.header))
            parts.append("</tr></thead><tbody>")
            for index, row in enumerate(block.rows):
                css = ' class="cheapest"' if index in block.bold_rows else ""
                parts.append(f"<tr{css}>" + "".join(f"<td>{escape(text)}</td>" for text in row) + "</tr>")
            parts.append("</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode(figures[block.name].encode()).decode("ascii")
            parts.append(
                f'<figure><img alt="{escape(block.caption)}" src="data:image/svg+xml;base64,{data}">'
                f"<figcaption>{escape(block.caption)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
