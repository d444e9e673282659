r"""Soak test of interruptions: a tiny run killed many times must end equal.

  python benchmarks/reliability/soak_interrupt.py [--interruptions=15 --seed=0]
  python benchmarks/reliability/soak_interrupt.py --mode=corrupt [--runs=6]

Trains the tiny test config (tests/tiny_config.py: 64 px synthetic images,
a narrow HCFCN-16, 2 steps per epoch) for `--epochs` epochs with a checkpoint
every `--checkpoint_every` steps, once without interruption and once
interrupted `--interruptions` times with the command a user types, restarted
after each. Each interruption is a random signal (SIGKILL, SIGTERM, SIGINT) at
a random moment: a random number of steps into the run, or the moment a
checkpoint is being written (an `*orbax-checkpoint-tmp*` folder exists), or
during start-up. It reports, per interruption, the steps the process had
logged and the step the next start resumed from (the difference is lost
work), the exit status and how long the process took to exit, and at the end
whether the final parameters equal the uninterrupted run's (max abs diff).

With `--mode=corrupt` it soaks the restore of a damaged checkpoint instead
(issue 40): the tiny config trained `--corrupt_epochs` epochs (a checkpoint
every 2 steps), then `--runs` times: a copy of that workdir, the largest data
file of its newest checkpoint (`checkpoints/<step>/state/ocdbt.process_0/d/`)
truncated to half, and the same command with one epoch more, beside
`--load` busy-loop processes (a loaded machine). Each run must set the
checkpoint aside in one line, resume from the one before and exit 0; it
reports per run the exit status, the lines of output, and how many
"Exception ignored", "Traceback" and "Event loop is closed" reached it (a
flood: the array reads of the failed restore left pending).

Runs the code of `--code` (a checkout, default this one: its folder is the
subprocesses' working directory and PYTHONPATH), so the same file measures
an old checkout (the "before" figures):
`python benchmarks/reliability/soak_interrupt.py --code=/path/to/old`.
An opt-in reliability test, not a benchmark and not part of CI (it takes
10-20 minutes on 2 cores; `--mode=corrupt --runs=6`: 5-10 minutes).
"""

import argparse
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(BENCHMARKS)
sys.path.insert(0, BENCHMARKS)

import numpy as np  # pylint: disable=g-import-not-at-top,g-bad-import-order
import timing  # benchmarks/timing.py  # pylint: disable=g-import-not-at-top
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM,
           "SIGINT": signal.SIGINT}


def logged_steps(workdir: str) -> int:
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      return max((json.loads(l)["step"] for l in f if '"train"' in l),
                 default=0)
  except (OSError, ValueError):
    return 0


def writing_checkpoint(workdir: str) -> bool:
  return bool(glob.glob(os.path.join(workdir, "checkpoints", "*tmp*")))


def final_params(workdir: str):
  """The params of the newest checkpoint, as a flat list (no project API)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
  step = manager.latest_step()
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore()))
  state = restored.state
  params = state["params"] if isinstance(state, dict) else state.params
  import jax  # pylint: disable=g-import-not-at-top
  return step, [np.asarray(x) for x in jax.tree.leaves(params)]


# What reaches the output when a failed restore leaves array reads pending.
FLOOD = ("Exception ignored", "Traceback", "Event loop is closed")


def truncate_newest_checkpoint(workdir: str) -> str:
  """Truncates the largest data file of the newest checkpoint to half its
  size (a copy cut short); returns the checkpoint's folder."""
  root = os.path.join(workdir, "checkpoints")
  newest = os.path.join(root, str(max(int(d) for d in os.listdir(root)
                                      if d.isdigit())))
  data = os.path.join(newest, "state", "ocdbt.process_0", "d")
  path = max((os.path.join(data, f) for f in os.listdir(data)),
             key=os.path.getsize)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)
  return newest


def corrupt_soak(args, tmp, env, command):
  """`--mode=corrupt` (see the module docstring)."""
  base = args.trained or os.path.join(tmp, "trained")
  if not args.trained:
    watch = timing.Stopwatch()
    subprocess.run(command(base, args.corrupt_epochs, 2), cwd=args.code,
                   env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    print(f"trained: {watch.seconds():.0f} s, {logged_steps(base)} steps")
  rows = []
  for i in range(args.runs):
    workdir = os.path.join(tmp, f"run{i}")
    shutil.copytree(base, workdir)
    newest = truncate_newest_checkpoint(workdir)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.load)]
    try:
      watch = timing.Stopwatch()
      proc = subprocess.run(command(workdir, args.corrupt_epochs + 1, 2),
                            cwd=args.code, env=env, capture_output=True,
                            text=True)
    finally:
      for p in busy:
        p.kill()
        p.wait()
    out = proc.stdout + proc.stderr
    resumed = re.search(r"Resumed from step (\d+)", out)
    row = {"run": i, "status": proc.returncode,
           "seconds": round(watch.seconds(), 1),
           "lines": len(out.splitlines()),
           "set_aside": f"checkpoint {newest} does not restore" in out,
           "resumed_from": int(resumed.group(1)) if resumed else None,
           **{k: out.count(k) for k in FLOOD}}
    rows.append(row)
    print(json.dumps(row), flush=True)
    shutil.rmtree(workdir, ignore_errors=True)
  floods = [r for r in rows if any(r[k] for k in FLOOD)]
  print(f"summary: {len(rows)} runs beside {args.load} busy loops; flood in "
        f"{len(floods)} (" + ", ".join(
            f"{sum(r[k] for r in rows)} {k!r}" for k in FLOOD)
        + "); exit statuses " + str(sorted({r['status'] for r in rows}))
        + "; set aside in one line and resumed in "
        + str(sum(r["set_aside"] and r["resumed_from"] is not None
                  for r in rows)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--mode", choices=["interrupt", "corrupt"],
                      default="interrupt")
  parser.add_argument("--interruptions", type=int, default=15)
  parser.add_argument("--epochs", type=int, default=40)
  parser.add_argument("--checkpoint_every", type=int, default=4)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--runs", type=int, default=6,
                      help="--mode=corrupt: restarts on a damaged checkpoint")
  parser.add_argument("--corrupt_epochs", type=int, default=3,
                      help="--mode=corrupt: epochs (2 steps each) trained "
                      "before the newest checkpoint is damaged")
  parser.add_argument("--load", type=int, default=2,
                      help="--mode=corrupt: busy-loop processes beside each "
                      "run")
  parser.add_argument("--trained", default=None,
                      help="--mode=corrupt: a workdir this mode trained "
                      "before (its tmp's `trained`), copied, not trained")
  parser.add_argument("--code", default=ROOT,
                      help="the checkout whose code runs (default: this one)")
  parser.add_argument("--tmp", default=None)
  args = parser.parse_args()
  args.code = os.path.abspath(args.code)
  rng = random.Random(args.seed)
  tmp = args.tmp or tempfile.mkdtemp(prefix="soak_")
  env = dict(os.environ, COARSESEG_TEST_DATA_DIR=os.path.join(tmp, "data"),
             PYTHONUNBUFFERED="1", PYTHONPATH=args.code)
  env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tmp, "jax_cache"))

  def command(workdir, epochs=args.epochs, every=args.checkpoint_every):
    return [sys.executable, "-m", "coarseseg_jax.main",
            "--config=tests/tiny_config.py", f"--workdir={workdir}",
            f"--config.train.num_epochs={epochs}",
            f"--config.train.checkpoint_every_steps={every}",
            "--config.train.kappa=0.0"]

  if args.mode == "corrupt":
    corrupt_soak(args, tmp, env, command)
    if not args.tmp:
      shutil.rmtree(tmp, ignore_errors=True)
    return

  reference = os.path.join(tmp, "reference")
  watch = timing.Stopwatch()
  subprocess.run(command(reference), cwd=args.code, env=env, check=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  print(f"reference run: {watch.seconds():.0f} s, "
        f"{logged_steps(reference)} steps")

  workdir = os.path.join(tmp, "interrupted")
  rows, resumed_from = [], 0

  last_trained = [None]  # The row whose loss the next resume settles.

  def record_resume(rows, err):
    """Where this process resumed from settles the loss of the last process
    that trained; a process killed before it resumed (or started) settles
    nothing and lost nothing of its own. Returns the step, or None."""
    m = re.search(r"Resumed from step (\d+)", err)
    if m is None and "train:" not in err:
      rows[-1]["resumed_from"], rows[-1]["lost"] = None, 0
      return None
    resumed = int(m.group(1)) if m else 0
    i = last_trained[0]
    if i is not None:
      rows[i]["resumed_from"] = resumed
      rows[i]["lost"] = rows[i]["logged_at_exit"] - resumed
    last_trained[0] = len(rows) - 1
    return resumed

  for i in range(args.interruptions):
    name = rng.choice(sorted(SIGNALS))
    moment = rng.choice(["steps", "steps", "checkpoint", "startup"])
    target = logged_steps(workdir) + rng.randint(1, 6)
    proc = subprocess.Popen(command(workdir), cwd=args.code, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    running = timing.Stopwatch()
    while proc.poll() is None:
      if moment == "startup" and running.seconds() > rng.uniform(2, 8):
        break
      if moment == "steps" and logged_steps(workdir) >= target:
        break
      if (moment == "checkpoint" and logged_steps(workdir) > resumed_from
          and writing_checkpoint(workdir)):
        break
      time.sleep(0.01)
    if proc.poll() is not None:
      print(f"{i}: the run finished before the {moment} interruption")
      break
    before = logged_steps(workdir)
    sent = timing.Stopwatch()
    proc.send_signal(SIGNALS[name])
    _, err = proc.communicate()
    exit_s = sent.seconds()
    after = logged_steps(workdir)
    tail = [l for l in err.strip().splitlines() if l.strip()][-1:]
    rows.append({"signal": name, "moment": moment, "logged_at_signal": before,
                 "logged_at_exit": after, "status": proc.returncode,
                 "exit_s": round(exit_s, 2), "last_line": tail[0][:120]
                 if tail else "", "traceback": "Traceback" in err})
    resumed = record_resume(rows, err)
    resumed_from = resumed_from if resumed is None else resumed
    print(json.dumps(rows[-1]))

  watch = timing.Stopwatch()
  proc = subprocess.run(command(workdir), cwd=args.code, env=env,
                        capture_output=True, text=True)
  rows.append({"logged_at_exit": 0})
  record_resume(rows, proc.stderr)
  rows.pop()
  for row in rows:
    print(json.dumps(row))
  print(f"final run to the end: status {proc.returncode}, "
        f"{watch.seconds():.0f} s")
  step_ref, ref = final_params(reference)
  step_int, got = final_params(workdir)
  diff = max(float(np.abs(a - b).max()) for a, b in zip(ref, got))
  lost = [r["lost"] for r in rows if r.get("lost") is not None]
  print(f"summary: {len(rows)} interruptions, steps {step_int} vs "
        f"{step_ref}, max |param diff| {diff:.3g}; steps lost in total "
        f"{sum(lost)}, per signal: " + ", ".join(
            f"{s} {sum(r.get('lost') or 0 for r in rows if r['signal'] == s)} "
            f"over {sum(r['signal'] == s for r in rows)}"
            for s in sorted(SIGNALS)) + "; exit statuses "
        + str(sorted({r['status'] for r in rows})) + "; tracebacks "
        + str(sum(r["traceback"] for r in rows)))
  if not args.tmp:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
