"""Rendering of analysis reports: number formats, markdown tables, CSV, and a small
markdown-to-HTML converter that embeds images as base64 data URIs (one self-contained file)."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import re
from collections.abc import Iterable, Sequence

from flowpwm.fileio import csv_cell


def fmt_number(x, digits=1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def fmt_general(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.3g}"


def fmt_ci(point, ci, digits=1) -> str:
    lo, hi = ci
    if math.isnan(lo):
        return fmt_number(point, digits)
    return f"{fmt_number(point, digits)} [{fmt_number(lo, digits)}, {fmt_number(hi, digits)}]"


def md_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    def cell(v):
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """Markdown inline spans -> HTML: `code`, **bold**, *italic*; the rest escaped."""
    out = []
    for i, part in enumerate(re.split(r"(`[^`]*`)", text)):
        if i % 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        part = html.escape(part, quote=False)
        part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part)
        part = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", part)
        out.append(part)
    return "".join(out)


def _split_row(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|") if line.strip() != "|" else "")
    return [c.strip().replace("\\|", "|") for c in cells]


IMAGE_LINE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)$")


def markdown_to_html(md: str, images: dict[str, bytes] | None = None, title: str = "Run comparison") -> str:
    """A self-contained HTML page from the markdown this module writes (headings, paragraphs,
    pipe tables, lists, block quotes, fenced code, images on their own line). Images found in
    `images` (name -> PNG bytes) are embedded as data URIs; others are shown as their alt text."""
    images = images or {}
    body, para, lines, i = [], [], md.splitlines(), 0

    def flush():
        if para:
            body.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    while i < len(lines):
        line = lines[i].rstrip()
        stripped = line.strip()
        if not stripped:
            flush()
            i += 1
        elif stripped.startswith("```"):
            flush()
            block, i = [], i + 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            body.append(f"<pre><code>{html.escape(chr(10).join(block))}</code></pre>")
            i += 1
        elif m := re.match(r"^(#{1,6})\s+(.*)$", stripped):
            flush()
            level = len(m.group(1))
            body.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
            i += 1
        elif m := IMAGE_LINE.match(stripped):
            flush()
            src, alt = m.group("src"), m.group("alt")
            if src in images:
                data = base64.b64encode(images[src]).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{_inline(alt)}</figcaption></figure>")
            else:
                body.append(f"<p><em>[image: {_inline(alt or src)}]</em></p>")
            i += 1
        elif stripped.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_split_row(lines[i]))
                i += 1
            is_rule = len(rows) > 1 and all(re.fullmatch(r":?-+:?", c) for c in rows[1] if c)
            head, rest = (rows[0], rows[2:]) if is_rule else (None, rows)
            out = ["<table>"]
            if head is not None:
                out.append("<thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr></thead>")
            out.append("<tbody>" + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>"
                                           for r in rest) + "</tbody></table>")
            body.append("".join(out))
        elif stripped.startswith("> "):
            flush()
            quote = []
            while i < len(lines) and lines[i].strip().startswith(">"):
                quote.append(lines[i].strip()[1:].strip())
                i += 1
            body.append(f"<blockquote>{_inline(' '.join(quote))}</blockquote>")
        elif re.match(r"^[-*]\s+", stripped):
            flush()
            items = []
            while i < len(lines) and re.match(r"^\s*[-*]\s+", lines[i]):
                items.append(re.sub(r"^\s*[-*]\s+", "", lines[i]).strip())
                i += 1
            body.append("<ul>" + "".join(f"<li>{_inline(t)}</li>" for t in items) + "</ul>")
        else:
            para.append(stripped)
            i += 1
    flush()
    style = ("body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #bbb;padding:.3em .6em;"
             "text-align:left}th{background:#f0f0f0}img{max-width:100%}figure{margin:1em 0}"
             "figcaption{color:#555;font-size:.9em}blockquote{background:#fff4e0;border-left:4px solid #f0a000;"
             "margin:1em 0;padding:.5em 1em}code{background:#f4f4f4;padding:0 .2em}pre{background:#f4f4f4;padding:.5em}")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{style}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for row in rows:
        w.writerow([csv_cell(v) for v in row])
    return buf.getvalue()
