"""The documents are tested: every command of README_FILES runs.

README_FILES are README.md, data/README.md, docs/*.md, results/README.md and
benchmarks/README.md (`tests/test_links.py` checks the links between them).

Each fenced ```bash block is split into commands (backslash continuations
joined, comments dropped). Every command must be claimed by exactly one
`SCENARIOS` rule (`test_every_readme_command_is_claimed`), so a command added
to a README without a test fails the suite. Each scenario runs its commands
in README order, as written, in the repository root (the commands of one
Python entry point share one process: `readme_runner`), with:

* `python` / `.venv/bin/python` as this interpreter, and one CPU device;
* the README's placeholders pointing at tiny fixtures in the real on-disk
  formats (`my_data` a folder dataset, `data/manual/suim` SUIM as unpacked,
  ... `my_images` photos of odd sizes and a 16-bit PNG), and outputs
  (`workdirs/`, `results/`, `gs://BUCKET/`, `--data_dir=data`) under a
  temporary folder, so nothing is written into the repository;
* tiny overrides appended (a small model, tiny data, `max_steps`), which
  win over the command's own values as the last flag does.

`./run.sh test` is the command running this suite (CI runs it) and `source
.venv/bin/activate` only sets up the shell; both are claimed and not run. The
refine commands are run by tests/test_refine.py.
"""

import ast
import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image
import pytest

import helpers
import paper_fixtures
from coarseseg_jax.configs import suim
from coarseseg_jax.experiments import methods
from coarseseg_jax.experiments import report
from coarseseg_jax.experiments import tables
from coarseseg_jax.datasets import synthetic

ROOT = helpers.ROOT
README_FILES = (("README.md", "data/README.md")
                + helpers.doc_files("docs")
                + ("results/README.md", "benchmarks/README.md"))

# ------------------------------------------------------- reading the READMEs


def all_commands() -> List[Tuple[str, str]]:
  """(README, command) of every ```bash block (`helpers.readme_commands`)."""
  return [(f, c) for f in README_FILES for c in helpers.readme_commands(f)]


# ---------------------------------------------------------------- scenarios
# Scenario -> regexes of the commands it runs (matched with re.search).
SCENARIOS: Dict[str, Tuple[str, ...]] = {
    "not_run": (r"^\./run\.sh test\b", r"^source \.venv/bin/activate$"),
    "synthetic": (r"^\./run\.sh\s*$", r"coarseseg_jax\.main .*synthetic\.py",
                  r"coarseseg_jax\.main --workdir=workdirs/syn "),
    "folder": (r"coarseseg_jax\.main .*configs/folder\.py",
               r"prepare --dataset=folder"),
    "suim": (r"^(?!.*(--checkpoint=pretrained|prepare --config)).*"
             r"configs/suim\.py", r"prepare --dataset=suim"),
    "authors_weights": (r"--checkpoint=pretrained", r"prepare --config="),
    "pannuke": (r"configs/pannuke\.py",),
    "cityscapes": (r"configs/cityscapes\.py", r"prepare --dataset=cityscapes"),
    "synthetic_prepare": (r"prepare --dataset=synthetic",),
    "texture_mosaic": (r"coarseseg_jax\.main .*configs/texture_mosaic\.py",),
    "experiments": (r"coarseseg_jax\.experiments",),
    "refine": (r"--mode=refine",),  # Run by tests/test_refine.py.
}

TINY_MODEL = ["--config.model.width=8", "--config.model.stage_blocks=(1,1,1)",
              "--config.model.head_channels=8",
              "--config.model.sim_features=8"]
TINY_TRAIN = ["--config.train.max_steps=2", "--config.train.batch_size=2",
              "--config.data.eval_batch_size=2", "--config.data.crop_size=64",
              "--config.data.slic_num_segments=64",
              "--config.data.shuffle_buffer=8", "--config.train.num_figures=1",
              "--config.data.coarse_kernel=7",
              # Paper mode fine-tunes: one epoch here.
              "--config.train.finetune_max_epochs=1"]
TINY_SYNTHETIC = ["--config.data.builder_kwargs.num_train=8",
                  "--config.data.builder_kwargs.num_validation=2",
                  "--config.data.builder_kwargs.num_test=2",
                  "--config.data.builder_kwargs.image_size=64"]
TINY_DATASET = {
    "synthetic": TINY_SYNTHETIC,
    "texture_mosaic": TINY_SYNTHETIC,
    "folder": [],
    "suim": ["--config.data.builder_kwargs.num_validation=2",
             "--config.data.builder_kwargs.size=64"],
    "pannuke": [],
    "cityscapes": ["--config.data.builder_kwargs.image_width=128",
                   "--config.data.builder_kwargs.image_height=64",
                   "--config.data.builder_kwargs.train_extra=False"],
}
# Dataset parameters added to a prepare command's own --builder_kwargs.
TINY_PREPARE = {
    "synthetic": "num_train=4,num_validation=2,num_test=2,image_size=64",
    "folder": "",
    "suim": "num_validation=2,size=64",
    "cityscapes": "image_width=128,image_height=64",
}


def scenario_of(command: str) -> List[str]:
  return [name for name, patterns in SCENARIOS.items()
          if any(re.search(p, command) for p in patterns)]


def test_every_readme_command_is_claimed():
  commands = all_commands()
  assert len(commands) > 15  # The parser found the blocks.
  for path, command in commands:
    assert len(scenario_of(command)) == 1, (path, command, scenario_of(command))


# ----------------------------------------------------------------- fixtures


def write_images(root: str) -> List[Tuple[str, Tuple[int, int]]]:
  """Photos to predict: odd sizes, JPEG/PNG, grayscale, and a 16-bit PNG."""
  os.makedirs(root, exist_ok=True)
  out = []
  for i, (h, w) in enumerate([(109, 75), (64, 64), (50, 130), (97, 97)]):
    image, _ = synthetic.generate(7, "test", i, max(h, w), 6)
    name = f"photo{i}.{'jpg' if i % 2 else 'png'}"
    Image.fromarray(image[:h, :w]).save(os.path.join(root, name))
    out.append((name, (h, w)))
  gray16 = (np.arange(40 * 60).reshape(40, 60) * 27).astype(np.uint16)
  Image.fromarray(gray16).save(os.path.join(root, "scan16.png"))
  out.append(("scan16.png", (40, 60)))
  return out


def write_folder(root: str) -> None:
  """A folder dataset of images of odd sizes, with classes.txt."""
  sizes = {"train": [(70, 90), (101, 64), (64, 77), (80, 80)],
           "validation": [(66, 70), (72, 88)], "test": [(109, 75), (64, 99)]}
  for split, shapes in sizes.items():
    for sub in ("images", "labels"):
      os.makedirs(os.path.join(root, split, sub), exist_ok=True)
    for i, (h, w) in enumerate(shapes):
      image, label = synthetic.generate(3, split, i, max(h, w), 4)
      Image.fromarray(image[:h, :w]).save(
          os.path.join(root, split, "images", f"{split}{i}.png"))
      Image.fromarray(label[:h, :w]).save(
          os.path.join(root, split, "labels", f"{split}{i}.png"))
  with open(os.path.join(root, "classes.txt"), "w") as f:
    f.write("\n".join(synthetic.class_names(4)) + "\n")


def _substitutions(tmp: str) -> List[Tuple[str, str]]:
  """README placeholder -> fixture or temporary path (applied in order)."""
  return [
      ("=/tmp/", f"={tmp}/tmp/"),  # First: the paths below are under /tmp.
      ("gs://BUCKET/cityscapes", f"{tmp}/raw/cityscapes"),
      ("gs://BUCKET/", f"{tmp}/bucket/"),
      ("data/manual/suim", f"{tmp}/raw/suim"),
      ("data/manual/pannuke", f"{tmp}/raw/pannuke"),
      ("data/manual/cityscapes", f"{tmp}/raw/cityscapes"),
      ("=my_data", f"={tmp}/raw/my_data"),
      ("=my_images", f"={tmp}/raw/my_images"),
      ("=workdirs/", f"={tmp}/workdirs/"),
      ("=results/", f"={tmp}/results/"),
      ("=results", f"={tmp}/results"),
      ("--data_dir=data", f"--data_dir={tmp}/data"),
      ("dist/", f"{tmp}/dist/"),
      ("=weights_1.pt", f"={tmp}/raw/weights_1.npz"),  # No torch here.
  ]


def _env() -> Dict[str, str]:
  flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                   if "device_count" not in f)
  return dict(os.environ, XLA_FLAGS=flags, PYTHONUNBUFFERED="1")


def _dataset_of(args: List[str]) -> str:
  for a in args:
    m = re.search(r"configs/(\w+)\.py|--dataset=(\w+)", a)
    if m:
      return (m.group(1) or m.group(2)).replace("_coarse", "")
  return "synthetic"


def _inner_command(tokens: List[str]) -> List[str]:
  """gcloud ... --command "cd coarseseg-jax && CMD": CMD's tokens."""
  payload = tokens[tokens.index("--command") + 1]
  return shlex.split(payload.split("&&", 1)[1])


def _tiny(args: List[str], tmp: str) -> List[str]:
  """The overrides appended to a command (see the module docstring)."""
  joined = " ".join(args)
  data_dir = f"{tmp}/data"
  dataset = _dataset_of(args)
  # The dataset's tiny sizes, as --config.data.* (prepare --config, eval of
  # pretrained weights: both read the dataset of the command's config).
  tiny_data = TINY_DATASET[dataset] + [
      "--config.data.coarse_kernel=7", f"--config.data.data_dir={data_dir}"]
  if "coarseseg_jax.datasets.prepare" in joined and "--config=" in joined:
    return tiny_data + ["--num_workers=1"]
  if "coarseseg_jax.datasets.prepare" in joined:
    own = [a.split("=", 1)[1] for a in args if a.startswith("--builder_kwargs=")]
    kwargs = ",".join(filter(None, own + [TINY_PREPARE[dataset]]))
    extra = [f"--data_dir={data_dir}", "--num_workers=1"]
    if "--data_dir" in joined:
      extra = extra[1:]
    if kwargs:
      extra.append(f"--builder_kwargs={kwargs}")
    if "--beam_pipeline_options" in joined:  # In this process, no cloud.
      extra.append("--beam_pipeline_options=runner=DirectRunner")
    return extra
  if "coarseseg_jax.experiments" in joined:
    # One method of the main table (hcfcn, the reference) and one seed.
    extra = ["--quick", "--seeds=1", f"--data_dir={data_dir}"]
    if "--experiment=main" in joined or "--experiment=budget" in joined:
      extra.append("--methods=hcfcn")
    if "--experiment=similarity" in joined:
      extra.append("--options=dot,cosine")
    if "--config=" in joined:  # The user's dataset: small crops here.
      extra += ["--config.data.crop_size=64", "--config.data.eval_batch_size=2",
                "--config.train.batch_size=2"]
    if "--num_epochs" in joined:  # A longer schedule: 2 epochs here.
      extra.append("--num_epochs=2")
    if "--workdir_root" not in joined:
      extra.append(f"--workdir_root={tmp}/workdirs/experiments")
    if "--out" not in joined:
      extra.append(f"--out={tmp}/results")
    return extra
  if "--checkpoint=pretrained" in joined:  # No run: the command's config.
    return tiny_data + TINY_MODEL + [
        "--config.data.crop_size=64", "--config.data.eval_batch_size=2",
        "--config.data.slic_num_segments=64"]
  if "--mode=eval" in joined or "--mode=predict" in joined:
    return []  # The workdir's config.json has it all.
  extra = TINY_MODEL + TINY_DATASET[dataset]
  if "--mode=summary" not in joined:
    extra = extra + TINY_TRAIN + [f"--config.data.data_dir={data_dir}"]
  if "distributed=True" in joined:
    extra.append("--config.distributed=False")  # One process here.
  if args[0] == "./run.sh":
    extra.append(f"--workdir={tmp}/workdirs/quickstart")
  return extra


def run_command(command: str, tmp: str,
                check: bool = True) -> subprocess.CompletedProcess:
  """Runs one README command as the module docstring says; asserts rc 0
  (with `check`)."""
  proc = subprocess.run(_tokens(command, tmp), cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0 or not check, (command, proc.stderr[-4000:])
  return proc


def _tokens(command: str, tmp: str, readme: bool = True) -> List[str]:
  """A README command as `run_command` runs it: placeholders replaced, this
  interpreter, the tiny overrides appended (without `readme`: only this
  interpreter)."""
  for old, new in _substitutions(tmp) if readme else ():
    command = command.replace(old, new)
  tokens = shlex.split(command)
  if tokens[0] == "gcloud":
    tokens = _inner_command(tokens)
  if tokens[0] in ("python", ".venv/bin/python"):
    tokens[0] = sys.executable
  return tokens + (_tiny(tokens, tmp) if readme else [])


@pytest.fixture(scope="module", name="entry_points")
def _entry_points():
  """The processes `readme_runner` starts: one per Python entry point for
  this module's tests in this test process (xdist worker), so a command
  pays no start-up once its entry point has run (`helpers.CliProcess`)."""
  processes = {}
  yield processes
  for process in processes.values():
    process.close()


def readme_runner(tmp: str, processes: dict):
  """`run(command, check=True, as_written=False)`: a README command as
  `run_command` runs it (`as_written`: any command line, run as it is),
  but in the process of its Python entry point kept in `processes` (one
  started if there is none alive); `./run.sh` in a process of its own.
  Asserts exit status 0 (with `check`)."""

  def run(command: str, check: bool = True,
          as_written: bool = False) -> subprocess.CompletedProcess:
    tokens = _tokens(command, tmp, readme=not as_written)
    if tokens[1:2] != ["-m"]:
      return run_command(command, tmp, check)
    module = tokens[2] + (".__main__" if tokens[2].endswith(
        ".experiments") else "")
    if module not in processes or not processes[module].alive:
      processes[module] = helpers.CliProcess(module, 1200, env=_env())
    proc = processes[module](tokens[3:])
    assert proc.returncode == 0 or not check, (command, proc.stderr[-4000:])
    return proc

  return run


def _commands(scenario: str) -> List[str]:
  return [c for _, c in all_commands() if scenario_of(c) == [scenario]]


def _results(workdir: str) -> dict:
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def _config(workdir: str) -> dict:
  with open(os.path.join(workdir, "config.json")) as f:
    return json.load(f)


# -------------------------------------------------------------------- tests


@pytest.mark.slow
def test_readme_synthetic_journey(tmp_path, entry_points):
  """./run.sh, train, eval and predict from the workdir alone, summary, the
  override example (the `coarseseg_jax.main` commands in one process:
  `readme_runner`); nothing lands in the repository."""
  tmp = str(tmp_path)
  if not sys.executable.startswith(os.path.join(ROOT, ".venv")):
    pytest.fail("run the suite with ./run.sh test (./run.sh uses .venv)")
  photos = write_images(f"{tmp}/raw/my_images")
  before = set(os.listdir(ROOT))
  commands = _commands("synthetic")
  assert commands[0] == "./run.sh"
  run = readme_runner(tmp, entry_points)
  for command in commands:
    proc = run(command)
    if "--mode=summary" in command:
      _check_summary(proc.stdout)
      # As written (the full-size model: its train step's memory analysis
      # compiles), with a workdir that does not exist: it is not created.
      proc = run(f"{command} --workdir={tmp}/never", as_written=True)
      _check_summary(proc.stdout)
      assert not os.path.exists(f"{tmp}/never")
  assert set(os.listdir(ROOT)) == before
  for name in ("quickstart/without", "quickstart/with", "syn", "fcn_fine"):
    results = _results(f"{tmp}/workdirs/{name}")
    assert 0 <= results["test"]["accuracy_mean"] <= 1
    assert len(results["test_per_class"]) == 6
  # The quick start: the two runs differ in lambda alone; table and figure.
  configs = [_config(f"{tmp}/workdirs/quickstart/{n}")
             for n in ("without", "with")]
  assert [c["train"]["lmbda"] for c in configs] == [0.0, 0.05]
  assert {k: v for k, v in configs[0].items() if k != "train"} == {
      k: v for k, v in configs[1].items() if k != "train"}
  with open(f"{tmp}/workdirs/quickstart/quickstart.json") as f:
    quick = json.load(f)
  assert quick["difference"]["boundary_recall_mean"] == (
      quick["runs"]["with"]["boundary_recall_mean"]
      - quick["runs"]["without"]["boundary_recall_mean"])
  image = np.asarray(Image.open(f"{tmp}/workdirs/quickstart/quickstart.png"))
  assert image.shape[1] > 1000
  assert os.path.exists(f"{tmp}/workdirs/syn/eval_test.json")
  predictions = f"{tmp}/workdirs/syn/predictions"
  for name, shape in photos:
    stem = os.path.splitext(name)[0]
    label = np.asarray(Image.open(os.path.join(predictions, stem + ".png")))
    assert label.shape == shape and label.max() < 6, name
  figures = os.listdir(f"{tmp}/workdirs/syn/figures")
  assert "sample_0.png" in figures and "curves.png" in figures


def _check_summary(out: str) -> None:
  """--mode=summary's parameter table, then the train step's memory per
  device (one CPU device here) and the batch."""
  assert "parameters" in out
  assert ("train step memory per device (XLA memory analysis, cpu backend, "
          "1 device") in out
  for name in ("arguments", "outputs", "aliased", "temporaries", "total"):
    assert re.search(rf"^  {name} +[0-9.]+ MiB", out, re.M), name
  assert re.search(r"batch: global \d+, per device \d+ \(1 device\)", out)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["folder", "texture_mosaic", "suim",
                                      "pannuke", "cityscapes"])
def test_readme_dataset_journeys(scenario, tmp_path, entry_points):
  """Your own folder, the photo-texture benchmark and the paper's datasets,
  from their real formats."""
  tmp = str(tmp_path)
  raw = f"{tmp}/raw"
  if scenario == "folder":
    write_folder(f"{raw}/my_data")
  elif scenario == "suim":  # Halved, these sizes are no multiple of 4.
    paper_fixtures.write_suim(f"{raw}/suim", size=(218, 150))
  elif scenario == "pannuke":
    paper_fixtures.write_pannuke(f"{raw}/pannuke", n=3, size=64)
  elif scenario == "cityscapes":
    paper_fixtures.write_cityscapes(f"{raw}/cityscapes", extra=True)
  # texture_mosaic: generated from images inside scikit-image, no raw files.
  commands = _commands(scenario)
  assert commands
  run = readme_runner(tmp, entry_points)
  for command in commands:
    run(command)
  trained = [c for c in commands if "coarseseg_jax.main" in c]
  for command in trained:
    for old, new in _substitutions(tmp):
      command = command.replace(old, new)
    workdir = re.search(r"--workdir=([^\s\"]+)", command).group(1)
    results = _results(workdir)
    assert results["test"]["num_images"] >= 1
    assert os.listdir(os.path.join(workdir, "figures"))


def _tiny_model(config):
  """`config.model` with TINY_MODEL's overrides (what `_tiny` appends)."""
  config.update_from_flattened_dict({
      arg.split("=")[0][len("--config."):]: ast.literal_eval(
          arg.split("=")[1]) for arg in TINY_MODEL})
  return config.model


@pytest.mark.slow
def test_readme_scores_the_authors_weights_on_a_fresh_machine(tmp_path,
                                                               entry_points):
  """The scoring command on the SUIM download's format and an authors'
  state dict, with nothing prepared: it prepares the dataset, scores the
  weights; `prepare --config` then finds exactly that dataset prepared. The
  state dict of another model: one line naming what does not fit."""
  tmp = str(tmp_path)
  raw = paper_fixtures.write_suim(f"{tmp}/raw/suim", size=(80, 64))
  model = _tiny_model(suim.get_config())
  np.savez(f"{tmp}/raw/weights_1.npz",
           **paper_fixtures.authors_state_dict(model))
  commands = _commands("authors_weights")
  score = [c for c in commands if "--checkpoint=pretrained" in c]
  prepare = [c for c in commands if "prepare --config=" in c]
  assert len(score) == 1 and len(prepare) == 1
  assert not os.path.exists(f"{tmp}/data")
  run = readme_runner(tmp, entry_points)
  run(score[0])
  with open(f"{tmp}/workdirs/suim_authors/eval_test.json") as f:
    result = json.load(f)
  assert result["step"] == 0
  assert result["test"]["num_images"] == len(raw["TEST"])
  assert 0 <= result["test"]["accuracy_mean"] <= 1
  assert not os.path.exists(f"{tmp}/workdirs/suim_authors/checkpoints")
  proc = run(prepare[0])
  assert "already prepared" in proc.stdout, proc.stdout
  weights = f"{tmp}/raw/weights_1.npz"
  state_dict = paper_fixtures.authors_state_dict(model)
  del state_dict["classifier.4.bias"]
  np.savez(weights, **state_dict)
  proc = run(score[0], check=False)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: config.model.pretrained={weights}:"), last
  assert "missing keys (1): classifier.4.bias" in last


@pytest.mark.slow
def test_readme_prepare_and_experiment_commands(tmp_path, entry_points):
  """The prepare and experiment commands, and what the experiments write:
  this is the end-to-end test of coarse validation, the coarseness and
  similarity sweeps, the budget experiment and the runner on a folder (the
  main table's is test_experiments' --quick chain, which also runs the
  experiments' command line in processes of its own). Each entry point's
  commands share one process (`readme_runner`: the start-ups and the
  programs of equal configs are paid once)."""
  tmp = str(tmp_path)
  out, root = f"{tmp}/results", f"{tmp}/workdirs/experiments/synthetic"
  write_folder(f"{tmp}/raw/my_data")
  commands = _commands("experiments")
  assert [c for c in commands if "--config=" in c] == [
      c for c in commands if "configs/folder.py" in c]
  run = readme_runner(tmp, entry_points)
  for command in _commands("synthetic_prepare") + commands:
    run(command)
    if "--validation_labels=both" in command:
      _check_validation_labels(out, root)
    elif "--experiment=coarseness" in command:
      _check_coarseness(out, f"{tmp}/data")
    elif "--experiment=similarity" in command:
      _check_similarity(out)
    elif "--experiment=budget" in command:
      dataset = ("texture_mosaic" if "--dataset=texture_mosaic" in command
                 else "synthetic")
      _check_budget(out, dataset, f"{tmp}/workdirs/experiments/{dataset}",
                    lambda c=command: run(c))
    elif "--config=" in command:
      _check_folder_experiment(out, tmp, run)


def _csv(path: str) -> List[dict]:
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def _check_validation_labels(out: str, root: str) -> None:
  """--validation_labels=both: the same training validated on fine and on
  coarse labels. One validation per run (1 epoch), so both keep the same
  checkpoint: equal test figures, different validation figures, and the
  cost table's difference is zero."""
  with open(f"{out}/synthetic_main_runs.json") as f:
    runs = json.load(f)
  seeds = methods.report_seeds(1)
  assert runs["validation_labels"] == ["fine", "coarse"]
  assert runs["trained"] == 2 * len(seeds)  # hcfcn, each validation.
  for seed in seeds:
    path = os.path.join("hcfcn", "ce", f"seed{seed}", "results.json")
    fine, coarse = (_json(os.path.join(root, run, path))
                    for run in ("main_quick", "main_quick_coarseval"))
    assert coarse["config"]["data"]["validation_labels"] == "coarse"
    assert fine["config"]["data"]["validation_labels"] == "fine"
    assert coarse["test"]["accuracy_mean"] == pytest.approx(
        fine["test"]["accuracy_mean"], abs=1e-6)
    assert coarse["validation"]["num_images"] == (
        fine["validation"]["num_images"])
    assert coarse["validation"]["accuracy_mean"] != pytest.approx(
        fine["validation"]["accuracy_mean"], abs=1e-6)
  rows = _csv(f"{out}/synthetic_coarseval_main_seeds.csv")
  assert {r["validation_labels"] for r in rows} == {"coarse"}
  assert os.path.exists(f"{out}/synthetic_coarseval_coarse.md")
  cost = _csv(f"{out}/synthetic_validation_labels.csv")
  assert list(cost[0])[:3] == ["method", "param_coarse", "param_fine"]
  assert {r["method"] for r in cost} == {"hcfcn"}
  for row in cost:  # Identical test figures: a zero difference.
    assert float(row["mean_diff"]) == pytest.approx(0.0, abs=1e-6)
  with open(f"{out}/synthetic_validation_labels.md") as f:
    assert "TOST" in f.read()


def _json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def _text(path: str) -> str:
  with open(path) as f:
    return f.read()


def _check_coarseness(out: str, data_dir: str) -> None:
  kernels = list(methods.QUICK.kernels)
  rows = _csv(f"{out}/synthetic_coarseness.csv")
  assert [(r["method"], int(r["kernel"])) for r in rows] == [
      (m, k) for k in kernels for m in ("hcfcn", "hcfcn_slic")]
  image = np.asarray(Image.open(f"{out}/synthetic_coarseness.png"))
  assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300
  with open(f"{out}/synthetic_coarseness.md") as f:
    note = f.read()
  assert f"Coarse kernels {kernels}" in note
  # The sweep overrides the base config's kernel: its note must not name it.
  assert "coarse kernel " not in note and "classes; model" in note
  made = os.listdir(f"{data_dir}/coarseseg_synthetic")
  for kernel in kernels:  # One prepared dataset per kernel.
    assert any(d.startswith(f"k{kernel}_") for d in made), (kernel, made)


def _check_similarity(out: str) -> None:
  rows = _csv(f"{out}/synthetic_similarity.csv")
  assert [r["option"] for r in rows] == ["dot", "cosine"]
  for row in rows:  # Validation figures and the assignments' diagnostics.
    assert 0 <= float(row["accuracy_mean"]) <= 1
    assert 0 <= float(row["a4_entropy_mean"]) <= np.log(9) + 1e-6
  selected = max(rows, key=lambda r: float(r["accuracy_mean"]))
  assert [r["selected"] for r in rows].count("1") == 1
  assert selected["selected"] == "1"
  with open(f"{out}/synthetic_similarity.md") as f:
    note = f.read()
  assert "VALIDATION" in note
  # Each row's similarity is its option's, not the base config's.
  assert "), similarity " not in note


def _check_budget(out: str, dataset: str, root: str, rerun) -> None:
  """hcfcn at each quick budget on the first selection seed, cheapest budget
  first, each run's cosine schedule as long as the run; the table recomputes
  from its seed rows and names the budget its rule picks; with the workdirs
  gone, `rerun` (the same command) restores every run from the archive and
  writes the same files. `dataset` is the generated dataset of the command
  (`--dataset`), at --quick's sizes; its runs are under `root`."""
  root, out = f"{root}/budget_quick", f"{out}/{dataset}"
  budgets = methods.QUICK.budgets
  with open(f"{out}_budget_runs.json") as f:
    runs = json.load(f)
  assert runs["trained"] == len(runs["runs"]) == len(budgets)
  assert runs["seeds"] == [methods.SELECTION_SEED]
  for record, epochs in zip(runs["runs"], budgets):
    assert os.path.relpath(record["workdir"], root) == os.path.join(
        "hcfcn", methods.param_name({**methods.budget_params(
            "hcfcn", methods.QUICK), "epochs": epochs}),
        f"seed{methods.SELECTION_SEED}")
    config = _json(os.path.join(record["workdir"], "config.json"))
    assert config["data"]["dataset"] == dataset
    assert config["data"]["builder_kwargs"]["image_size"] == (
        methods.QUICK_SYNTHETIC["data.builder_kwargs.image_size"])
    train = config["train"]
    assert (train["num_epochs"], train["lr_schedule"],
            train["warmup_steps"]) == (epochs, "warmup_cosine", 0)
    assert f"--config.train.num_epochs={epochs}" in record["command"]
  rows = _csv(f"{out}_budget.csv")
  assert [(r["method"], int(r["epochs"])) for r in rows] == [
      ("hcfcn", e) for e in budgets]
  assert [r["chosen"] for r in rows].count("1") == 1
  chosen = [int(r["epochs"]) for r in rows if r["chosen"] == "1"][0]
  seed_rows = tables.read_seeds(f"{out}_budget_seeds.csv")
  assert {r["seed"] for r in seed_rows} == {methods.SELECTION_SEED}
  assert not any(k.startswith("test_") for k in seed_rows[0])
  written = {name: _text(f"{out}{name}") for name in (
      "_budget.csv", "_budget_seeds.csv", "_budget.md")}
  summary, _, overall = tables.budget_tables(seed_rows)
  assert tables.csv_text(summary, tables.BUDGET_COLUMNS) == written[
      "_budget.csv"]
  markdown = written["_budget.md"]
  assert overall == chosen
  assert f"**Chosen budget: {chosen} epochs.**" in markdown
  assert report.budget_rule("accuracy", 0.01) in markdown
  assert "VALIDATION" in markdown and " epochs, batch" not in markdown
  image = np.asarray(Image.open(f"{out}_budget.png"))
  assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 300
  # Another machine: only the archive; nothing trains, the same files.
  shutil.rmtree(root)
  rerun()
  with open(f"{out}_budget_runs.json") as f:
    assert {r["status"] for r in json.load(f)["runs"]} == {"restored"}
  assert {name: _text(f"{out}{name}") for name in written} == written


def _check_folder_experiment(out: str, tmp: str, run) -> None:
  """The runner on the user's folder; a cell's command reruns it alone."""
  with open(f"{out}/folder-my_data_main_runs.json") as f:
    runs = json.load(f)
  assert runs["dataset"] == "folder-my_data" and runs["trained"] == 1
  assert [r["method"] for r in _csv(f"{out}/folder-my_data_coarse.csv")] == [
      "hcfcn"]
  command = runs["runs"][0]["command"]
  assert "--config=" in command and "folder.py" in command
  assert f"--config.data.manual_dir={tmp}/raw/my_data" in command
  assert "--config.model.width=8" in command  # --quick's sizes.
  # The same run: main finds it finished and only re-tests it.
  proc = run(command, as_written=True)
  assert "holds a run with another config" not in proc.stderr
