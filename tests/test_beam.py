"""Preparation as an Apache Beam pipeline (DirectRunner) gives the same data.

Each paper dataset is built from its tiny fixture once the plain way and once
through TFDS's Beam support; the examples (sorted by id), the split sizes and
the coarse-label statistics (gathered from Beam counters) must be the same.
Needs the `beam` extra (`pip install .[beam]`).
"""

import os
import shutil

import apache_beam as beam
from apache_beam.options import pipeline_options
import ml_collections
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

import paper_fixtures as pf
from coarseseg_jax import datasets
from coarseseg_jax import errors

tfds.disable_progress_bar()
FIXTURES = {
    "suim": (lambda root: pf.write_suim(root, mismatched=("f_r_13_",)),
             dict(resize=0.5, num_validation=2)),
    "pannuke": (lambda root: pf.write_pannuke(root, n=2),
                {}),
    "cityscapes_coarse": (lambda root: pf.write_cityscapes(root, extra=True),
                          dict(image_width=64, image_height=32,
                               train_extra=True)),
}


def data_config(data_dir, dataset, manual_dir, **kwargs):
  return ml_collections.ConfigDict(dict(
      dataset=dataset, data_dir=str(data_dir), manual_dir=str(manual_dir),
      coarse_kernel=7, slic_block=16, slic_compactness=10.0, slic_sigma=1.0,
      builder_kwargs=kwargs))


def beam_prepare(config):
  """Prepares `config.data` with Beam's DirectRunner; returns the builder."""
  builder = datasets.get_builder(config)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=config.manual_dir,
      beam_runner=beam.runners.DirectRunner(),
      beam_options=pipeline_options.PipelineOptions([])))
  return builder


def examples(builder, split):
  ds = builder.as_dataset(split=split, shuffle_files=False)
  return sorted(tfds.as_numpy(ds), key=lambda ex: ex["id"])


@pytest.mark.slow  # Builds each dataset twice, once through Beam.
@pytest.mark.parametrize("dataset", sorted(FIXTURES))
def test_beam_build_gives_the_plain_builds_examples(dataset, tmp_path):
  write, kwargs = FIXTURES[dataset]
  raw = tmp_path / "raw"
  write(str(raw))
  plain = datasets.prepare(data_config(tmp_path / "plain", dataset, raw,
                                       **kwargs), num_workers=1)
  beamed = beam_prepare(data_config(tmp_path / "beam", dataset, raw, **kwargs))
  assert beamed.is_prepared() and beamed._use_beam  # Went through Beam.
  assert beamed.info.full_name == plain.info.full_name
  splits = {k: v.num_examples for k, v in plain.info.splits.items()}
  assert splits == {k: v.num_examples for k, v in beamed.info.splits.items()}
  assert len(splits) >= 3 and min(splits.values()) >= 1
  for split in splits:
    a, b = examples(plain, split), examples(beamed, split)
    assert [ex["id"] for ex in a] == [ex["id"] for ex in b]
    for x, y in zip(a, b):
      for feature in ("image", "label_fine", "label_coarse", "slic"):
        np.testing.assert_array_equal(x[feature], y[feature])
  meta_a, meta_b = plain.info.metadata, beamed.info.metadata
  assert meta_a["coarse_stats"] == meta_b["coarse_stats"]
  assert set(meta_b["coarse_stats"]) == set(splits)
  if dataset == "suim":
    assert meta_b["size_mismatches"]["count"] == 1
    assert meta_a["size_mismatches"] == meta_b["size_mismatches"]


@pytest.mark.slow  # A build through Beam.
def test_beam_worker_error_stops_with_the_dataset_error(tmp_path):
  raw = tmp_path / "raw"
  pf.write_cityscapes(str(raw))
  path = os.path.join(str(raw), "gtCoarse", "train", "zurich",
                      "zurich_000002_000019_gtCoarse_labelIds.png")
  ids = np.asarray(Image.open(path)).copy()
  ids[0, 0] = 77
  Image.fromarray(ids).save(path)
  config = data_config(tmp_path / "data", "cityscapes_coarse", raw,
                       image_width=64, image_height=32)
  with pytest.raises(errors.DatasetError, match=r"unknown label ids \[77\]"
                     ) as info:
    beam_prepare(config)
  assert path in str(info.value)
  assert not datasets.is_prepared(config)
  shutil.rmtree(str(raw))
