"""Executes notebooks/regularizer.ipynb so that it never rots.

The kernel is this interpreter (`sys.executable`), through a kernelspec
written to a temporary directory, so the test does not depend on any
kernelspec installed for the user or the venv. The notebook's last cell prints
one ``RESULTS_JSON {...}`` line with everything it computed; the test checks
the claims the notebook makes from those numbers.
"""

import json
import math
import os
import pathlib
import sys
import time

import nbformat
from nbclient import NotebookClient
import pytest

NOTEBOOK = (pathlib.Path(__file__).resolve().parent.parent / "notebooks"
            / "regularizer.ipynb")
KERNEL_NAME = "coarseseg-test-python"
TIMEOUT_S = 300  # Per cell; the whole notebook takes well under a minute.


def _kernel_env(tmp_path):
  # The notebook needs one CPU device, not conftest's 8 fake ones.
  xla_flags = " ".join(
      f for f in os.environ.get("XLA_FLAGS", "").split()
      if not f.startswith("--xla_force_host_platform_device_count"))
  return {"XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu",
          "IPYTHONDIR": str(tmp_path / "ipython"),
          "MPLCONFIGDIR": str(tmp_path / "matplotlib")}


@pytest.fixture
def kernel_name(tmp_path, monkeypatch):
  """A kernelspec running this interpreter, visible only to this test."""
  spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL_NAME
  spec_dir.mkdir(parents=True)
  spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                   "{connection_file}"],
          "display_name": "coarseseg test kernel", "language": "python",
          "env": _kernel_env(tmp_path)}
  (spec_dir / "kernel.json").write_text(json.dumps(spec))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  # Keep the connection file and runtime data out of the user's home.
  monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
  return KERNEL_NAME


def _results(nb):
  for cell in reversed(nb.cells):
    for out in cell.get("outputs", []):
      if out.get("output_type") == "stream":
        for line in out["text"].splitlines():
          if line.startswith("RESULTS_JSON "):
            return json.loads(line[len("RESULTS_JSON "):])
  raise AssertionError("the notebook printed no RESULTS_JSON line")


def test_committed_without_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, (
          "commit notebooks/regularizer.ipynb without outputs")


@pytest.mark.slow  # A kernel subprocess runs the notebook's descents.
def test_regularizer_notebook_runs(kernel_name):
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = NotebookClient(
      nb, kernel_name=kernel_name, timeout=TIMEOUT_S,
      resources={"metadata": {"path": str(NOTEBOOK.parent)}})
  start = time.time()
  client.execute()
  elapsed = time.time() - start

  for cell in nb.cells:
    for out in cell.get("outputs", []):
      assert out.get("output_type") != "error", out
  pngs = sum("image/png" in out.get("data", {})
             for cell in nb.cells for out in cell.get("outputs", []))
  assert pngs >= 5, f"expected the inline plots, got {pngs} images"

  r = _results(nb)
  # The edge-following hand-made assignments beat the grid.
  assert r["follow_label"]["slic_loss"] < r["grid"]["slic_loss"]
  assert r["follow_slic"]["slic_loss"] < r["grid"]["slic_loss"]
  assert r["follow_slic"]["slic_map_loss"] < r["grid"]["slic_map_loss"]
  assert r["follow_label"]["asa"] > r["grid"]["asa"]
  assert r["follow_slic"]["asa"] > r["grid"]["asa"]
  # Gradient descent on slic_loss alone lowers it, and moves the superpixels
  # onto the edges (higher ASA than the soft grid it started from).
  # With m = 10 too; "slic_loss" in the reports is always the colour part.
  for m in ("m0", "m10"):
    hist = r[f"history_{m}"]
    assert hist[-1] < 0.5 * hist[0], (m, hist[0], hist[-1])
    descended = r[f"descended_{m}"]
    assert descended["slic_loss"] < r["follow_label"]["slic_loss"], m
    assert descended["asa"] > r["soft_grid"]["asa"], m
  # The untrained model's numbers are finite and in range.
  m = r["model"]
  assert 0.0 < m["slic_loss"] < 1e3 and 0.0 < m["slic_map_loss"] < 1e3
  assert 0.0 < m["asa"] <= 1.0
  # The evaluator's device step reports the same ASA as the hand-made call.
  e = r["evaluator"]
  assert e["asa"] == pytest.approx(m["asa"], abs=1e-5)
  for key in ("accuracy", "boundary_recall", "boundary_f1", "miou",
              "superpixel_asa"):
    assert 0.0 <= e[key] <= 1.0, key
  # Issue 15, the untrained model's assignments per similarity option: the
  # paper's dot similarity is saturated and blind to the parent cell, cosine
  # is softer, the zero-initialised dot with a parent bias is a soft grid.
  init = r["init_stats"]
  dot, cos, grid = init["dot"], init["cosine"], init["dot_zero_pb2"]
  for s in ("a4", "a8"):
    assert cos[f"{s}_entropy"] > dot[f"{s}_entropy"] + 0.3, (s, cos, dot)
    assert dot[f"{s}_entropy"] < 0.5 * math.log(9), (s, dot)
    assert dot[f"{s}_parent_share"] < 0.25, (s, dot)
    assert dot[f"{s}_starved_cells"] > 0.1, (s, dot)
    assert grid[f"{s}_parent_share"] == 1.0 and (
        grid[f"{s}_starved_cells"] == 0.0), (s, grid)
    assert 0.5 * math.log(9) < grid[f"{s}_entropy"] < math.log(9), (s, grid)
  assert elapsed < 240, f"the notebook took {elapsed:.0f} s"
