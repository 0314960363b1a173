"""The documentation stays true: the README is short and keeps the Space's front matter and the two
quick-start commands, every relative link in README.md and docs/ reaches an existing file (and
heading), the generated parts of docs/formats.md match the code they come from, and the README's
library snippet runs from any directory."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dino_demo.paths import PROJECT_ROOT as ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 200
QUICK_START = ("pip install -r requirements.txt -c constraints.txt && python app.py", "bash scripts/test.sh")
# Without a GPU: the CPU-only torch first, pinned like the quick start's install, so that it keeps it.
CPU_TORCH = "pip install torch torchvision -c constraints.txt --index-url https://download.pytorch.org/whl/cpu"
# Pages other work adds; the README and the index link them already.
LINKED_PAGES = ("app", "zoo", "training", "onnx", "op", "parity", "deployment", "formats", "library",
                "families", "denoising", "analysis", "performance")

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def _generator():
    """scripts/generate_docs.py as a module (scripts are not a package)."""
    spec = importlib.util.spec_from_file_location("generate_docs", ROOT / "scripts" / "generate_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _prose_lines(text: str):
    """(line number, line) outside fenced code blocks, with inline code spans blanked."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, re.sub(r"`[^`]*`", "``", line)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: link text kept, markup and punctuation dropped, lower
    case, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            out.add(base if count == 0 else f"{base}-{count}")
    return out


def broken_links(page: Path) -> list[str]:
    problems = []
    for number, line in _prose_lines(page.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
                continue
            path_part, _, anchor = target.partition("#")
            resolved = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.relative_to(ROOT)}:{number}: {target}"
            if ROOT not in resolved.parents and resolved != ROOT:
                problems.append(f"{where} leaves the repository")
            elif not resolved.exists():
                problems.append(f"{where} -> no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append(f"{where} -> no heading with that anchor")
    return problems


def test_readme_is_short_and_keeps_front_matter_and_quick_start():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines, at most {MAX_README_LINES}"
    # The Hugging Face Space reads the front matter: it must open the file.
    assert lines[0] == "---"
    front = lines[1:lines.index("---", 1)]
    for key in ("title: DINO Explorer", "sdk: gradio", "app_file: app.py", "python_version: \"3.12\""):
        assert key in front, key
    assert any(line.startswith("sdk_version: ") for line in front)
    for command in QUICK_START:
        assert command in text, command


def test_quick_start_says_how_to_get_a_cpu_only_torch_that_the_next_commands_keep():
    text = README.read_text(encoding="utf-8")
    block = text.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.strip()]
    assert lines[0].startswith(CPU_TORCH) and "CPU-only" in lines[0]
    assert [line.split("  #")[0].strip() for line in lines[1:]] == list(QUICK_START)
    pinned = {line.split("==")[0] for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line}
    assert {"torch", "torchvision"} <= pinned  # what the first line installs, the others keep


def test_readme_and_index_link_every_page():
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    readme = README.read_text(encoding="utf-8")
    for name in LINKED_PAGES:
        assert f"]({name}.md)" in index, f"docs/README.md does not link {name}.md"
        assert f"](docs/{name}.md)" in readme, f"README.md does not link docs/{name}.md"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_reach_files_and_headings(page):
    assert broken_links(page) == []


def test_link_checker_sees_broken_links(tmp_path, monkeypatch):
    """The checker itself: a missing file, a missing heading and a link out of the repository are
    reported; code blocks and spans, web links and good anchors are not."""
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.md").write_text("# A page\n\n## Some `code` heading: here\n\n## Again\n\n## Again\n")
    page = root / "docs" / "b.md"
    page.write_text(
        "[ok](a.md) [ok](a.md#some-code-heading-here) [ok](a.md#again-1) [web](https://example.com/x.md)\n"
        "`[not a link](nowhere.md)`\n```\n[not a link](nowhere.md)\n```\n"
        "[bad](missing.md) [bad](a.md#no-such) [out](../../outside.md) [self](#nothing)\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", root)
    problems = broken_links(page)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "missing.md -> no such file", "a.md#no-such -> no heading with that anchor",
        "../../outside.md leaves the repository", "#nothing -> no heading with that anchor"]


@pytest.mark.parametrize("page", ["formats.md", "zoo.md"])
def test_generated_parts_match_the_code(page):
    generator = _generator()
    text = (DOCS / page).read_text(encoding="utf-8")
    stale = generator.stale_sections(text, page)
    assert stale == [], f"docs/{page} is out of date ({stale}): run python scripts/generate_docs.py"


def test_generated_tables_hold_every_array_and_zoo_entry():
    from dino_demo.io.internals import MEANINGS
    from dino_demo.sources.zoo import ENTRIES

    formats = (DOCS / "formats.md").read_text(encoding="utf-8")
    for name, (_, shape) in MEANINGS.items():
        assert f"| `{name}` | {shape} |" in formats, name
    zoo_page = (DOCS / "zoo.md").read_text(encoding="utf-8")
    for entry in ENTRIES:
        assert f"| `{entry.id}` |" in zoo_page and entry.urls[0] in zoo_page, entry.id


def test_check_fails_on_a_stale_page(tmp_path, monkeypatch):
    """An edited row, or a meaning changed in the code, makes `--check` fail; a rewrite fixes it."""
    generator = _generator()
    for page in generator.SECTIONS:
        (tmp_path / page).write_text((DOCS / page).read_text(encoding="utf-8"), encoding="utf-8")
    formats = tmp_path / "formats.md"
    formats.write_text(formats.read_text(encoding="utf-8").replace("| `decoder_logits` |", "| `decoder_logits_old` |"),
                       encoding="utf-8")
    assert generator.main(["--check", "--docs", str(tmp_path)]) == 1
    assert generator.main(["--docs", str(tmp_path)]) == 0
    assert generator.main(["--check", "--docs", str(tmp_path)]) == 0

    from dino_demo.io import internals
    monkeypatch.setitem(internals.MEANINGS, "decoder_logits", ("a new meaning", "[K, Q, C]"))
    assert generator.stale_sections(formats.read_text(encoding="utf-8"), "formats.md") == ["internals"]
    assert generator.main(["--check", "--docs", str(tmp_path)]) == 1

    # A page that lost its markers is an error, not silently left alone.
    (tmp_path / "zoo.md").write_text("# Model zoo\n", encoding="utf-8")
    with pytest.raises(ValueError, match="generated: zoo"):
        generator.update("# Model zoo\n", "zoo.md")


def test_generator_runs_as_a_script():
    done = subprocess.run([sys.executable, "scripts/generate_docs.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _readme_snippet() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Using the library"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_library_snippet_runs_from_another_directory(tmp_path):
    snippet = _readme_snippet()
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 and 'load("shipped")' in snippet:
        # `load("shipped")` comes with the one model source of issue 20; a checkout without it
        # reads the word as a file name.
        probe = subprocess.run([sys.executable, "-c", "from dino_demo.explore.models import load; load('shipped')"],
                               cwd=tmp_path, capture_output=True, text=True, timeout=300)
        if probe.returncode != 0:
            pytest.skip("load('shipped') is not supported by this checkout yet")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith("["), done.stdout
