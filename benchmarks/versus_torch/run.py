r"""The CPU train step against PyTorch: one entry point for its six scripts.

  python benchmarks/versus_torch/run.py --what=step [--quick]  # the answer
  python benchmarks/versus_torch/run.py --what=convs --quick   # per convolution
  python benchmarks/versus_torch/run.py --what=step --help     # its flags
  python benchmarks/versus_torch/run.py --help                 # this list

`--what` picks the script; every other flag goes to it, and it runs as if
started as ``python benchmarks/versus_torch/<script>.py ...`` (its last line
is one JSON object). Sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment
has a value: PyTorch's spinning OpenMP threads otherwise make a step on a
shared machine up to 35x slower (benchmarks/README.md, "Findings"). Run from
the repository root with the project's venv; torch (the ``torch`` extra) is
needed by step, torch and convs. benchmarks/README.md, "The PyTorch
comparison", says which question each answers and what the figures were.
"""

import argparse
import os
import runpy
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))

# --what -> (script in this folder, what it answers).
SCRIPTS = {
    "step": ("versus_torch.py",
             "the JAX and PyTorch train steps built in one process and timed "
             "in turn: the JAX / PyTorch ratios, the regularizer's overhead"),
    "torch": ("torch_reference.py",
              "the PyTorch step alone (hcfcn without DCN): settings 'authors' "
              "(the paper's code) and 'fast' (a careful eager port)"),
    "convs": ("convs_versus_torch.py",
              "each encoder convolution (forward, input and weight gradient) "
              "and the whole encoder in JAX and PyTorch, in turn"),
    "xla_options": ("xla_options.py",
                    "the JAX step under XLA debug options or config "
                    "overrides, checked against the first and timed in turn"),
    "profile": ("profile_step.py",
                "where the JAX step's time goes: a jax.profiler per-op "
                "profile summed per category"),
    "max_pool": ("max_pool.py",
                 "the stem's max-pool (models/pooling.py) against flax's, "
                 "forward and forward+backward"),
}


def main():
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n")[0], add_help=False,
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="--what:\n" + "\n".join(
          textwrap.fill(f"{key:12s} {script}: {what}", 79,
                        initial_indent="  ", subsequent_indent=" " * 15)
          for key, (script, what) in SCRIPTS.items()))
  parser.add_argument("--what", choices=sorted(SCRIPTS))
  parser.add_argument("-h", "--help", action="store_true")
  args, rest = parser.parse_known_args()
  if args.what is None:
    parser.print_help()
    sys.exit(0 if args.help else 2)
  script = os.path.join(HERE, SCRIPTS[args.what][0])
  os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  sys.argv = [script] + rest + (["--help"] if args.help else [])
  runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
  main()
