"""A report as a list of blocks, written out as markdown (figures beside it) or as one self-contained HTML file.

Blocks are plain tuples, so the sections read as the report does:
("h", level, text), ("p", text), ("ul", [items]), ("table", header, rows), ("img", path, caption),
("code", text). Inline text may hold `code` and **bold**; HTML gets both, escaped.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from ..tables import markdown_table

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.55em; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f4f4f4; padding: 0 0.2em; } pre { background: #f4f4f4; padding: 0.8em; overflow-x: auto; }
figure { margin: 1em 0; } figure img { max-width: 100%; } figcaption { font-size: 0.88em; color: #555; }
.wide { overflow-x: auto; }
h1 { border-bottom: 2px solid #ddd; } h2 { border-bottom: 1px solid #eee; margin-top: 1.6em; }
"""


def _md_cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[tuple], root: Path) -> str:
    """Markdown; image paths relative to `root` (the report's directory)."""
    out = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out.append("#" * b[1] + " " + b[2])
        elif kind == "p":
            out.append(b[1])
        elif kind == "ul":
            out.append("\n".join(f"- {x}" for x in b[1]))
        elif kind == "table":
            out.append(markdown_table([_md_cell(x) for x in b[1]], [[_md_cell(x) for x in r] for r in b[2]]))
        elif kind == "img":
            out.append(f"![{b[2]}]({Path(b[1]).relative_to(root).as_posix()})\n\n_{b[2]}_")
        elif kind == "code":
            out.append("```\n" + b[1].rstrip("\n") + "\n```")
        else:
            raise ValueError(f"unknown block {kind!r}")
    return "\n\n".join(out) + "\n"


_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")  # as markdown: a run of n backticks closes on n


def _inline(text: str) -> str:
    """Escaped HTML of one line of inline markdown: code spans (any fence length) and **bold** outside them."""
    out, at = [], 0
    text = str(text)
    for m in _CODE_SPAN.finditer(text):
        out.append(_bold(html.escape(text[at:m.start()], quote=False)))
        code = m.group(2)
        if code[0] == code[-1] == " " and code.strip():  # one space each side is padding, as in markdown
            code = code[1:-1]
        out.append(f"<code>{html.escape(code, quote=False)}</code>")
        at = m.end()
    return "".join(out) + _bold(html.escape(text[at:], quote=False))


def _bold(text: str) -> str:
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def to_html(blocks: list[tuple], title: str) -> str:
    """One HTML file with every image embedded as a base64 data URI: no external files, links or scripts."""
    out = []
    for b in blocks:
        kind = b[0]
        if kind == "h":
            out.append(f"<h{b[1]}>{_inline(b[2])}</h{b[1]}>")
        elif kind == "p":
            out.append(f"<p>{_inline(b[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in b[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{_inline(x)}</th>" for x in b[1])
            body = "".join("<tr>" + "".join(f"<td>{_inline(x)}</td>" for x in r) + "</tr>" for r in b[2])
            out.append(f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
        elif kind == "img":
            data = base64.b64encode(Path(b[1]).read_bytes()).decode("ascii")
            cap = _inline(b[2])
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b[2])}">'
                       f"<figcaption>{cap}</figcaption></figure>")  # fmt: skip
        elif kind == "code":
            text = html.escape(b[1].rstrip("\n"), quote=False)
            pre = f"<pre>{text}</pre>"
            out.append(f"<details><summary>show ({b[1].count(chr(10)) + 1} lines)</summary>{pre}</details>"
                       if b[1].count("\n") > 25 else pre)  # fmt: skip
        else:
            raise ValueError(f"unknown block {kind!r}")
    body = "\n".join(out)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")  # fmt: skip
