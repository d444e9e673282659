"""The benchmarks still fit the package they measure.

No test runs benchmarks/ (they take minutes and print figures), so a rename
in the package would leave them broken until someone ran them (as
`refine.nearest_labelled` did, moved to `refine.fills`). This reads every
benchmark's source and checks that each `module.name` it takes from a
`coarseseg_jax` module it imported exists; border_contrast.py, whose
split table docs/texture_mosaic.md quotes, also runs, on a tiny draw.
"""

import ast
import importlib
import json
import pathlib
import subprocess
import sys

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
# Read on purpose from an older API, behind a hasattr check: eval_sizes.py
# times the evaluation of before and after issue 13 alike.
OLD_API = {("eval_sizes.py", "evaluate", "evaluate")}


def package_modules(tree: ast.AST) -> dict:
  """{local name: module} of the coarseseg_jax modules a file imports."""
  names = {}
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
        "coarseseg_jax"):
      for alias in node.names:
        names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    elif isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.startswith("coarseseg_jax") and alias.asname:
          names[alias.asname] = alias.name
  modules = {}
  for local, dotted in names.items():
    try:
      modules[local] = importlib.import_module(dotted)
    except ImportError:  # A function or constant, not a module.
      pass
  return modules


def test_every_package_name_a_benchmark_reads_exists():
  files = sorted(BENCHMARKS.rglob("*.py"))
  assert len(files) > 10
  missing = []
  for path in files:
    tree = ast.parse(path.read_text())
    modules = package_modules(tree)
    for node in ast.walk(tree):
      if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
          and node.value.id in modules
          and not hasattr(modules[node.value.id], node.attr)
          and (path.name, node.value.id, node.attr) not in OLD_API):
        missing.append(f"{path.relative_to(BENCHMARKS)}:{node.lineno}: "
                       f"{node.value.id}.{node.attr}")
  assert not missing, missing


def test_border_contrast_runs_and_prints_the_split_shift():
  """The command as its docstring gives it, on 2 images of 64 px: the JSON
  line holds every texture source's split parts; the retina's test quarter
  is the flat one docs/texture_mosaic.md describes."""
  proc = subprocess.run(
      [sys.executable, str(BENCHMARKS / "border_contrast.py"),
       "--num_images=2", "--image_size=64"],
      capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert set(result) >= {"synthetic", "texture_mosaic"}
  splits = result["texture_mosaic_split_parts"]
  assert len(splits) == 9 and all(s["train"] == [0.0, 1.0]
                                  for s in splits.values())
  offset, spread = splits["vessels"]["test"]
  assert offset < -0.3 and spread < 0.5
  assert splits["tissue"]["test"][0] > 0.8
  assert "split parts against train's" in proc.stdout
