"""The benchmarks still fit the package they measure.

No test runs benchmarks/ (they take minutes and print figures), so a rename
in the package would leave them broken until someone ran them (as
`refine.nearest_labelled` did, moved to `refine.fills`). This reads every
benchmark's source and checks that each `module.name` it takes from a
`coarseseg_jax` module it imported exists.
"""

import ast
import importlib
import pathlib

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
