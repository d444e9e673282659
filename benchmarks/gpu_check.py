r"""The device check, prepared for a session with a GPU (or TPU): one script.

  python benchmarks/gpu_check.py --out=gpu_check          # 512x512, batch 8
  python benchmarks/gpu_check.py --quick --out=/tmp/gc    # CPU, a minute or two

For float32 and bfloat16 in turn, on whatever device JAX finds:

* the train step (`train_step.py`'s `build`: HCFCN-16 with DCN, lambda 0.05,
  and `hcfcn0`, lambda 0, for the regularizer's overhead): compile time,
  XLA's memory analysis of the compiled step (per device), the device's
  peak memory in use so far in the process (`Device.memory_stats()`,
  GPU/TPU only; cumulative: run `--dtypes=bfloat16` alone for bfloat16's
  own peak), the median
  step time of --steps steps (each variant's steps timed in turn,
  `timing.py`) and images/s;
* the device's busy share: a `jax.profiler` trace of --profile_steps steps
  of the regularized step; the union of the intervals in which an XLA op of
  the step runs on the device (GPU/TPU: kernel events on the device's
  lanes; CPU: the thunks on the host threads), over the wall time of the
  profiled steps. Below 1: the device waits (for the host, launches,
  transfers);
* the models benchmark (`models.py`'s `bench_model`: forward + backward of
  `hcfcn` and `fcn` without the optimizer): compile time, step time,
  memory.

Writes `<out>/gpu_check.json` (every figure) and `<out>/gpu_check.md` (the
tables for benchmarks/README.md), and keeps the traces under `<out>/trace_*`
(TensorBoard's profile plugin or Perfetto opens them). `--quick` (64x64,
narrow models, 3 steps) proves the script on CPU; its figures mean nothing.
Budget on a device: about 8 compilations (20-60 s each on a GPU) and a few
dozen steps; `--variants` and `--models` trim it.
"""

import argparse
import collections
import importlib.util
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train_step  # pylint: disable=g-bad-import-order  (sets XLA flags first)
import timing  # pylint: disable=g-bad-import-order

import jax  # pylint: disable=g-import-not-at-top

from coarseseg_jax import host  # pylint: disable=g-import-not-at-top
from coarseseg_jax import sharding  # pylint: disable=g-import-not-at-top


def _bench_models_module():
  """benchmarks/models.py, imported under another name (it is no package)."""
  spec = importlib.util.spec_from_file_location(
      "bench_models", os.path.join(HERE, "models.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def step_args(args, dtype):
  """The namespace `train_step.build` reads (its command-line flags)."""
  return argparse.Namespace(
      quick=args.quick, batch_size=args.batch_size, size=args.size,
      steps=args.steps, warmup=args.warmup, lmbda=0.05, kappa=0.0,
      num_segments=512, dtype=dtype, deformable=1)


def memory_figures(compiled):
  """XLA's memory analysis of a compiled program, MiB (None if absent)."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if m is None:
    return None
  mib = lambda b: round(b / 2**20, 1)
  return {"arguments_mib": mib(m.argument_size_in_bytes),
          "outputs_mib": mib(m.output_size_in_bytes),
          "aliased_mib": mib(m.alias_size_in_bytes),
          "temporaries_mib": mib(m.temp_size_in_bytes),
          "total_mib": mib(m.argument_size_in_bytes + m.output_size_in_bytes
                           - m.alias_size_in_bytes + m.temp_size_in_bytes)}


def device_peak_mib():
  """Peak bytes in use on device 0 (MiB), None where not reported (CPU)."""
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # pylint: disable=broad-except
    return None
  peak = stats.get("peak_bytes_in_use")
  return None if peak is None else round(peak / 2**20, 1)


def _union_us(intervals):
  """Total length of the union of (start, end) intervals."""
  total, end = 0.0, None
  for t0, t1 in sorted(intervals):
    if end is None or t0 > end:
      total += t1 - t0
      end = t1
    elif t1 > end:
      total += t1 - end
      end = t1
  return total


def busy_share(events, wall_us):
  """(share, busy ms, lanes used) of a trace: the union of the op events'
  intervals over `wall_us`.

  On a device (processes named /device:GPU or /device:TPU) only the lanes
  that hold single ops count: GPU streams ("Stream #..."), TPU "XLA Ops";
  lanes of whole modules or steps would cover the gaps between kernels. A
  device trace without such lanes uses all its lanes but "XLA Modules" and
  "Steps". Without a device (CPU) every event naming an `hlo_op` counts
  (XLA:CPU's thunks on the host's threads).
  """
  procs, lanes = {}, {}
  for e in events:
    if e.get("ph") == "M" and e.get("name") == "process_name":
      procs[e.get("pid")] = (e.get("args") or {}).get("name", "")
    elif e.get("ph") == "M" and e.get("name") == "thread_name":
      lanes[(e.get("pid"), e.get("tid"))] = (e.get("args") or {}).get(
          "name", "")
  device_pids = {pid for pid, name in procs.items()
                 if "/device:GPU" in name or "/device:TPU" in name}
  ops = [e for e in events if e.get("ph") == "X" and "dur" in e]
  if device_pids:
    ops = [e for e in ops if e.get("pid") in device_pids]
    lane = lambda e: lanes.get((e.get("pid"), e.get("tid")), "")
    single = [e for e in ops if "Stream" in lane(e) or "XLA Ops" in lane(e)]
    ops = single or [e for e in ops
                     if lane(e) not in ("XLA Modules", "Steps")]
  else:
    ops = [e for e in ops if "hlo_op" in (e.get("args") or {})]
  used = collections.Counter(
      f"{procs.get(e.get('pid'), e.get('pid'))}"
      + (f" / {lanes[(e.get('pid'), e.get('tid'))]}" if device_pids and (
          e.get("pid"), e.get("tid")) in lanes else "") for e in ops)
  busy = _union_us([(float(e["ts"]), float(e["ts"]) + float(e["dur"]))
                    for e in ops])
  where = ", ".join(sorted(used)[:8]) or "no op events"
  return (round(busy / wall_us, 3) if wall_us and ops else None,
          round(busy / 1e3, 1), where)


def profile(step_fn, steps, log_dir):
  """Runs `steps` calls of `step_fn()` under jax.profiler; (share, busy ms,
  wall ms per step, where)."""
  with jax.profiler.trace(log_dir, create_perfetto_trace=True):
    wall = timing.mean_seconds(step_fn, steps) * steps
  share, busy_ms, where = busy_share(timing.load_trace(log_dir), wall * 1e6)
  return {"busy_share": share, "busy_ms_per_step": round(busy_ms / steps, 1),
          "wall_ms_per_step": round(wall * 1e3 / steps, 1),
          "trace_dir": log_dir, "op_events_from": where}


def train_step_figures(args, dtype, mesh, out_dir):
  """The train-step variants of one dtype (see the module docstring)."""
  sargs = step_args(args, dtype)
  prepared, memory = {}, {}
  for key in args.variants.split(","):
    name, lmbda, kappa = train_step.variant(key, sargs)
    compiled, state, batch, compile_s = train_step.build(
        name, lmbda, kappa, sargs, mesh)
    memory[key] = memory_figures(compiled)
    prepared[key] = (train_step.warmed_up(compiled, state, batch,
                                          sargs.warmup),
                     {"model": name, "lmbda": lmbda,
                      "compile_s": round(compile_s, 2)})
    print(f"  {dtype} {key}: compiled in {compile_s:.1f} s", flush=True)
  rows = timing.time_round_robin(prepared, args.steps, args.batch_size)
  for key, row in rows.items():
    row["memory"] = memory[key]
  first = args.variants.split(",")[0]
  rows[first]["profile"] = profile(
      prepared[first][0], args.profile_steps,
      os.path.join(out_dir, f"trace_{dtype}_{first}"))
  if "hcfcn" in rows and "hcfcn0" in rows:
    rows["hcfcn"]["regularizer_overhead"] = round(
        rows["hcfcn"]["step_s"] / rows["hcfcn0"]["step_s"] - 1, 4)
  return rows


def model_figures(args, dtype, bench_models):
  margs = argparse.Namespace(quick=args.quick, batch_size=args.batch_size,
                             size=args.size, steps=args.steps, dtype=dtype,
                             plain=False)
  out = {}
  for name in args.models.split(","):
    if name:
      out[name] = bench_models.bench_model(name, margs)
      print(f"  {dtype} model {name}: {out[name]['step_s']} s fwd+bwd",
            flush=True)
  return out


def markdown(result) -> str:
  """The figures as markdown tables."""
  lines = [f"Device: {result['device_kind']} ({result['backend']}, "
           f"{result['devices']} device(s)); jax {result['jax']}; batch "
           f"{result['batch_size']}, {result['size']}x{result['size']}"
           + ("; --quick (figures meaningless)" if result["quick"] else ""),
           "", "| dtype | step | compile s | s / step | images/s | XLA total "
           "MiB | temporaries MiB | device peak MiB | busy share |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  for dtype, r in result["dtypes"].items():
    for key, row in r["train_step"].items():
      mem = row.get("memory") or {}
      busy = (row.get("profile") or {}).get("busy_share")
      lines.append(
          f"| {dtype} | {key} (lambda {row['lmbda']}) | {row['compile_s']} | "
          f"{row['step_s']:.4f} | {row['images_per_s']} | "
          f"{mem.get('total_mib', '')} | {mem.get('temporaries_mib', '')} | "
          f"{r.get('device_peak_mib') or ''} | "
          f"{'' if busy is None else busy} |")
  lines += ["", "| dtype | model (fwd+bwd) | compile s | s / step | images/s "
            "| memory MiB |", "|---|---|---:|---:|---:|---:|"]
  for dtype, r in result["dtypes"].items():
    for name, row in r["models"].items():
      lines.append(f"| {dtype} | {name} | {row['compile_s']} | "
                   f"{row['step_s']} | {row['images_per_s']} | "
                   f"{row['memory_mib']} |")
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="64x64, narrow models, 3 steps: proves the script")
  parser.add_argument("--out", default="")
  parser.add_argument("--dtypes", default="float32,bfloat16")
  parser.add_argument("--variants", default="hcfcn,hcfcn0",
                      help="train_step.py's keys; the first is profiled")
  parser.add_argument("--models", default="hcfcn,fcn")
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--size", type=int, default=512)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--profile_steps", type=int, default=5)
  args = parser.parse_args()
  if args.quick:
    args.size, args.steps, args.warmup, args.profile_steps = 64, 3, 1, 2
  out_dir = args.out or tempfile.mkdtemp(prefix="gpu_check_")
  os.makedirs(out_dir, exist_ok=True)
  mesh = sharding.make_mesh()
  bench_models = _bench_models_module()
  result = {"benchmark": "gpu_check", "backend": jax.default_backend(),
            "device_kind": jax.devices()[0].device_kind,
            "devices": jax.device_count(), "jax": jax.__version__,
            "machine": host.processor(),
            "cpus": os.cpu_count(), "batch_size": args.batch_size,
            "size": args.size, "quick": args.quick,
            "xla_flags": os.environ.get("XLA_FLAGS", ""), "dtypes": {}}
  watch = timing.Stopwatch()
  for dtype in args.dtypes.split(","):
    print(f"{dtype}:", flush=True)
    r = {"train_step": train_step_figures(args, dtype, mesh, out_dir)}
    r["device_peak_mib"] = device_peak_mib()
    r["models"] = model_figures(args, dtype, bench_models)
    result["dtypes"][dtype] = r
  result["seconds"] = round(watch.seconds(), 1)
  with open(os.path.join(out_dir, "gpu_check.json"), "w") as f:
    json.dump(result, f, indent=1)
  table = markdown(result)
  with open(os.path.join(out_dir, "gpu_check.md"), "w") as f:
    f.write(table)
  print(table)
  print(f"wrote {out_dir}/gpu_check.json and gpu_check.md "
        f"({result['seconds']} s)")
  print(json.dumps(result))


if __name__ == "__main__":
  main()
