"""Every ```python block of README.md and docs/*.md runs as written.

The convention (also stated for contributors in docs/conventions.md):

- the python blocks of one Markdown file run in order, in one namespace (``__name__`` is
  ``"__main__"``, as in a script), in a fresh temporary working directory that holds a copy
  of the repository's ``docs/`` folder;
- a block whose preceding line (blank lines aside) is ``<!-- skip-test: reason -->`` is not
  run (GPU-only code, a user's own files, long runs);
- ```bash, ```json and unlabelled blocks are never run.

The files are found when the tests are collected, so a new page in docs/ is tested without
being listed here. The blocks are read from the repository (the tests run from a clone).
Also runs the ``>>>`` examples of the docstrings of axkern's modules.
"""
import doctest
import importlib
import pathlib
import re
import shutil
import sys
import traceback

import pytest

import axkern

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC_FILES = [p for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))] if p.is_file()]

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[^`]*$")
_SKIP = re.compile(r"^\s*<!--\s*skip-test:\s*(?P<reason>\S.*?)\s*-->\s*$")
PYTHON_LANGS = {"python", "py", "python3"}
# Optional packages (the extras): a block or module that needs a missing one is skipped, so
# that a user without the extra gets skips; CI installs them all.
_OPTIONAL = {"torch", "tensorflow", "keras", "onnx", "onnxruntime", "dask", "distributed",
             "pymoo", "pycuda", "sklearn", "matplotlib", "tqdm"}


class Block:
    """One fenced code block: its language, first code line (1-based) and source."""

    def __init__(self, lang, line, source, skip):
        self.lang, self.line, self.source, self.skip = lang, line, source, skip

    def __repr__(self):
        return f"Block({self.lang!r}, line={self.line}, skip={self.skip!r})"


def extract_blocks(text, name="<markdown>"):
    """All fenced code blocks of a Markdown text, in order.

    A fence may be indented (a block inside a list item); the indentation of the opening
    fence is removed from every line of the block. ``skip`` is the reason given by a
    ``<!-- skip-test: ... -->`` line right before the opening fence, else None. An
    unterminated fence raises ValueError naming the file and line.
    """
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group("indent"), m.group("fence"), m.group("info").lower()
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        skip_m = _SKIP.match(lines[j]) if j >= 0 else None
        body, k = [], i + 1
        close = re.compile(r"^[ \t]*" + re.escape(fence[0]) + "{%d,}[ \t]*$" % len(fence))
        while k < len(lines) and not close.match(lines[k]):
            line = lines[k]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip(" \t"))
            k += 1
        if k == len(lines):
            raise ValueError(f"{name}:{i + 1}: code fence {fence}{lang} is never closed")
        blocks.append(Block(lang, i + 2, "\n".join(body) + "\n",
                            skip_m.group("reason") if skip_m else None))
        i = k + 1
    return blocks


def python_blocks(path):
    text = path.read_text(encoding="utf-8")
    return [b for b in extract_blocks(text, path.name) if b.lang in PYTHON_LANGS]


def _rel(path):
    return path.relative_to(ROOT).as_posix()


def run_markdown(path, workdir, monkeypatch):
    """Run the python blocks of one file in order; fail with the file and block line."""
    shutil.copytree(ROOT / "docs", workdir / "docs")
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(sys, "argv", [str(path)])
    namespace = {"__name__": "__main__"}
    ran = 0
    for block in python_blocks(path):
        if block.skip:
            continue
        error = missing = None
        try:
            # pad with blank lines so tracebacks give the line numbers of the Markdown file
            exec(compile("\n" * (block.line - 1) + block.source, _rel(path), "exec"), namespace)
        except (Exception, SystemExit) as exc:  # SystemExit too: a block must not end the script
            if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] in _OPTIONAL:
                missing = exc.name
            # drop this function's frame: the traceback starts in the Markdown file
            error = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next))
        if missing is not None:
            # a user without the extra gets a skip; CI installs every extra, so there it runs
            pytest.skip(f"{_rel(path)}: the block at line {block.line} needs {missing}")
        if error is not None:
            pytest.fail(f"{_rel(path)}: the python block at line {block.line} failed:\n{error}",
                        pytrace=False)
        ran += 1
    return ran


@pytest.mark.parametrize("path", DOC_FILES, ids=_rel)
def test_markdown_python_blocks_run(path, tmp_path, monkeypatch):
    try:
        import matplotlib
        matplotlib.use("Agg")
    except ImportError:
        pass
    run_markdown(path, tmp_path, monkeypatch)


def test_docs_are_found():
    names = {_rel(p) for p in DOC_FILES}
    assert "README.md" in names
    assert {"docs/api.md", "docs/conventions.md", "docs/multipliers.md"} <= names
    # the pages do hold runnable examples (an extractor that found none would pass silently)
    assert sum(1 for p in DOC_FILES for b in python_blocks(p) if not b.skip) >= 15


def test_extract_blocks_follows_the_convention():
    text = "\n".join([
        "# t",                                   # 1
        "```python",                             # 2
        "a = 1",                                 # 3
        "```",                                   # 4
        "<!-- skip-test: needs a GPU -->",       # 5
        "",                                      # 6
        "```python",                             # 7
        "b = 2",                                 # 8
        "```",                                   # 9
        "```bash",                               # 10
        "axkern list",                           # 11
        "```",                                   # 12
        "- item",                                # 13
        "  ```python",                           # 14
        "  if a:",                               # 15
        "      c = 3",                           # 16
        "  ```",                                 # 17
        "````python",                            # 18
        "s = '```'",                             # 19
        "````",                                  # 20
    ])
    blocks = extract_blocks(text)
    assert [(b.lang, b.line, b.skip) for b in blocks] == [
        ("python", 3, None), ("python", 8, "needs a GPU"), ("bash", 11, None),
        ("python", 15, None), ("python", 19, None)]
    assert blocks[3].source == "if a:\n    c = 3\n"
    assert blocks[4].source == "s = '```'\n"
    with pytest.raises(ValueError, match=r"x\.md:2: code fence"):
        extract_blocks("text\n```python\nx = 1\n", "x.md")


def test_failing_block_reports_file_and_line(tmp_path, monkeypatch):
    doc = tmp_path / "page.md"
    doc.write_text("# p\n\n```python\nx = 1\n```\n\n```python\ny = x + undefined_name\n```\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "docs").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(pytest.fail.Exception) as info:
        run_markdown(doc, work, monkeypatch)
    msg = str(info.value)
    assert "page.md: the python block at line 8 failed" in msg
    assert 'File "page.md", line 8' in msg and "undefined_name" in msg


# ---------------------------------------------------------------- the pages stand alone
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _headings(path):
    """GitHub's anchors of the headings of a Markdown file (code blocks left out)."""
    anchors, fence = set(), None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _FENCE.match(line)
        if m and (fence is None or m.group("fence")[0] == fence):
            fence = None if fence else m.group("fence")[0]
            continue
        if fence is None and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("path", DOC_FILES, ids=_rel)
def test_relative_links_resolve(path):
    broken = []
    for target in _LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _headings(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{_rel(path)}: broken links: {broken}"


def test_no_reference_to_private_notes():
    """The docs and code must not point users to notes they do not have, or to paths of the
    machine they were written on."""
    import subprocess

    try:
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    needles = ["DESIGN" + ".md", "/wo" + "rk/"]   # split so this file does not match itself
    hits = []
    for name in files:
        f = ROOT / name
        if f.suffix in {".npz", ".png", ".bin", ".npy"} or not f.is_file():
            continue
        text = f.read_text(encoding="utf-8", errors="replace")
        hits += [f"{name}: {n}" for n in needles if n in text]
    assert not hits, hits


# ---------------------------------------------------------------- docstring examples
def _modules_with_examples():
    pkg = pathlib.Path(axkern.__file__).parent
    names = []
    for f in sorted(pkg.rglob("*.py")):
        if ">>>" in f.read_text(encoding="utf-8"):
            rel = f.relative_to(pkg.parent).with_suffix("")
            names.append(".".join(rel.parts).removesuffix(".__init__"))
    return names


@pytest.mark.parametrize("modname", _modules_with_examples())
def test_docstring_examples(modname, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in _OPTIONAL:
            pytest.skip(f"{modname} needs {exc.name}")
        raise
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(mod, modname) if t.examples]
    assert tests, f"{modname} has '>>>' in its source but no docstring example was found"
    out = []
    for t in tests:
        runner.run(t, out=out.append)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, "".join(out)
