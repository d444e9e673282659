"""coarseseg_jax.host: the machine line of tables and benchmark records."""

from coarseseg_jax import host


def test_processor_names_the_model_and_its_vector_extension(tmp_path):
  # Hosts that all call themselves "AMD EPYC" differ in step time and in
  # trained numbers, so the tables' machine line says which one ran them.
  def described(flags):
    path = tmp_path / "cpuinfo"
    path.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n"
        f"model\t\t: 17\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu {flags}"
        "\n\nprocessor\t: 1\nmodel name\t: other\n")
    return host.processor(str(path))

  assert described("avx avx2 avx512f").startswith("AMD EPYC 9R14 (")
  assert described("avx avx2 avx512f").endswith(
      "family 25, model 17, AVX-512)")
  assert described("avx avx2").endswith("model 17, AVX2)")
  assert described("sse2").endswith("model 17)")
  assert host.processor(str(tmp_path / "missing"))


def test_cores_says_when_the_process_is_pinned_to_fewer(monkeypatch):
  monkeypatch.setattr(host.os, "cpu_count", lambda: 2)
  monkeypatch.setattr(host.os, "sched_getaffinity", lambda pid: {0, 1},
                      raising=False)
  assert host.cores() == "2 CPU cores"
  monkeypatch.setattr(host.os, "sched_getaffinity", lambda pid: {1},
                      raising=False)
  assert host.cores() == "1 of 2 CPU cores"
  assert host.machine().endswith(("on cpu", "on gpu", "on tpu"))
  assert ", 1 of 2 CPU cores, JAX " in host.machine()
