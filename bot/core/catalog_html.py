"""The catalog as one self-contained web page, for finding an image.

``wishbot catalog --html FILE`` writes it: no external assets (inline CSS and
script; a Content-Security-Policy forbids anything else), so it works opened
from a file and served by GitLab or GitHub Pages. A search box filters the
paths as you type (``?q=words`` in the address fills it in), each path has a
copy button, and paths removed from the wishlist show the date gc deletes
them. Every text from the publisher goes through
:func:`~bot.core.text.escape_html`; the output is deterministic.
"""

from __future__ import annotations

from datetime import datetime

from bot.core.catalog import CatalogEntry, canonical_state, catalog_entries
from bot.core.lifecycle import deletion_date, retiring, serving
from bot.core.model import CurrentState
from bot.core.render import iso
from bot.core.text import escape_html, human_size, plural, short_digest

CATALOG_HTML = "catalog.html"

_CSS = """
:root{color-scheme:light dark;--fg:#1f2328;--muted:#59636e;--line:#d1d9e0;--bg:#fff;
--soft:#f6f8fa;--accent:#0969da;--warn:#9a6700}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9198a1;--line:#3d444d;
--bg:#0d1117;--soft:#151b23;--accent:#4493f8;--warn:#d29922}}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;
color:var(--fg);background:var(--bg)}
main{max-width:1200px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:24px;margin:8px 0 4px}h2{font-size:18px;margin:32px 0 8px}
p{margin:4px 0 12px;color:var(--muted)}
code{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
overflow-wrap:anywhere}
.search{position:sticky;top:0;background:var(--bg);padding:8px 0;display:flex;gap:12px;
align-items:center;border-bottom:1px solid var(--line);z-index:1}
.search input{flex:1;min-width:0;font-size:16px;padding:6px 10px;border:1px solid var(--line);
border-radius:6px;background:var(--soft);color:var(--fg)}
#count{color:var(--muted);white-space:nowrap}
table{width:100%;border-collapse:collapse;table-layout:fixed;margin-top:8px}
th,td{border-bottom:1px solid var(--line);padding:6px 8px;text-align:left;vertical-align:top;
overflow-wrap:anywhere}
th{font-weight:600;background:var(--soft)}
td.num,th.num{text-align:right}
td.date{white-space:nowrap}
.path{display:flex;gap:8px;align-items:flex-start}
.path code{flex:1;min-width:0}
button{font:12px sans-serif;padding:2px 8px;border:1px solid var(--line);border-radius:6px;
background:var(--soft);color:var(--fg);cursor:pointer;flex:none}
button:hover{border-color:var(--accent)}
.leaving{color:var(--warn);font-size:12px}
details{font-size:12px;color:var(--muted);margin-top:2px}
details dl{margin:4px 0;display:grid;grid-template-columns:max-content 1fr;gap:2px 8px}
details dd{margin:0}
.empty{padding:24px;text-align:center;color:var(--muted)}
[hidden]{display:none!important}
"""

_SCRIPT = """
(function () {
  var box = document.getElementById("q");
  var rows = Array.prototype.slice.call(document.querySelectorAll("tr[data-search]"));
  var count = document.getElementById("count");
  var empty = document.getElementById("empty");
  function filter() {
    var words = box.value.toLowerCase().split(/\\s+/).filter(Boolean);
    var shown = 0;
    rows.forEach(function (row) {
      var text = row.getAttribute("data-search");
      var match = words.every(function (word) { return text.indexOf(word) >= 0; });
      row.hidden = !match;
      if (match) { shown += 1; }
    });
    count.textContent = shown + " of " + rows.length + (rows.length === 1 ? " path" : " paths");
    empty.hidden = shown > 0;
  }
  var query = new URLSearchParams(window.location.search).get("q");
  if (query) { box.value = query; }
  box.addEventListener("input", filter);
  filter();
  function copied(button) {
    button.textContent = "Copied";
    setTimeout(function () { button.textContent = "Copy"; }, 1500);
  }
  function fallback(text, button) {
    var area = document.createElement("textarea");
    area.value = text;
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); copied(button); } catch (e) { /* nothing to do */ }
    area.remove();
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button) { return; }
    var text = button.getAttribute("data-copy");
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { copied(button); },
        function () { fallback(text, button); });
    } else {
      fallback(text, button);
    }
  });
})();
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _search_text(entry: CatalogEntry) -> str:
    words = [entry.cvmfs_path, entry.tag, *entry.platforms]
    if entry.deletion is not None:
        words.append("removed")
    return " ".join(words).lower()


def _details(entry: CatalogEntry) -> str:
    items = []
    for image in entry.images:
        items.append(
            f"<dt>{escape_html(image.platform)}</dt><dd>manifest "
            f"<code>{escape_html(image.manifest_digest)}</code><br>image ID "
            f"<code>{escape_html(image.image_id)}</code>"
            + (
                f"<br>thin image <code>{escape_html(image.thin_image)}</code>"
                if image.thin_image
                else ""
            )
            + "</dd>"
        )
    return f"<details><summary>digests</summary><dl>{''.join(items)}</dl></details>"


def _row(entry: CatalogEntry) -> str:
    path = escape_html(entry.cvmfs_path)
    leaving = ""
    if entry.deletion is not None:
        leaving = (
            f'<div class="leaving">⏳ removed from the wishlist, deleted after '
            f"{entry.deletion:%Y-%m-%d}</div>"
        )
    return (
        f'<tr data-search="{escape_html(_search_text(entry))}">'
        f'<td><div class="path"><code>{path.replace("/", "/<wbr>")}</code>'
        f'<button type="button" data-copy="{path}" title="copy the path">Copy</button></div>'
        f"{leaving}{_details(entry)}</td>"
        f"<td><code>{escape_html(entry.tag)}</code></td>"
        f"<td>{'<br>'.join(escape_html(p) for p in entry.platforms)}</td>"
        f'<td class="num">{human_size(entry.size)}</td>'
        f'<td class="date">{entry.updated:%Y-%m-%d}</td></tr>'
    )


def _schedule(state: CurrentState, grace_days: int) -> list[str]:
    if not state.schedule:
        return []
    retiring_paths = retiring(state)
    lines = [
        '<h2 id="waiting">Waiting for removal</h2>',
        f"<p>Deleted after a grace period of {grace_days} days.</p>",
        '<table><colgroup><col style="width:10%"><col style="width:22%">'
        '<col style="width:44%"><col style="width:12%"><col style="width:12%"></colgroup>',
        "<thead><tr><th>Kind</th><th>Image or layer</th><th>Was at</th><th>Scheduled</th>"
        "<th>Deleted after</th></tr></thead><tbody>",
    ]
    for removal in state.schedule:
        was = f"<code>{escape_html(removal.path)}</code>" if removal.path else "—"
        if serving(removal, retiring_paths):
            was += ' <span class="leaving">⏳ still served</span>'
        lines.append(
            f"<tr><td>{escape_html(removal.kind)}</td>"
            f"<td><code>{escape_html(short_digest(removal.id))}</code></td><td>{was}</td>"
            f"<td>{removal.scheduled:%Y-%m-%d}</td>"
            f"<td>{deletion_date(removal, grace_days):%Y-%m-%d}</td></tr>"
        )
    lines.append("</tbody></table>")
    return lines


def catalog_html(state: CurrentState, *, grace_days: int, generated: datetime | None = None) -> str:
    """The catalog page (deterministic: the same state gives the same bytes)."""
    state = canonical_state(state)
    entries = catalog_entries(state, grace_days=grace_days)
    repo = escape_html(state.cvmfs_repo)
    stamp = f" Generated {escape_html(iso(generated))}." if generated is not None else ""
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Container images in {repo}</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>Container images in {repo}</h1>",
        f"<p>{plural(len(entries), 'image path')}. Run one with "
        f"<code>apptainer exec /cvmfs/{repo}/&lt;path&gt; &lt;command&gt;</code>.{stamp}</p>",
        '<div class="search"><input id="q" type="search" placeholder="Search paths, tags, '
        'platforms…" aria-label="Search the catalog" autofocus>'
        '<span id="count" aria-live="polite"></span></div>',
        '<table id="images"><colgroup><col style="width:54%"><col style="width:13%">'
        '<col style="width:14%"><col style="width:8%"><col style="width:11%"></colgroup>',
        '<thead><tr><th>Path</th><th>Tag</th><th>Platforms</th><th class="num">Size</th>'
        "<th>Updated</th></tr></thead><tbody>",
        *(_row(entry) for entry in entries),
        "</tbody></table>",
        '<div id="empty" class="empty" hidden>No path matches the search.</div>',
        *_schedule(state, grace_days),
        f"</main><script>{_SCRIPT}</script></body></html>",
    ]
    return "\n".join(lines) + "\n"
