r"""Start-up: time from the command to the first step and the first evaluation.

  python benchmarks/startup_time.py --quick          # tests/tiny_config.py
  python benchmarks/startup_time.py                  # configs/synthetic.py
  python benchmarks/startup_time.py --caches=off,workdir --max_steps=2

For each compilation-cache setting (`--caches`: `off` =
`--config.compilation_cache_dir=''`, `workdir` = the default,
`<workdir>/compilation_cache`) it runs, in a fresh workdir, the three
commands a user runs, each as its own process, as the README writes them:

  fresh:   train for `--max_steps` steps (`--config.train.log_every_steps=1`);
  resumed: the same command with twice the steps (it resumes);
  eval:    `--mode=eval --workdir=...`.

and reports, from the launch of each process: `first_step_s` (the first new
`train` record in metrics.jsonl, written once step 1 has run), `first_eval_s`
(the first new `validation` / `test` record, or for `eval` the end of the
command) and `total_s`, plus the compilations JAX logged (`JAX_LOG_COMPILES`:
programs compiled, cache hits, seconds compiling). The dataset is prepared
before the timed commands. `JAX_COMPILATION_CACHE_DIR` is removed from the
environment, so the config decides. The last line is one JSON object.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))  # benchmarks/: timing.py
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import timing  # pylint: disable=g-import-not-at-top,wrong-import-position
COMPILED = re.compile(r"Finished XLA compilation of (\S+) in ([0-9.]+) sec")
HIT = re.compile(r"Persistent compilation cache hit for '([^']+)'")


def _records(path):
  try:
    with open(path) as f:
      return [json.loads(line) for line in f if line.strip()]
  except (OSError, ValueError):
    return []


def timed(command, env, metrics_path, poll_s=0.05):
  """Runs `command`; seconds to its first new train / eval record and end."""
  before = len(_records(metrics_path))
  # Output to files, not pipes: a full pipe would stall the command.
  with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile(
      "w+") as err_f:
    launched = timing.Stopwatch()
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out_f,
                            stderr=err_f, text=True)
    first = {}
    while proc.poll() is None:
      for r in _records(metrics_path)[before:]:
        kind = "step" if r["split"] == "train" else "eval"
        first.setdefault(kind, launched.seconds())
      time.sleep(poll_s)
    total = launched.seconds()
    for r in _records(metrics_path)[before:]:  # Written as it ended.
      first.setdefault("step" if r["split"] == "train" else "eval", total)
    out_f.seek(0)
    err_f.seek(0)
    out, err = out_f.read(), err_f.read()
  if proc.returncode:
    raise SystemExit(f"{' '.join(command)} failed:\n{err[-3000:]}")
  compiled = [(m.group(1), float(m.group(2))) for m in COMPILED.finditer(err)]
  return {"first_step_s": round(first["step"], 1) if "step" in first else None,
          "first_eval_s": round(first.get("eval", total), 1),
          "total_s": round(total, 1),
          "programs": len(compiled),
          "cache_hits": len(HIT.findall(err)),
          "compile_s": round(sum(s for _, s in compiled), 1),
          "slowest": sorted(compiled, key=lambda c: -c[1])[:3],
          "stdout_tail": [l[:200] for l in out.strip().splitlines()[-1:]]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="tests/tiny_config.py instead of synthetic.py")
  parser.add_argument("--max_steps", type=int, default=2)
  parser.add_argument("--caches", default="off,workdir")
  parser.add_argument("--data_dir", default=None,
                      help="dataset dir (default: a temporary one)")
  parser.add_argument("--root", default=None,
                      help="where the workdirs go (default: temporary)")
  args = parser.parse_args()
  root = args.root or tempfile.mkdtemp(prefix="startup_")
  data_dir = args.data_dir or os.path.join(root, "data")
  config = ("tests/tiny_config.py" if args.quick else "configs/synthetic.py")
  env = dict(os.environ, JAX_LOG_COMPILES="1",
             COARSESEG_TEST_DATA_DIR=data_dir)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  base = [sys.executable, "-m", "coarseseg_jax.main"]
  common = [f"--config={config}", f"--config.data.data_dir={data_dir}",
            "--config.train.log_every_steps=1"]
  # Prepare the dataset first (not timed).
  subprocess.run([sys.executable, "-c", (
      "import runpy; from coarseseg_jax import config_validation, datasets; "
      f"c = runpy.run_path({config!r})['get_config'](); "
      f"c.data.data_dir = {data_dir!r}; "
      "c = config_validation.resolve(c, 'images').config; "
      "datasets.prepare(c.data, c.model.num_classes)")],
                 cwd=ROOT, env=env, check=True, capture_output=True)
  results = {}
  for cache in args.caches.split(","):
    workdir = os.path.join(root, f"cache_{cache}")
    setting = [] if cache == "workdir" else [
        "--config.compilation_cache_dir=" + ("" if cache == "off" else cache)]
    runs = {
        "fresh": base + common + setting + [
            f"--workdir={workdir}", f"--config.train.max_steps={args.max_steps}"],
        "resumed": base + common + setting + [
            f"--workdir={workdir}",
            f"--config.train.max_steps={2 * args.max_steps}"],
        # The workdir's config.json holds the cache setting.
        "eval": base + [f"--workdir={workdir}", "--mode=eval"],
    }
    for name, command in runs.items():
      r = timed(command, env, os.path.join(workdir, "metrics.jsonl"))
      results[f"{cache}/{name}"] = r
      print(f"{cache:8s} {name:8s} first step {r['first_step_s']} s, first "
            f"eval {r['first_eval_s']} s, total {r['total_s']} s; "
            f"{r['programs']} programs ({r['cache_hits']} from the cache), "
            f"{r['compile_s']} s compiling", flush=True)
  print(json.dumps({"benchmark": "startup_time", "config": config,
                    "max_steps": args.max_steps, "cpus": os.cpu_count(),
                    "load_avg": os.getloadavg(), "results": results}))


if __name__ == "__main__":
  main()
