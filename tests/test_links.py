"""Every relative link between the project's documents resolves.

A link `[text](path#anchor)` (or an image `![alt](path)`) of README.md,
data/README.md, docs/*.md, results/README.md and benchmarks/README.md must
name a file that exists, relative to the document, and an anchor that one of
that Markdown file's headings makes, as GitHub makes them. Links with a
scheme (https:, mailto:) and links inside code are not checked.
"""

import collections
import os
import re
from typing import List, Set

import helpers

ROOT = helpers.ROOT
DOCUMENTS = (("README.md", "data/README.md") + helpers.doc_files("docs")
             + ("results/README.md", "benchmarks/README.md"))

_FENCE = re.compile(r"^```.*?^```[ \t]*$", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[([^\]]*)\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)


def _prose(text: str) -> str:
  """The text without fenced code blocks."""
  return _FENCE.sub("", text)


def slug(heading: str) -> str:
  """GitHub's anchor of a heading: the rendered text (code spans and links
  as their text) lower-cased, without characters other than letters, digits,
  `_`, `-` and spaces, spaces as `-`."""
  text = _LINK.sub(lambda m: m.group(1), heading).replace("`", "")
  text = text.strip().lower()
  text = "".join(ch for ch in text if ch.isalnum() or ch in "_- ")
  return text.replace(" ", "-")


def anchors(text: str) -> Set[str]:
  """The anchors of a Markdown text's headings (repeats get -1, -2, ...)."""
  seen = collections.Counter()
  out = set()
  for heading in _HEADING.findall(_prose(text)):
    base = slug(heading)
    out.add(f"{base}-{seen[base]}" if seen[base] else base)
    seen[base] += 1
  return out


def broken_links(path: str) -> List[str]:
  """`target (why)` of every relative link of the document at `path` that
  does not resolve."""
  with open(path) as f:
    text = f.read()
  folder = os.path.dirname(path)
  broken = []
  for _, target in _LINK.findall(_CODE.sub("", _prose(text))):
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
      continue
    file_part, _, anchor = target.partition("#")
    resolved = os.path.normpath(os.path.join(folder, file_part)) if file_part \
        else path
    if not os.path.exists(resolved):
      broken.append(f"{target} (no file {os.path.relpath(resolved, ROOT)})")
      continue
    if anchor and resolved.endswith(".md"):
      with open(resolved) as f:
        if anchor not in anchors(f.read()):
          broken.append(f"{target} (no heading makes #{anchor})")
  return broken


def test_every_relative_link_resolves():
  checked = 0
  for document in DOCUMENTS:
    path = os.path.join(ROOT, document)
    assert not broken_links(path), (document, broken_links(path))
    checked += 1
  assert checked >= 5 and "docs/differences.md" in DOCUMENTS


def test_slugs_are_githubs():
  """Headings of these documents, with their anchors as GitHub writes them."""
  assert slug("Results (2026-12-02/03): the main table, 5 seeds, paired") == (
      "results-2026-12-0203-the-main-table-5-seeds-paired")
  assert slug("Reliability (`reliability/`)") == "reliability-reliability"
  assert slug("Assignments per similarity option (`assignment_init.py`, "
              "issue 15)") == (
                  "assignments-per-similarity-option-assignment_initpy-issue-15")
  assert slug("The quick start's run") == "the-quick-starts-run"
  assert anchors("# A\n\n```bash\n# not a heading\n```\n## A\n") == {"a", "a-1"}


def test_a_broken_link_is_found(tmp_path):
  (tmp_path / "other.md").write_text("# Here\n")
  (tmp_path / "doc.md").write_text(
      "# Doc\n[ok](other.md#here) [ok](#doc) [web](https://example.com/x)\n"
      "`[code](missing.md)`\n```\n[fenced](missing.md)\n```\n"
      "[no file](missing.md) [no anchor](other.md#there)\n"
      "![no image](fig.png) [no local anchor](#nowhere)\n")
  found = broken_links(str(tmp_path / "doc.md"))
  assert [b.split()[0] for b in found] == [
      "missing.md", "other.md#there", "fig.png", "#nowhere"]
