r"""Where the train step's time goes: a measured per-op profile by category.

  python benchmarks/versus_torch/profile_step.py  # hcfcn, no DCN, batch 8, 256
  python benchmarks/versus_torch/profile_step.py --quick  # under a minute
  python benchmarks/versus_torch/run.py --what=profile --deformable=1 --top=30

Compiles the same train step as train_step.py (`train_step.build`), runs
--warmup steps, then records --steps steps with `jax.profiler` (perfetto trace)
and sums the duration of every XLA op (one trace event per executed HLO
instruction: a thunk on CPU, a kernel on GPU/TPU) per category. Each op is
categorised from the optimised HLO (`compiled.as_text()`): its opcode, the
opcodes inside a fusion, and the metadata of its instructions (the JAX op
name, e.g. ``jvp(HCFCN)/encoder/layer1_0/bn1/...``, ``transpose(...)`` for
the backward pass, and the Python stack, e.g. ``superpixels.py:_up_impl``).
First match wins:

  conv fwd / conv bwd (input) / conv bwd (weight): a convolution (or a dot
    from a 1x1 conv); weight grads are the convolutions whose window is
    larger than their output (no metadata survives on those);
  SLIC loss: under losses.slic_loss (reconstruct, Lab), forward and backward;
  superpixel decoder: other superpixels.py code (assign, upsample) and hcfcn's
    similarity projections' non-conv parts;
  batch norm: a BatchNorm module (``bn`` in the path, flax normalization);
  cross-entropy: losses.cross_entropy;
  optimizer update: optax, and the step's bookkeeping outside the gradient;
  transposes / copies: only data movement (transpose, copy, pad, slice, ...);
  other: the rest (ReLU, residual adds, max-pool, bilinear resize, ...).

Times are ms per step, see `attribute`: an op runs from the start of its
trace event to the end of the event or, if later, to the start of its first
consumer (XLA:CPU's convolutions finish asynchronously, after their event);
time when several ops run at once is split among them, so the categories add
up to the step's time with ops in flight (printed with the step's wall time).
The last line is one JSON object.
"""

import argparse
import collections
import json
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))  # benchmarks/versus_torch
BENCHMARKS = os.path.dirname(HERE)  # timing.py, train_step.py
sys.path.insert(0, BENCHMARKS)
import train_step  # pylint: disable=g-bad-import-order  (sets XLA flags first)
import timing  # pylint: disable=g-bad-import-order

import jax  # pylint: disable=g-import-not-at-top

from coarseseg_jax import sharding  # pylint: disable=g-import-not-at-top

CATEGORIES = ("conv fwd", "conv bwd (input)", "conv bwd (weight)",
              "SLIC loss", "superpixel decoder", "batch norm", "cross-entropy",
              "optimizer update", "transposes / copies", "other")
MOVES = {"transpose", "copy", "bitcast", "reshape", "broadcast", "parameter",
         "constant", "slice", "concatenate", "pad", "dynamic-slice",
         "dynamic-update-slice", "tuple", "get-tuple-element", "copy-start",
         "copy-done", "reverse", "iota"}
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.+?) ([\w\-]+)\((.*)$")
_COMP = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{$")


def parse_hlo(text):
  """{instruction: info} of an HLO module's text; info has opcode, op_name,
  frames (file:function of the stack), shape, window, calls."""
  tables = collections.defaultdict(dict)
  section, comps, comp = None, collections.defaultdict(list), None
  instrs = {}
  for line in text.splitlines():
    if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
      section = line
      continue
    if section and re.match(r"^\d+ ", line):
      key, val = line.split(" ", 1)
      tables[section][int(key)] = val
      continue
    section = None
    m = _COMP.match(line)
    if m:
      comp = m.group(1)
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    name, shape, opcode, rest = m.groups()
    op_name = re.search(r'op_name="([^"]*)"', rest)
    frame = re.search(r"stack_frame_id=(\d+)", rest)
    window = re.search(r"window=\{size=([\dx]+)", rest)
    calls = re.findall(r"(?:calls|to_apply|body|condition)=%([\w.\-]+)", rest)
    operands = re.findall(r"%([\w.\-]+)", rest.split("), ")[0])
    instrs[name] = dict(opcode=opcode, shape=shape, comp=comp, calls=calls,
                        operands=operands,
                        op_name=op_name.group(1) if op_name else "",
                        frame=int(frame.group(1)) if frame else None,
                        window=window.group(1) if window else None)
    comps[comp].append(name)

  def frames(fid):
    out, seen = [], set()
    while fid and fid not in seen and fid in tables["StackFrames"]:
      seen.add(fid)
      m = re.search(r"file_location_id=(\d+) parent_frame_id=(\d+)",
                    tables["StackFrames"][fid])
      loc = tables["FileLocations"].get(int(m.group(1)), "")
      f = re.search(r"file_name_id=(\d+) function_name_id=(\d+)", loc)
      if f:
        out.append(os.path.basename(tables["FileNames"][int(f.group(1))]
                                    .strip('"')) + ":" +
                   tables["FunctionNames"][int(f.group(2))].strip('"'))
      fid = int(m.group(2))
    return out

  for info in instrs.values():
    info["frames"] = frames(info["frame"])
  return instrs, comps


def _members(name, instrs, comps, depth=0):
  """The instruction and every instruction of the computations it calls."""
  out = [instrs[name]]
  for comp in instrs[name]["calls"]:
    for member in comps.get(comp, ()):
      if depth < 4:
        out += _members(member, instrs, comps, depth + 1)
  return out


def _numel(shape):
  dims = re.search(r"\[([\d,]*)\]", shape)
  n = 1
  for d in (dims.group(1).split(",") if dims and dims.group(1) else ()):
    n *= int(d)
  return n


def _conv_kind(ins):
  out_dims = re.search(r"\[([\d,]*)\]", ins["shape"]).group(1).split(",")
  if ins["window"]:
    window = 1
    for d in ins["window"].split("x"):
      window *= int(d)
    spatial = _numel(ins["shape"]) // (int(out_dims[0]) * int(out_dims[-1]))
    if window > spatial:
      return "conv bwd (weight)"
  elif len(out_dims) == 2 and "transpose(" in ins["op_name"]:
    return "conv bwd (weight)"  # A 1x1 conv's weight grad as a dot.
  return "conv bwd (input)" if "transpose(" in ins["op_name"] else "conv fwd"


def categorise(name, instrs, comps):
  members = [m for m in _members(name, instrs, comps)
             if m["opcode"] not in ("parameter", "constant")] or [instrs[name]]
  for m in members:
    if m["opcode"] == "convolution" or (
        m["opcode"] == "dot" and "conv_general_dilated" in m["op_name"]):
      return _conv_kind(m)
  frames = [f for m in members for f in m["frames"]]
  op_names = " ".join(m["op_name"] for m in members)
  if any(f.startswith(("losses.py:slic_loss", "color.py:")) for f in frames):
    return "SLIC loss"
  if any(f.startswith(("superpixels.py:", "hcfcn.py:_assign")) for f in frames):
    return "superpixel decoder"
  if (re.search(r"/(\w*_)?bn\d*/", op_names) or
      any(f.startswith("normalization.py:") for f in frames)):
    return "batch norm"
  if any(f.startswith("losses.py:cross_entropy") for f in frames):
    return "cross-entropy"
  if any("optax" in f or f.startswith(("state.py:", "transform.py:",
                                       "alias.py:")) for f in frames) or (
                                           op_names and "jvp(" not in op_names
                                           and any(f.startswith("train.py:")
                                                   for f in frames)):
    return "optimizer update"
  if all(m["opcode"] in MOVES or m["opcode"].endswith("fusion") and
         m["calls"] for m in members):
    return "transposes / copies"
  return "other"


def asynchronous(name, instrs, comps):
  return any(m["opcode"] in ("convolution", "dot", "custom-call")
             for m in _members(name, instrs, comps))


def attribute(events, module, instrs, comps, steps):
  """ms per step of each HLO op, from its trace events.

  A convolution's or dot's event can end before its work does (XLA:CPU runs
  them asynchronously on its thread pool), so such an op counts as running
  until its event ends or, if later, until the first of its consumers
  starts. Every
  instant of a step is split evenly among the ops running then, so the
  times add up to the time the step had ops in flight (no double counting
  of ops that run concurrently)."""
  consumers = collections.defaultdict(list)
  for name, info in instrs.items():
    for operand in info["operands"]:
      consumers[operand].append(name)
  runs = collections.defaultdict(dict)  # run_id -> op -> (start, end) in us.
  for e in events:
    a = e.get("args") or {}
    if e.get("ph") == "X" and a.get("hlo_module", module) == module and (
        a.get("hlo_op") in instrs):
      t0 = float(e["ts"])
      runs[a.get("run_id", "")][a["hlo_op"]] = (t0, t0 + float(e["dur"]))
  per_op = collections.Counter()
  for ops in runs.values():
    spans = []
    for op, (t0, t1) in ops.items():
      later = [ops[c][0] for c in consumers[op] if c in ops and ops[c][0] >= t0
               and asynchronous(op, instrs, comps)]
      spans.append((t0, max([t1] + ([min(later)] if later else [])), op))
    points = sorted({t for t0, t1, _ in spans for t in (t0, t1)})
    index = {t: i for i, t in enumerate(points)}
    active = collections.defaultdict(list)  # segment -> ops
    for t0, t1, op in spans:
      for i in range(index[t0], index[t1]):
        active[i].append(op)
    for i, running in active.items():
      share = (points[i + 1] - points[i]) / len(running) / 1e3 / steps
      for op in running:
        per_op[op] += share
  return per_op


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  train_step.add_step_flags(parser, steps=3, deformable=0)
  parser.add_argument("--model", default="hcfcn")
  parser.add_argument("--top", type=int, default=15, help="slowest ops shown")
  parser.add_argument("--trace_dir", default="")
  parser.add_argument("--from_trace", default="", help="a --trace_dir of an "
                      "earlier run: re-analyse it (same --steps) without "
                      "running anything")
  args = parser.parse_args()
  if args.quick:
    args.size = 64
  log_dir, wall, compile_s = args.from_trace, None, None
  if not log_dir:
    mesh = sharding.make_mesh()
    compiled, state, batch, compile_s = train_step.build(
        args.model, args.lmbda, args.kappa, args, mesh)
    step = train_step.warmed_up(compiled, state, batch, args.warmup)
    log_dir = args.trace_dir or tempfile.mkdtemp(prefix="profile_step_")
    with jax.profiler.trace(log_dir, create_perfetto_trace=True):
      wall = timing.mean_seconds(step, args.steps)
    with open(os.path.join(log_dir, "step.hlo.txt"), "w") as f:
      f.write(compiled.as_text())
  with open(os.path.join(log_dir, "step.hlo.txt")) as f:
    text = f.read()
  instrs, comps = parse_hlo(text)
  module = re.match(r"HloModule (\S+?),", text).group(1)
  per_op = attribute(timing.load_trace(log_dir), module, instrs, comps,
                     args.steps)
  if not per_op:
    raise RuntimeError("the trace holds no XLA op events of the step")
  cats = collections.Counter()
  count = collections.Counter()
  for op, ms in per_op.items():
    cat = categorise(op, instrs, comps)
    cats[cat] += ms
    count[cat] += 1
  total = sum(cats.values())
  print(f"{args.model} lambda {args.lmbda} deformable {args.deformable} "
        f"batch {args.batch_size} {args.size}x{args.size} {args.dtype} on "
        f"{jax.default_backend()} ({jax.devices()[0].device_kind}); load "
        f"{os.getloadavg()[0]:.2f}; profiled step wall "
        f"{f'{wall * 1e3:.0f} ms' if wall else '-'}, "
        f"op time {total:.0f} ms")
  print(f"| category | ms / step | share | ops |\n|---|---:|---:|---:|")
  for cat in CATEGORIES:
    print(f"| {cat} | {cats[cat]:.1f} | {100 * cats[cat] / total:.1f} % | "
          f"{count[cat]} |")
  print(f"\nslowest {args.top} ops (ms / step, category, opcode, op name):")
  for op, ms in per_op.most_common(args.top):
    ins = instrs[op]
    print(f"  {ms:8.2f}  {categorise(op, instrs, comps):20s} {op:32s} "
          f"{ins['opcode']:12s} {ins['op_name'][-70:]}")
  print(json.dumps({
      "benchmark": "profile_step", "backend": jax.default_backend(),
      "model": args.model, "lmbda": args.lmbda,
      "deformable": bool(args.deformable), "batch_size": args.batch_size,
      "size": args.size, "dtype": args.dtype, "quick": args.quick,
      "compile_s": compile_s and round(compile_s, 2),
      "step_wall_ms": wall and round(wall * 1e3, 1),
      "op_ms": round(total, 1), "load_avg": os.getloadavg()[0],
      "xla_flags": os.environ.get("XLA_FLAGS", ""), "trace_dir": log_dir,
      "categories_ms": {c: round(cats[c], 2) for c in CATEGORIES}}))


if __name__ == "__main__":
  main()
