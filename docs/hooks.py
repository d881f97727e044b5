"""MkDocs hooks: pages made at build time from files kept elsewhere, so each has one source: the
home page from README.md, benchmarks.md from BENCHMARKS.md, and a page per example notebook (its
text and code; the notebooks are stored without outputs)."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).parent.parent


def site_links(text: str) -> str:
    """The repository's links (docs/PAGE.md, BENCHMARKS.md, README.md) as the site's."""
    return (
        text.replace("](docs/", "](").replace("](BENCHMARKS.md", "](benchmarks.md").replace("](README.md", "](index.md")
    )


def notebook_page(path: Path) -> str:
    import nbformat
    from nbconvert import MarkdownExporter

    body, _ = MarkdownExporter().from_notebook_node(nbformat.read(path, as_version=4))
    return f"{body}\n\n*From `examples/{path.name}`; run it for its figures (`make lab`).*\n"


def on_files(files, config):
    pages = {
        "index.md": site_links((ROOT / "README.md").read_text()),
        "benchmarks.md": site_links((ROOT / "BENCHMARKS.md").read_text()),
    }
    pages.update({f"notebooks/{p.stem}.md": notebook_page(p) for p in sorted((ROOT / "examples").glob("*.ipynb"))})
    for uri, content in pages.items():
        files.append(File.generated(config, uri, content=content))
    return files
