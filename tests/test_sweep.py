"""Sweeps: expansion, running with skip and resume, aggregation, tuning, comparisons and
FINDINGS' placeholders (the experiment configs' smoke sweeps are in test_experiments.py)."""

import csv
import functools
import json
import os
import pathlib
import re
import shutil
import socket
import subprocess
import types

import numpy as np
import pytest

from progressive import cli, config_files, errors, models, schedules
from progressive.analysis import plots
from progressive.commands import sweep as sweep_command
from progressive.config import field_names, validate
from progressive.data import pipeline
from progressive.models import flops, geometry
from progressive.sweeps import aggregate, measure, spec, tables, tuning
from progressive.sweeps import run as runner
from progressive.training import train

REPO = pathlib.Path(__file__).parents[1]
EXPERIMENTS = ("size_sweep", "antialias", "head", "stability", "progressive_vs_fixed", "fixres",
               "train_test_size", "progressive_resizing", "translation", "depth", "parts")


def test_product_and_zip():
  assert spec.product(a=[1, 2], b=["x"]) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
  assert spec.zip_axes(a=[1, 2], b=[3, 4]) == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
  with pytest.raises(ValueError, match="one length"):
    spec.zip_axes(a=[1], b=[1, 2])


def test_parse_arg_turns_a_variant_into_typed_values():
  options = dict(family=("", ("vgg11", "resnet18")), smoke=False, lr=0.4, seeds=(3, int))
  arg = spec.parse_arg("smoke,lr=0.1,family=resnet18", **options)
  assert (arg.smoke, arg.lr, arg.family, arg.seeds) == (True, 0.1, "resnet18", 3)
  for nothing in (None, ""):
    arg = spec.parse_arg(nothing, **options)
    assert (arg.smoke, arg.lr, arg.family, arg.seeds) == (False, 0.4, "", 3)
  assert spec.parse_arg("vgg11", **options).family == "vgg11"  # A bare value: the first option's.
  assert spec.parse_arg("smoke=False,seeds=5", **options).seeds == 5
  arg = spec.parse_arg("fast_vgg,smoke", presets={"fast_vgg": "family=vgg11,lr=0.8"}, **options)
  assert (arg.family, arg.lr, arg.smoke) == ("vgg11", 0.8, True)
  for bad, message in (("nosuch=1", "Unknown config variant 'nosuch=1'"),
                       ("smoke,lr", "'lr' in 'smoke,lr' needs a value: lr=..."),
                       ("smoke=maybe", "'maybe' is not a boolean"),
                       ("vgg16", r"'vgg16' is not one of \['vgg11', 'resnet18'\]"),
                       ("lr=fast", "Bad config variant 'lr=fast'")):
    with pytest.raises(ValueError, match=message):
      spec.parse_arg(bad, **options)
  with pytest.raises(ValueError, match="Unknown config variant 'x'"):
    spec.parse_arg("x", smoke=False)  # No value option to take a bare word.


def test_experiment_variants_are_typed_once():
  antialias = config_files.load_module(str(REPO / "configs/antialias.py"))
  variant = antialias._variant("rerun_resnet18_photos")  # pylint: disable=protected-access
  assert (variant.protocol, variant.family, variant.photos, variant.smoke) == (
      "rerun", "resnet18", True, False)
  assert antialias._variant("vgg11").family == "vgg11"  # pylint: disable=protected-access
  # A variant written out is the preset it spells.
  spelled = spec.load(f"{REPO}/configs/antialias.py:protocol=rerun,family=resnet18,photos")
  preset = spec.load(f"{REPO}/configs/antialias.py:rerun_resnet18_photos")
  assert [p.config.to_json() for p in spelled.expand()] == [p.config.to_json() for p in preset.expand()]
  assert spelled.tuning == preset.tuning and spelled.comparisons == preset.comparisons
  with pytest.raises(ValueError, match="Unknown config variant 'nosuch'"):
    antialias.get_config("nosuch")


def test_a_sweep_file_is_loaded_once_into_a_sweep(tmp_path):
  calls = tmp_path / "calls.txt"
  (tmp_path / "cfg.py").write_text(
      "import pathlib\nfrom configs import default\nfrom progressive.sweeps import spec\n\n"
      f"CALLS = pathlib.Path({str(calls)!r})\n\n"
      "def _called(name):\n  with CALLS.open('a') as f:\n    f.write(name + ' ')\n\n"
      "def get_config(arg):\n  _called('get_config')\n  return default.get_config('smoke')\n\n"
      "def get_sweep(arg):\n  _called('get_sweep')\n"
      "  return spec.with_seeds([{'name': 'a'}, {'name': 'b', 'model.downsample': 'blur'}], [0, 1])\n\n"
      "def get_tuning(arg):\n  _called('get_tuning')\n"
      "  return {'field': 'opt.lr_max', 'grid': [0.1, 0.2], 'metric': 'acc@32'}\n\n"
      "def get_ensemble_sizes(arg):\n  _called('get_ensemble_sizes')\n  return {32: [24, 32]}\n\n"
      "def get_comparisons(arg):\n  _called('get_comparisons')\n  return [['b', 'a']]\n")
  sweep = spec.load(f"{tmp_path}/cfg.py:x", {"data.data_dir": "/d"})
  once = "get_config get_sweep get_tuning get_ensemble_sizes get_comparisons "
  assert calls.read_text() == once
  assert sweep.arg == "x" and sweep.path == str(tmp_path / "cfg.py") and sweep.base.data.data_dir == "/d"
  assert sweep.tuning == spec.Tuning("opt.lr_max", (0.1, 0.2), "acc@32")
  assert sweep.tuning.train_split == "train[:90%]" and sweep.tuning.eval_split == "train[90%:]"
  assert sweep.ensemble_sizes == {32: (24, 32)} and sweep.finetune is None
  assert sweep.comparisons == (("b", "a"),)
  first, again = sweep.expand(), sweep.expand()
  assert [p.name for p in first] == ["a_seed0", "a_seed1", "b_seed0", "b_seed1"]
  assert first[2].config.model.downsample == "blur" and first[2].config.data.data_dir == "/d"
  assert first[0].config is not again[0].config  # Made afresh: a caller may change its own.
  choice = {"field": "opt.lr_max", "values": {spec.arm_key({"name": "b", "model.downsample": "blur"}): 0.2}}
  assert [p.config.opt.lr_max for p in sweep.expand(choice)][2:] == [0.2, 0.2]
  # Two arms, two grid values, two tuning seeds each.
  assert len(tuning.tuning_points(sweep)) == 8 and len(runner.train_commands(sweep, str(tmp_path))) == 8
  assert sweep.with_grid([0.05]).tuning.grid == (0.05,) and sweep.tuning.grid == (0.1, 0.2)
  assert calls.read_text() == once  # Nothing after loading calls the file again.


def test_a_measure_is_a_name_and_the_summary_entries_it_returns(tmp_path, smoke_config):
  stats = [{"step": 2, "layer": "conv_0/conv", "std": 9.0, "near_zero": 0.5},
           {"step": 2, "layer": "conv_0/relu", "std": 9.0, "near_zero": 0.2},
           {"step": 4, "layer": "conv_0/conv", "std": 0.5, "near_zero": 0.25},
           {"step": 4, "layer": "conv_1/conv", "std": 1.5, "near_zero": 0.75},
           {"step": 4, "layer": "conv_1/bn", "std": 9.0, "near_zero": 9.0},
           {"step": 4, "layer": "conv_0/relu", "std": 9.0, "near_zero": 0.4},
           {"step": 4, "layer": "conv_1/relu", "std": 9.0, "near_zero": 0.9},
           {"step": 4, "layer": "conv_1/relu", "std": 9.0, "near_zero": 0.6}]  # Resumed: the last.
  (tmp_path / "activation_stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stats))
  rows = [{"event": "train", "skipped": 1}, {"event": "train", "skipped": 2}, {"event": "eval"},
          {"event": "compile", "kind": "train", "size": 16, "batch_size": 4, "flops": 2e9},
          {"event": "compile", "kind": "train", "size": 32, "batch_size": 4, "flops": 8e9}]
  plan = schedules.stage_plan([dict(size=16, steps=3), dict(size=32, steps=1)], 4, 100)
  model = models.build(smoke_config.model, num_classes=4)
  inputs = measure.Inputs(tmp_path, types.SimpleNamespace(stages=lambda: plan, model=model), rows,
                          [16, 32])
  stability, budget = measure.Stability(), measure.Budget()
  assert (stability.name, budget.name) == ("stability", "budget")
  # After the ReLUs and fastai's before them, both over every recorded step; std at the last.
  assert stability.run(inputs) == {"skipped_steps": 3, "act_std": 1.0,
                                   "act_near_zero": pytest.approx(0.4),
                                   "act_near_zero_preact": pytest.approx(0.5)}
  # 12 images at 16 px and 4 at 32 px, forward and backward (3 x 2 FLOPs per multiply-add);
  # XLA's count is each stage's steps times its compiled step's.
  macs = {size: flops.forward_macs(model, size) for size in (16, 32)}
  assert budget.run(inputs) == {"images_seen": 16, "train_gflops_xla": 3 * 2 + 8,
                                "train_gflops": pytest.approx(6 * (12 * macs[16] + 4 * macs[32]) / 1e9)}
  # A point's summary is the union of the measures its settings ask for.
  settings = measure.Settings(num_shift_images=8, ensemble_sizes={32: (24, 32)}, bn_images=16)
  assert [m.name for m in settings.measures(smoke_config)] == [
      "budget", "stability", "shift", "ensemble", "controls", "object_scale"]
  assert settings.options(smoke_config) == {"num_shift_images": 8, "max_shift": 4,
                                            "ensemble_sizes": [24, 32], "measures": measure.MEASURES,
                                            "bn_images": 16}
  tuned = measure.Settings(num_shift_images=8, tuning=True)
  assert [m.name for m in tuned.measures(smoke_config)] == ["budget"]
  assert tuned.options(smoke_config) == {"measures": "tuning"}


def test_with_seeds_names_every_point_once_per_seed():
  points = spec.with_seeds([{"name": "a", "x": 1}, {"x": 2}], (0, 3))
  assert [p.get("name") for p in points] == ["a_seed0", "a_seed3", None, None]
  assert [p["seed"] for p in points] == [0, 3, 0, 3]
  assert spec.point_name(points[3]) == "x=2_seed=3"


def test_equal_budget_matches_the_pixels_of_the_progressive_stages():
  pvf = config_files.load_module(str(REPO / "configs/progressive_vs_fixed.py"))
  stages = [dict(size=32, epochs=3), dict(size=48, epochs=2), dict(size=64, epochs=2)]
  assert pvf.equal_budget(stages, 64) == dict(size=64, epochs=3.875)  # 3/4 + 2 * 9/16 + 2.
  assert pvf.equal_budget([dict(size=16, steps=8), dict(size=32, steps=8)], 32) == dict(size=32, steps=10)
  points = {p["name"]: p for p in pvf.get_sweep(None)}
  assert points["fixed64_seed2"]["stages"] == (dict(size=64, epochs=3.875),)
  assert points["fixed64_zoom_seed0"]["data.augment"] == "rrc_flip"
  assert points["progressive_stage_seed1"]["opt.cycle"] == "stage"
  assert len(points) == 12


def test_point_names_and_overrides():
  assert spec.point_name({"model.downsample": "blur", "model.blur_size": 5}) == "downsample=blur_blur_size=5"
  assert spec.point_name({"name": "x", "seed": 1}) == "x"
  config = config_files.load_module(str(REPO / "configs/default.py")).get_config("smoke")
  changed = spec.apply_overrides(config, {"model.downsample": "blur", "stages": [dict(size=16, steps=2)]})
  assert changed.model.downsample == "blur" and changed.stages == (dict(size=16, steps=2),)
  assert config.model.downsample == "stride"  # The base is left alone.
  with pytest.raises(KeyError, match="model.nope"):
    spec.apply_overrides(config, {"model.nope": 1})


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("arg", [None, "smoke"])
def test_every_experiment_point_validates(name, arg):
  points = spec.load(f"{REPO}/configs/{name}.py" + (f":{arg}" if arg else "")).expand()
  assert len(points) >= 2
  assert len({p[0] for p in points}) == len(points)
  for _, _, config in points:
    validate(config, num_devices=4)


@pytest.mark.parametrize("flag", ["antialias.py:rerun", "antialias.py:rerun_photos", "stability.py:rerun",
                                  "stability.py:rerun_photos", "train_test_size.py",
                                  "train_test_size.py:photos", "progressive_resizing.py", "parts.py",
                                  "antialias.py:tuned64_simple_cnn",
                                  "progressive_resizing.py:long", "progressive_resizing.py:photos_long",
                                  "antialias.py:tuned64_vgg11", "antialias.py:tuned64_resnet18_photos",
                                  "antialias.py:rerun_resnet18_photos", "antialias.py:rerun_vgg11",
                                  "translation.py", "translation.py:photos", "translation.py:tuned64",
                                  "depth.py", "depth.py:resnet", "depth.py:tuned64",
                                  "depth.py:resnet,photos", "antialias.py:px64",
                                  "stability.py:px64", "progressive_resizing.py:px64",
                                  "translation.py:px64", "train_test_size.py:px64_photos",
                                  "antialias.py:px64_vgg11", "antialias.py:px64_resnet18",
                                  "depth.py:px64"])
def test_every_rerun_point_and_tuning_run_validates(flag):
  sweep = spec.load(f"{REPO}/configs/{flag}")
  points, runs = sweep.expand(), tuning.tuning_points(sweep)
  assert len({p[0] for p in points}) == len(points) >= 10 and runs
  seeds = {o["seed"] for _, o, _ in points}
  assert seeds == {0, 1, 2, 3, 4}  # Five seeds for every headline comparison.
  for _, _, config in points + [t[2:] for t in runs]:
    validate(config, num_devices=1)
    # The final runs test on a scale_shapes split never used before (photographs have
    # none); the tuning runs read only the training split, the same images as before.
    assert config.data.name == "photos" or config.data.builder_config.endswith("_fresh")
  groups = {spec.group_name(n, o["seed"]) for n, o, _ in points}
  for arm, baseline in sweep.comparisons:
    assert {arm, baseline} <= groups


def _budget(config) -> dict:
  """What a point of `config` will spend, as its summary counts it (`measure.budget_summary`)."""
  from progressive.data import pipeline  # pylint: disable=import-outside-toplevel

  info = pipeline.dataset_info(config.data)
  plan = schedules.stage_plan(config.stages, config.batch_size, info.num_train)
  image_flops = {s.size: flops.config_train_flops(config.model, s.size, info.num_classes)
                 for s in plan}
  return {**measure.budget_summary([], plan, image_flops), "steps": plan[-1].end}


@pytest.mark.parametrize("flag,family", [("antialias.py:rerun", "simple_cnn"),
                                         ("antialias.py:rerun_resnet18", "resnet18"),
                                         ("antialias.py:px64", "simple_cnn")])
def test_the_stride_arm_at_max_flops_costs_what_max_pooling_does(flag, family):
  """Max pooling (and blur) keep the convolutions before each subsampling at full
  resolution: the matched stride arm trains for the max arm's FLOPs, counted from the
  architecture, with more steps; the claim-2 and claim-5 hypotheses compare against it."""
  sweep = spec.load(f"{REPO}/configs/{flag}")
  configs = {name: config for name, overrides, config in sweep.expand() if overrides["seed"] == 0}
  stride, pooled, blur, matched = (_budget(configs[f"{family}_{arm}_seed0"]) for arm in (
      "stride", "max", "blur3", "stride_at_max_flops"))
  assert pooled["train_gflops"] > 1.25 * stride["train_gflops"]  # 4x (simple CNN), 1.3x (ResNet-18).
  assert blur["train_gflops"] == pooled["train_gflops"]  # The blur filters are not counted.
  per_step = stride["train_gflops"] / stride["steps"]
  assert abs(matched["train_gflops"] - pooled["train_gflops"]) <= per_step  # Within one step.
  assert matched["steps"] > pooled["steps"] == stride["steps"]
  assert (f"{family}_max", f"{family}_stride_at_max_flops") in sweep.comparisons
  contrasts = {h.name: str(h.contrast) for h in sweep.hypotheses}
  assert "stride_at_max_flops" in contrasts[f"{family}_max_helps_self_similar_off_scale_at_equal_flops"]
  assert "stride_at_max_flops" in contrasts[f"{family}_blur3_changes_less_at_equal_flops"]
  assert sum(h.claim == 2 for h in sweep.hypotheses) == 3


def test_batch_128_at_batch_512s_images_matches_its_budget():
  sweep = spec.load(f"{REPO}/configs/stability.py:rerun")
  configs = {name: config for name, overrides, config in sweep.expand() if overrides["seed"] == 0}
  small, big, matched = (_budget(configs[f"bn_one_cycle{arm}_seed0"]) for arm in (
      "", "_batch512", "_at_batch512_images"))
  assert big["steps"] == small["steps"] and big["images_seen"] == 4 * small["images_seen"]
  assert matched["images_seen"] == big["images_seen"] and matched["steps"] == 4 * big["steps"]
  assert matched["train_gflops"] == pytest.approx(big["train_gflops"])
  assert configs["bn_one_cycle_at_batch512_images_seed0"].batch_size == 128
  assert ("bn_one_cycle_batch512", "bn_one_cycle_at_batch512_images") in sweep.comparisons


def _total_stride(config) -> int:
  table = geometry.layer_table(config.model, int(config.stages[-1]["size"]), 12)
  return int(geometry.totals(table)["total_stride"])


@pytest.mark.parametrize("flag", ["translation.py", "translation.py:tuned64"])
def test_the_shift_arms_cover_the_subsampling_period_at_the_same_budget(flag):
  """Only data.augment and max_shift differ between the arms; max_shift is the traced
  total stride (half of it for half_shift_flip), in pixels of the training size."""
  sweep = spec.load(f"{REPO}/configs/{flag}")
  configs = {name: config for name, overrides, config in sweep.expand() if overrides["seed"] == 0}
  flip, shifted, half = (configs[f"{arm}_seed0"] for arm in ("flip", "shift_flip", "half_shift_flip"))
  stride = _total_stride(flip)
  assert stride == 16 and (flip.data.augment, flip.data.max_shift) == ("flip", None)
  assert (shifted.data.augment, shifted.data.max_shift) == ("shift_flip", stride)
  assert (half.data.augment, half.data.max_shift) == ("shift_flip", stride // 2)
  size = flip.stages[-1]["size"]
  assert pipeline.dataset_info(flip.data).image_size == size  # Host pixels are stage pixels.
  for config in (shifted, half):
    changed = {k for k in field_names(config)
               if _field(config, k) != _field(flip, k)}
    assert changed == {"data.augment", "data.max_shift"}
  claims = {(h.claim, h.name, h.predicted) for h in sweep.hypotheses}
  assert claims == {(5, "shift_flip_changes_less", "< 0"), (5, "shift_flip_less_jagged", "< 0"),
                    (5, "shift_flip_costs_accuracy", "< 0")}
  assert f"acc@{size}" in str(sweep.hypotheses[2].contrast)


def _field(config, name):
  node = config
  for part in name.split("."):
    node = node[part]
  return node


@pytest.mark.parametrize("flag,arms", [
    ("depth.py", ("vgg11", "vgg13", "vgg16")), ("depth.py:tuned64", ("vgg11", "vgg13", "vgg16")),
    ("depth.py:resnet", ("resnet18", "resnet34")), ("depth.py:px64", ("vgg11", "vgg16")),
    ("depth.py:px64_long", ("vgg11", "vgg16"))])
def test_depth_arms_share_the_total_stride_and_the_deepest_budget_is_matched(flag, arms):
  sweep = spec.load(f"{REPO}/configs/{flag}")
  configs = {name: config for name, overrides, config in sweep.expand() if overrides["seed"] == 0}
  shallow, deep = arms[0], arms[-1]
  matched = f"{shallow}_at_{deep}_flops"
  assert set(configs) == {f"{a}_seed0" for a in (*arms, matched)}
  tables = [geometry.layer_table(configs[f"{a}_seed0"].model, 32, 12) for a in arms]
  convs = [sum(row["kind"] == "conv" for row in table) for table in tables]
  assert convs == sorted(convs) and len(set(convs)) == len(arms)  # Only depth grows.
  assert len({_total_stride(configs[f"{a}_seed0"]) for a in (*arms, matched)}) == 1
  assert len({configs[f"{a}_seed0"].stages[-1]["size"] for a in arms}) == 1
  budgets = {a: _budget(configs[f"{a}_seed0"]) for a in (shallow, deep, matched)}
  assert budgets[deep]["train_gflops"] > 1.5 * budgets[shallow]["train_gflops"]
  per_step = budgets[shallow]["train_gflops"] / budgets[shallow]["steps"]
  assert abs(budgets[matched]["train_gflops"] - budgets[deep]["train_gflops"]) <= per_step
  assert [(h.claim, h.predicted) for h in sweep.hypotheses] == [(5, "> 0")] * 3
  assert matched in str(sweep.hypotheses[2].contrast)
  assert all(deep in str(h.contrast) for h in sweep.hypotheses)


@pytest.mark.parametrize("arg,message", [
    ("px64,family=resnet", "px64 is the VGG family on scale_shapes"),
    ("px64,photos", "px64 is the VGG family on scale_shapes"),
    ("tuned64,long", "`long` is px64's check of convergence; use px64_long")])
def test_depth_px64_refuses_what_it_does_not_size_for_the_cpu(arg, message):
  with pytest.raises(ValueError, match=message) as error:
    spec.load(f"{REPO}/configs/depth.py:{arg}")
  assert "\n" not in str(error.value)


# The 32 px hypotheses' sizes and the 32 px arms they name (`fixed32_flops`), doubled.
_SIZES_IN_HYPOTHESES = re.compile(r"(?<=@)\d+|(?<=fixed)\d+")
# A 32 px budget-matching arm that the 64 px sweep reads from an arm it trains anyway: at
# 64 px batch 512 trains for bn_one_cycle's epochs, so that arm sees its images.
_SAME_BUDGET = {"bn_one_cycle_at_batch512_images[": "bn_one_cycle["}


@pytest.mark.parametrize("flag,base,epochs", [
    ("antialias.py:px64", "antialias.py:rerun", 16),
    ("antialias.py:px64_long", "antialias.py:rerun", 32),
    ("antialias.py:px64_vgg11", "antialias.py:rerun_vgg11", 16),
    ("antialias.py:px64_resnet18", "antialias.py:rerun_resnet18", 16),
    ("stability.py:px64", "stability.py:rerun", 16),
    ("stability.py:px64_long", "stability.py:rerun", 32),
    ("progressive_resizing.py:px64", "progressive_resizing.py", 15.5),
    ("progressive_resizing.py:px64_long", "progressive_resizing.py:long", 31),
    ("translation.py:px64", "translation.py", 16),
    ("translation.py:px64_long", "translation.py", 32),
    ("depth.py:px64", "depth.py", 16),
    ("depth.py:px64_long", "depth.py", 32)])
def test_px64_asks_the_32px_hypotheses_of_converged_networks_at_64px(flag, base, epochs):
  """Claims 2, 3, 5 (blur, shifts) and 6 at 64 px (train_test_size's are its own test):
  the 32 px sweep's hypotheses with every size doubled, read at sizes the points are
  tested at, on a fresh 64 px test split, each fixed-size arm at 64 px for the ladder's
  16 epochs (experiments/results/convergence; 15.5 at the progressive run's FLOPs),
  `_long` twice."""
  sweep, small = spec.load(f"{REPO}/configs/{flag}"), spec.load(f"{REPO}/configs/{base}")
  double = functools.partial(_SIZES_IN_HYPOTHESES.sub, lambda m: str(2 * int(m.group())))
  asked = {double(h.name): functools.reduce(lambda text, pair: text.replace(*pair),
                                            _SAME_BUDGET.items(), double(str(h.contrast)))
           for h in small.hypotheses}
  own = {h.name: str(h.contrast) for h in sweep.hypotheses}
  assert own and own.items() <= asked.items()
  configs = {name: config for name, overrides, config in sweep.expand() if overrides["seed"] == 0}
  read = {int(s) for h in sweep.hypotheses for s in re.findall(r"@(\d+)\]", str(h.contrast))}
  for name, config in configs.items():
    assert read <= set(config.eval_sizes) and config.stages[-1]["size"] == 64
    assert config.data.builder_config == "default_fresh" and config.data.augment.endswith("flip")
    if len(config.stages) == 1 and "_at_" not in name:  # Not an arm at another's FLOPs.
      assert config.stages[0]["epochs"] == epochs
  assert {arm for h in sweep.hypotheses for arm in re.findall(r"(\w+)\[", str(h.contrast))} == {
      name.rsplit("_seed", 1)[0] for name in configs}  # Only the hypotheses' arms train.


@pytest.mark.parametrize("arg", [None, "photos", "long", "photos_long"])
def test_claim_3_has_a_tuned_zoom_arm_and_its_own_hypotheses(arg):
  sweep = spec.load(f"{REPO}/configs/progressive_resizing.py" + (f":{arg}" if arg else ""))
  configs = {name: config for name, overrides, config in sweep.expand() if overrides["seed"] == 0}
  zoom, fixed = configs["fixed32_zoom_flops_seed0"], configs["fixed32_flops_seed0"]
  assert zoom.data.augment == "rrc_flip" and zoom.stages == fixed.stages
  assert sweep.tuning.seeds == spec.TUNING_SEEDS
  assert {o["seed"] for o in sweep.overrides if o["name"].startswith("fixed32_zoom")} == set(
      range(5))
  names = {h.name: h for h in sweep.hypotheses}
  assert set(names) == {"progressive_beats_fixed32_at_equal_flops",
                        "progressive_beats_zoom_at_equal_flops", "progressive_keeps_its_earlier_sizes"}
  assert all(h.claim == 3 and h.predicted == "> 0" for h in names.values())
  assert "fixed32_zoom_flops[acc@32]" in str(names["progressive_beats_zoom_at_equal_flops"].contrast)


@pytest.mark.parametrize("arg", ["rerun", "rerun_photos", "px64", "px64_long"])
def test_claim_6_has_its_own_hypotheses(arg):
  sweep = spec.load(f"{REPO}/configs/stability.py:{arg}")
  assert [(h.claim, h.predicted) for h in sweep.hypotheses] == [(6, "< 0")] * 3
  assert all("[act_near_zero]" in str(h.contrast) for h in sweep.hypotheses)
  # The larger batch against batch 128 at its images and FLOPs, a quarter of its steps.
  configs = {name.rsplit("_seed", 1)[0]: config for name, overrides, config in sweep.expand()
             if overrides["seed"] == 0}
  big, small = (configs[arm] for arm in re.findall(r"(\w+)\[", str(sweep.hypotheses[2].contrast)))
  assert (big.batch_size, small.batch_size) == (512, 128)
  assert big.stages == small.stages and big.model == small.model
  assert not spec.load(f"{REPO}/configs/stability.py").hypotheses  # No seeds, no hypotheses.


def test_antialias_covers_three_families_and_their_modes():
  points = spec.load(f"{REPO}/configs/antialias.py").expand()
  names = [p[0] for p in points]
  assert len(names) == 11 and "resnet18_blur5" in names and "resnet18_max" in names
  assert "vgg11_max" not in names  # The same network as vgg11_stride.


@pytest.fixture(scope="module")
def antialias_smoke(tmp_path_factory, data_dir, compilation_cache):
  workdir = tmp_path_factory.mktemp("antialias")
  common = {"data.data_dir": data_dir, "progress_bar": False, "checkpoint_every_steps": 4,
            "compilation_cache_dir": compilation_cache}
  rows = runner.run_sweep(spec.load(f"{REPO}/configs/antialias.py:smoke", common), str(workdir),
                          num_shift_images=16)
  return workdir, common, rows


@pytest.mark.slow
def test_sweep_runs_and_aggregates(antialias_smoke):
  workdir, _, rows = antialias_smoke
  assert [r["name"] for r in rows] == ["simple_cnn_stride", "simple_cnn_blur3"]
  with (workdir / "results.csv").open() as f:
    table = list(csv.DictReader(f))
  assert [r["model.downsample"] for r in table] == ["stride", "blur"]
  for row in table:
    for column in ("acc@24", "acc@32", "acc_shape@32", "acc_texture@32", "jaggedness", "consistency"):
      assert 0.0 <= float(row[column]) <= (1.0 if column != "jaggedness" else 8.0)
    assert float(row["wall_seconds"]) > 0
    # Shifts over the whole period (total stride 8) and accuracy by object scale.
    assert row["shift_period"] == "8" and 0 <= float(row["pred_change"]) <= 1
    assert 0 <= float(row["cons_period"]) <= 1 and float(row["prob_change"]) >= 0
    assert 0 <= float(row["acc_obj@0.55"]) <= 1 and 0 <= float(row["acc_obj_texture@0.25"]) <= 1
    rf = 17 if row["model.downsample"] == "stride" else 31  # The final receptive fields at 32 px.
    assert float(row["rf_scale"]) == pytest.approx(rf / 32, abs=1e-3)
  markdown = (workdir / "results.md").read_text()
  assert "2 of 2 points finished." in markdown and "| simple_cnn_blur3 | simple_cnn | blur | 3 |" in markdown
  assert (workdir / "results.png").stat().st_size > 1000


@pytest.mark.slow
def test_finished_points_are_skipped_and_partial_ones_resume(antialias_smoke, capsys):
  workdir, common, _ = antialias_smoke
  point = workdir / "simple_cnn_blur3"
  before = (workdir / "simple_cnn_stride" / "metrics.jsonl").read_text()
  shutil.rmtree(point / "checkpoints" / "8")  # As if killed before its last checkpoint.
  (point / measure.SUMMARY_FILE).unlink()
  runner.run_sweep(spec.load(f"{REPO}/configs/antialias.py:smoke", common), str(workdir),
                   num_shift_images=16)
  out = capsys.readouterr().out
  assert "[simple_cnn_stride] finished already; skipped." in out
  assert "[simple_cnn_blur3] resuming." in out
  assert re.search(r"\[simple_cnn_blur3\] resuming\.\n.*done at step 8: accuracy on test 24px", out, re.DOTALL)
  assert (workdir / "simple_cnn_stride" / "metrics.jsonl").read_text() == before
  assert (point / measure.SUMMARY_FILE).exists()


@pytest.mark.slow
def test_status_from_the_console_says_where_a_held_sweep_stands(antialias_smoke, tmp_path):
  """`progressive sweep --status` as a user meets it (the installed command, another
  folder, no PYTHONPATH) on a copy of a real sweep: one point killed partway (logged to
  step 6, checkpointed at 4 of 8), the other finished under another learning rate, the
  folder held by a live sweep (this process). It names all of that and writes nothing."""
  from progressive.sweeps import folder as sweep_folder  # pylint: disable=import-outside-toplevel
  from progressive.training import workdir as workdir_lib  # pylint: disable=import-outside-toplevel

  workdir, common, _ = antialias_smoke
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy)
  point = copy / "simple_cnn_blur3"
  shutil.rmtree(point / "checkpoints" / "8")
  (point / measure.SUMMARY_FILE).unlink()
  rows = [json.loads(r) for r in (point / "metrics.jsonl").read_text().splitlines()]
  rows = [r for r in rows if r.get("step", 0) <= 4]  # Logged every 4 steps: one more at 6.
  rows.append({**next(r for r in rows if r.get("event") == "train" and r["step"] == 4), "step": 6})
  (point / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  stored = json.loads((copy / "simple_cnn_stride" / "config.json").read_text())
  lr = stored["opt"]["lr_max"]
  stored["opt"]["lr_max"] = 2 * lr
  (copy / "simple_cnn_stride" / "config.json").write_text(json.dumps(stored))
  hold = workdir_lib.Hold(copy, file=sweep_folder.HOLD_FILE)
  hold.acquire()
  try:
    before = {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.name != sweep_folder.HOLD_FILE}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [shutil.which("progressive"), "sweep", f"--config={REPO}/configs/antialias.py:smoke",
         f"--workdir={copy}", "--status", *(f"--set={k}={v}" for k, v in common.items())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
  finally:
    hold.release()
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  assert f"in {copy}: running (process {os.getpid()} on {socket.gethostname()}, since " in lines[0]
  assert lines[1:5] == [
      "Points: 2, 1 finished, 1 partway.",
      "  simple_cnn_stride: finished",
      f"    simple_cnn_stride was trained under another config (opt.lr_max: {2 * lr!r} -> {lr!r}): "
      "the sweep stops on it; move its folder aside to rerun it.",
      "  simple_cnn_blur3: partway at step 6 of 8, checkpointed at 4",
  ]
  # The partway point's training and measures left, at the finished point's pace.
  assert re.fullmatch(r"Time: 1 finished run\(s\) trained in \d+ s \(\d+ s each\); 1 point\(s\) "
                      r"measured in \d+ s \(\d+ s each\)\. Left: 1 run\(s\) to train and 1 "
                      r"point\(s\) to measure, about \d+ s at each arm's pace so far\.", lines[5]), lines[5]
  assert {p: p.stat().st_mtime_ns for p in copy.rglob("*")} == before  # Nothing written.


@pytest.mark.slow
def test_points_copied_without_checkpoints_are_not_trained_again(antialias_smoke, tmp_path, capsys):
  """A workdir copied from the machine it ran on without its checkpoints (summaries and
  logs only) is finished for the sweep with the same measures, as for aggregation."""
  workdir, common, rows = antialias_smoke
  copy = tmp_path / "copied"
  shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("checkpoints"))
  again = runner.run_sweep(spec.load(f"{REPO}/configs/antialias.py:smoke", common), str(copy),
                           num_shift_images=16)
  out = capsys.readouterr().out
  assert "[simple_cnn_stride] finished already; skipped." in out and "starting" not in out
  assert [r["acc@32"] for r in again] == [r["acc@32"] for r in rows]
  # With other measures the summary cannot be remade without the checkpoint: trained again.
  name, _, config = spec.load(f"{REPO}/configs/antialias.py:smoke", common).expand()[0]
  assert measure.summarized(copy / name, config, measure.Settings(num_shift_images=16))
  assert not measure.summarized(copy / name, config, measure.Settings(num_shift_images=8))
  assert not measure.summarized(copy / name, config,
                                measure.Settings(num_shift_images=16, tuning=True))


@pytest.mark.slow
def test_progress_saved_and_restored_goes_on_from_the_ended_runs(antialias_smoke, tmp_path,
                                                                 monkeypatch, capsys):
  """`experiments/progress.py save ROOT` keeps each ended run of a sweep under ROOT without
  its checkpoints, events or hold, and leaves out a run that has not ended; `restore`
  into a fresh ROOT lets the sweep go on: the saved point is not trained again, the other
  one trains from its start, and a run already there is kept."""
  progress = config_files.load_module(str(REPO / "experiments/progress.py"))
  monkeypatch.setattr(progress, "PROGRESS", tmp_path / "progress")
  workdir, common, rows = antialias_smoke
  root = tmp_path / "root"
  shutil.copytree(workdir, root / "aa")
  (root / "aa" / "simple_cnn_blur3" / measure.SUMMARY_FILE).unlink()  # Trained, not ended.
  (root / "aa" / ".sweep_hold").write_text("{}")
  shutil.copytree(root / "aa" / "simple_cnn_stride", root / "aa" / tuning.TUNING_DIR / "stride_lr")
  progress.main(["progress.py", "save", str(root)])
  assert "aa: 2 ended run(s) saved" in capsys.readouterr().out
  saved = tmp_path / "progress" / "aa"
  kept = sorted(p.relative_to(saved).as_posix() for p in saved.rglob("*"))
  assert "simple_cnn_stride/sweep_point.json" in kept and "simple_cnn_stride/metrics.jsonl" in kept
  assert "results.csv" in kept and not any(k.startswith("simple_cnn_blur3") for k in kept)
  assert "simple_cnn_stride/activation_stats.jsonl" in kept  # Claim 6's figure reads them.
  assert "tuning/stride_lr/sweep_point.json" in kept  # Its metric alone.
  assert "tuning/stride_lr/activation_stats.jsonl" not in kept
  assert not [k for k in kept if "checkpoints" in k or "tensorboard" in k or "hold" in k
              or k.endswith(".png")]

  fresh = tmp_path / "fresh"
  progress.main(["progress.py", "restore", str(fresh)])
  assert "aa: 2 run(s) restored" in capsys.readouterr().out
  again = runner.run_sweep(spec.load(f"{REPO}/configs/antialias.py:smoke", common),
                           str(fresh / "aa"), num_shift_images=16)
  out = capsys.readouterr().out
  assert "[simple_cnn_stride] finished already; skipped." in out
  assert "[simple_cnn_blur3] starting." in out
  assert [r["acc@32"] for r in again][:1] == [r["acc@32"] for r in rows][:1]
  mine = fresh / "aa" / "simple_cnn_stride" / "metrics.jsonl"
  mine.write_text("this machine's")
  progress.main(["progress.py", "restore", str(fresh)])
  out = capsys.readouterr().out
  assert "aa: 0 run(s) restored" in out and "2 there already, kept" in out
  assert mine.read_text() == "this machine's"
  (root / "notes").mkdir()  # Not a sweep's: passed over, and refused by name.
  progress.main(["progress.py", "save", str(root)])
  assert capsys.readouterr().out.startswith("aa: ") and not (tmp_path / "progress" / "notes").exists()
  for name in ("notes", "nope"):
    with pytest.raises(SystemExit, match=f"{name} holds no run of a sweep"):
      progress.main(["progress.py", "save", str(root), name])


@pytest.mark.slow
def test_workers_train_the_same_points_as_one_process(antialias_smoke, tmp_path):
  """`workers=2` trains both points at once in spawned processes: the same accuracies,
  step for step, as the fixture's run one after another in this process."""
  workdir, common, _ = antialias_smoke
  points = spec.load(f"{REPO}/configs/antialias.py:smoke", common).expand()
  # Summaries without the measures.
  runner.train_points(points, tmp_path, measure.Settings(tuning=True), workers=2)
  for name in ("simple_cnn_stride", "simple_cnn_blur3"):
    serial = measure.read_summary(workdir / name)
    parallel = measure.read_summary(tmp_path / name)
    assert parallel["wall_seconds"] > 0 and parallel["step"] == serial["step"]
    for size, accuracies in serial["eval"].items():
      assert parallel["eval"][size] == pytest.approx(accuracies, abs=1e-6)


@pytest.mark.parametrize("flag,message", [
    ("--workers=0", "--workers must be at least 1, got 0."),
    ("--tune_only", "defines no tuning (get_tuning); --tune_only has nothing to run."),
    ("--tuning_grid=0.05,0.1", "--tuning_grid needs --tune_only"),
    ("--status --aggregate_only", "--status only reads the sweep folder: it goes with neither "
     "--print_commands, --aggregate_only, --tune_only nor --tuning_grid."),
])
def test_workers_and_tune_only_are_refused_before_anything_runs(flag, message):
  fv = cli.parse(sweep_command.COMMAND, ["prog", f"--config={REPO}/configs/antialias.py:smoke",
                                 "--workdir=/tmp/x", *flag.split()])
  with pytest.raises(cli.Error, match=re.escape(message)):
    sweep_command._main(fv)


@pytest.mark.slow
def test_aggregation_reports_missing_points(antialias_smoke, tmp_path):
  workdir, common, _ = antialias_smoke
  partial = tmp_path / "partial"
  shutil.copytree(workdir / "simple_cnn_stride", partial / "simple_cnn_stride")
  (partial / "simple_cnn_stride" / measure.SUMMARY_FILE).unlink()  # Run elsewhere: summarised here.
  rows = aggregate.aggregate(spec.load(f"{REPO}/configs/antialias.py:smoke", common), str(partial),
                             num_shift_images=16)
  assert [r["name"] for r in rows] == ["simple_cnn_stride"]
  assert "1 of 2 points finished; missing: simple_cnn_blur3." in (partial / "results.md").read_text()


@pytest.mark.slow
def test_aggregating_with_other_measures_resummarises(antialias_smoke, tmp_path):
  workdir, common, _ = antialias_smoke
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy)
  again = aggregate.aggregate(spec.load(f"{REPO}/configs/antialias.py:smoke", common), str(copy),
                              num_shift_images=16, ensemble_sizes=(24, 32))
  for after in again:
    before = measure.read_summary(workdir / after["name"])
    assert "ensemble" not in before and 0 <= after["acc_ens"] <= 1
    assert after["wall_seconds"] == before["wall_seconds"]  # Kept from the run.
    assert after["acc@32"] == before["eval"]["32"]["accuracy"]
    assert after["jaggedness"] == before["jaggedness"]
  assert "acc_ens" in (copy / "results.md").read_text()


@pytest.mark.slow
def test_aggregation_adds_the_scale_controls(antialias_smoke, tmp_path):
  workdir, common, _ = antialias_smoke
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy)
  rows = aggregate.aggregate(spec.load(f"{REPO}/configs/antialias.py:smoke", common), str(copy),
                             num_shift_images=16, bn_images=128)
  for row in rows:
    for column in ("acc_bn@24", "acc_bn_shape@32", "acc_canvas@24", "acc_canvas_bn@24", "acc_canvas_bn_texture@32"):
      assert 0 <= row[column] <= 1, column
    # The stored images are 32 px: a 32 px canvas is the image itself, as evaluated in training.
    assert row["acc_canvas@32"] == pytest.approx(row["acc@32"], abs=1.5 / 256)
    assert measure.read_summary(copy / row["name"])["options"]["bn_images"] == 128
  markdown = (copy / "results.md").read_text()
  assert " acc_bn@24 |" in markdown and "acc_canvas@S (acc_canvas_bn@S)" in markdown
  # Three stride-2 convs: every test size (16, 24, 32) is a multiple of 8.
  assert "total subsampling factor (models): the test sizes" in markdown
  assert "8 (simple_cnn): none." in markdown
  assert tables.grid_note([], []) == ""
  from configs import default  # pylint: disable=import-outside-toplevel
  note = tables.grid_note([default.get_config()], [24, 32, 40, 48])
  assert note.endswith("16 (simple_cnn): 24, 40.")


def _summarised_sweep(tmp_path, points, comparisons=None):
  """A sweep of `points` over the smoke config in `tmp_path/sweep`, each point summarised
  as if it had run (`acc@32` is its `"acc"`): the config flag for `aggregate`. With
  `comparisons`, the config file has a `get_comparisons`."""
  (tmp_path / "cfg").mkdir(parents=True)
  (tmp_path / "cfg" / "fake.py").write_text(
      "from configs import default\n\n"
      "def get_config(arg):\n  return default.get_config('smoke')\n\n"
      f"def get_sweep(arg):\n  return {[{k: v for k, v in p.items() if k != 'acc'} for p in points]!r}\n"
      + (f"\ndef get_comparisons(arg):\n  return {comparisons!r}\n" if comparisons else ""))
  for point in points:
    overrides = {k: v for k, v in point.items() if k != "acc"}
    name = spec.point_name(overrides)
    (tmp_path / "sweep" / name).mkdir(parents=True)
    summary = {
        "name": name, "options": {"num_shift_images": 64, "max_shift": 4, "ensemble_sizes": []},
        "overrides": {k: v for k, v in overrides.items() if k != "name"}, "step": 8,
        "eval": {"32": {"accuracy": point["acc"]}}, "best_size": 32, "images_seen": 512,
        "train_gflops": 1.5, "wall_seconds": 10.0, "jaggedness": 0.5, "consistency": 0.75}
    (tmp_path / "sweep" / name / measure.SUMMARY_FILE).write_text(json.dumps(summary))
  return str(tmp_path / "cfg" / "fake.py")


def test_seed_groups_follow_the_seed_override_not_the_names(tmp_path):
  points = [
      # Differ only in seed: averaged, whatever the names.
      {"name": "baseline", "seed": 1, "model.downsample": "blur", "acc": 0.25},
      {"name": "repeat", "seed": 2, "model.downsample": "blur", "acc": 0.75},
      # Named like seeds but without a seed override: not averaged.
      {"name": "max_seed1", "model.downsample": "max", "acc": 0.5},
      {"name": "max_seed2", "model.downsample": "stride", "acc": 0.5},
      # Seeds that also differ in another override: two groups, not one.
      {"name": "blur_seed1", "seed": 1, "model.downsample": "blur", "model.blur_size": 3, "acc": 0.5},
      {"name": "blur_seed2", "seed": 2, "model.downsample": "blur", "model.blur_size": 5, "acc": 0.5},
  ]
  workdir = tmp_path / "sweep"
  rows = aggregate.aggregate(spec.load(_summarised_sweep(tmp_path, points)), str(workdir))
  assert [r["name"] for r in rows] == [p["name"] for p in points]
  with (workdir / "results_mean.csv").open() as f:
    means = list(csv.DictReader(f))
  assert [(m["name"], m["seeds"]) for m in means] == [("baseline", "1 2"), ("blur", "1"), ("blur", "2")]
  assert means[0]["acc@32"] == "0.500 ± 0.354" and means[1]["acc@32"] == "0.500 ± 0.000"
  assert means[0]["images_seen"] == "512"
  assert [m["model.blur_size"] for m in means] == ["-", "3", "5"]
  assert "| baseline | 1 2 | blur | - | 0.500 ± 0.354 |" in (workdir / "results.md").read_text()


def test_intervals_and_comparisons_equal_scipys(tmp_path):
  from scipy import stats  # pylint: disable=import-outside-toplevel

  blur, strided = [0.91, 0.88, 0.93, 0.90, 0.86], [0.80, 0.85, 0.78, 0.83, 0.79]
  points = [{"name": f"{arm}_seed{i}", "seed": i, "model.downsample": arm, "acc": acc}
            for arm, accs in (("blur", blur), ("stride", strided)) for i, acc in enumerate(accs)]
  workdir = tmp_path / "sweep"
  aggregate.aggregate(spec.load(_summarised_sweep(tmp_path, points, [("blur", "stride")])),
                      str(workdir))
  with (workdir / "results_intervals.csv").open() as f:
    intervals = {(r["name"], r["metric"]): r for r in csv.DictReader(f)}
  low, high = stats.t.interval(0.95, 4, loc=np.mean(blur), scale=stats.sem(blur))
  row = intervals[("blur", "acc@32")]
  assert row["n"] == "5" and float(row["mean"]) == pytest.approx(np.mean(blur), abs=5e-4)
  assert (float(row["low"]), float(row["high"])) == (pytest.approx(low, abs=5e-4), pytest.approx(high, abs=5e-4))
  with (workdir / "comparisons.csv").open() as f:
    rows = {r["metric"]: r for r in csv.DictReader(f)}
  test = stats.ttest_ind(blur, strided, equal_var=False)
  ci = test.confidence_interval(0.95)
  row = rows["acc@32"]
  assert (row["arm"], row["baseline"], row["n_arm"], row["n_baseline"]) == ("blur", "stride", "5", "5")
  assert float(row["difference"]) == pytest.approx(np.mean(blur) - np.mean(strided), abs=5e-4)
  assert (float(row["low"]), float(row["high"])) == (pytest.approx(ci.low, abs=5e-4), pytest.approx(ci.high, abs=5e-4))
  assert row["p"] == f"{test.pvalue:.3g}" and row["verdict"] == "arm higher"
  markdown = (workdir / "results.md").read_text()
  assert "95% Welch interval" in markdown and "| acc@32 | blur | stride |" in markdown
  # A comparison naming no seed group is an error that lists the groups.
  with pytest.raises(ValueError, match=r"names no seed group \['blurr'\].*\['blur', 'stride'\]"):
    aggregate.aggregate(spec.load(_summarised_sweep(tmp_path / "b", points)),
                        str(tmp_path / "b" / "sweep"), comparisons=[("blurr", "stride")])
  # A pair whose group the sweep plans but has not finished waits (a sweep in progress).
  planned = points + [{"name": f"max_seed{i}", "seed": i, "model.downsample": "max", "acc": 0.5}
                      for i in range(2)]
  flag = _summarised_sweep(tmp_path / "c", planned, [("blur", "stride"), ("max", "stride")])
  for i in range(2):
    (tmp_path / "c" / "sweep" / f"max_seed{i}" / measure.SUMMARY_FILE).unlink()
  aggregate.aggregate(spec.load(flag), str(tmp_path / "c" / "sweep"))
  with (tmp_path / "c" / "sweep" / "comparisons.csv").open() as f:
    assert {(r["arm"], r["baseline"]) for r in csv.DictReader(f)} == {("blur", "stride")}
  assert "waiting for unfinished seed groups: max - stride." in (tmp_path / "c" / "sweep" / "results.md").read_text()


def test_seed_group_names_drop_the_seed_part():
  def name(point):
    return spec.group_name(spec.point_name(point), point["seed"])
  assert name({"name": "a_seed3", "seed": 3}) == "a"
  assert name({"model.downsample": "blur", "seed": 3}) == "downsample=blur"
  assert name({"seed": 3, "model.downsample": "blur"}) == "downsample=blur"
  assert name({"x": 1, "seed": 3, "y": 2}) == "x=1_y=2"
  assert name({"name": "other", "seed": 3}) == "other"
  assert name({"seed": 3}) == "seed=3"


def test_sizes_for_a_point_and_the_tuning_metric_of_an_arm(smoke_config):
  assert measure.for_point((16, 32), smoke_config) == (16, 32)
  assert measure.for_point({32: (24, 32, 40), 16: (16,)}, smoke_config) == (24, 32, 40)
  assert measure.for_point({24: (16,)}, smoke_config) == ()
  assert measure.finetune_for_point({"sizes": {24: (24,)}, "epochs": 1, "lr": 0.1}, smoke_config) is None
  assert measure.finetune_for_point({"sizes": (40,), "epochs": 1, "lr": 0.1}, smoke_config) == {
      "sizes": [40], "epochs": 1.0, "lr": 0.1}
  assert tuning.arm_metric("acc@{size}", smoke_config) == "acc@32" and tuning.arm_metric("acc@16", smoke_config) == "acc@16"


def test_specs_a_variant_turns_off_or_gets_wrong(tmp_path):
  (tmp_path / "cfg.py").write_text(
      "from configs import default\n\n"
      "def get_config(arg):\n  return default.get_config('smoke')\n\n"
      "def get_sweep(arg):\n  return [{'name': 'a'}]\n\n"
      "def get_tuning(arg):\n  return None if arg == 'off' else {'field': 'opt.lr_max', 'grid': (0.1,), 'metric': 'acc@32'}\n\n"
      "def get_finetune(arg):\n  return None if arg == 'off' else {'sizes': (32,), 'epochs': 0, 'lr': 0.1}\n")
  off = spec.load(f"{tmp_path}/cfg.py:off")
  assert off.tuning is None and off.finetune is None
  with pytest.raises(ValueError, match="epochs and lr must be positive"):
    spec.load(f"{tmp_path}/cfg.py")
  (tmp_path / "cfg.py").write_text((tmp_path / "cfg.py").read_text().replace("'epochs': 0", "'epochs': 1"))
  assert spec.load(f"{tmp_path}/cfg.py").tuning.grid == (0.1,)


def test_findings_are_built_from_the_committed_results():
  """FINDINGS.md and every page under experiments/findings/."""
  make_findings = config_files.load_module(str(REPO / "experiments/make_findings.py"))
  pages = make_findings.pages()
  assert [p.name for _, p in pages][:1] == ["FINDINGS.md"] and len(pages) > 1
  for template_path, page in pages:
    template = template_path.read_text()
    for name in make_findings.sweep_names(template):
      used = set(re.findall(r"\{\{(\w+):" + name + r"[:}]", template))
      files = ("tuning.csv",) if used == {"tuning"} else make_findings.FILES  # --tune_only sweeps.
      for file in files:
        assert (REPO / "experiments/results" / name / file).exists(), (name, file)
    # Every figure it links is committed, and each link resolves from the page's folder.
    for name, series in re.findall(r"\{\{curves:(\w+):([^}]+)\}\}", template):
      assert make_findings.curves_figure_path(name, series).exists(), (name, series)
    rendered = page.read_text()
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", rendered):
      assert (page.parent / link).exists(), (page.name, link)
    # The page is exactly what the script makes of the results: no number typed by hand.
    assert make_findings.render(template, page.parent) == rendered, page.name


def test_make_findings_collects_the_sweeps_named_from_a_root(tmp_path, monkeypatch):
  """`make_findings.py ROOT [NAME ...]` copies each sweep's results (the optional files
  where it wrote them; a --tune_only sweep's tuning grid alone) into results/NAME/, only
  the NAMEs where given; a sweep lacking a results file is one line naming it, and
  nothing is copied."""
  make_findings = config_files.load_module(str(REPO / "experiments/make_findings.py"))
  root, results = tmp_path / "root", tmp_path / "results"
  monkeypatch.setattr(make_findings, "RESULTS", results)
  monkeypatch.setattr(make_findings, "pages", lambda: [])  # No page rendered here.
  for name, files in [("done", (*make_findings.FILES, "hypotheses.csv")), ("other", make_findings.FILES),
                      ("tuned", ("tuning.csv",)), ("partial", ("results.md",))]:
    (root / name).mkdir(parents=True)
    for file in files:
      (root / name / file).write_text(f"{name} {file}")
  make_findings.main(["make_findings.py", str(root), "done", "tuned"])
  assert sorted(p.relative_to(results).as_posix() for p in results.rglob("*.*")) == [
      "done/hypotheses.csv", "done/results.csv", "done/results.md", "done/results.png",
      "tuned/tuning.csv"]
  assert (results / "done" / "results.csv").read_text() == "done results.csv"
  with pytest.raises(FileNotFoundError, match=re.escape(f"{root / 'partial' / 'results.csv'} is "
                                                        "missing: run that sweep first.")):
    make_findings.main(["make_findings.py", str(root), "other", "partial"])
  assert not (results / "other").exists() and not (results / "partial").exists()  # Nothing copied.


def test_run_findings_runs_every_sweep_the_findings_read(tmp_path):
  """experiments/run_findings.sh, with `progressive` and `python` recorded instead of run:
  it runs a loadable sweep into ROOT/<name> for every results folder a FINDINGS page reads,
  then builds the pages from ROOT."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for tool in ("progressive", "python"):
    (bin_dir / tool).write_text(f'#!/bin/bash\necho "{tool} $*" >> {tmp_path / "calls.txt"}\n')
    (bin_dir / tool).chmod(0o755)
  env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
  subprocess.run(["bash", str(REPO / "experiments/run_findings.sh"), str(tmp_path / "root")],
                 env=env, check=True, capture_output=True, text=True)
  calls = (tmp_path / "calls.txt").read_text().splitlines()
  assert calls[-1] == f"python experiments/make_findings.py {tmp_path / 'root'}"
  sweeps = {}
  for call in calls[:-1]:
    flags = dict(arg.split("=", 1) for arg in call.split()[2:] if arg.startswith("--"))
    assert call.startswith("progressive sweep ") and flags["--set"] == "progress_bar=False"
    sweeps[pathlib.Path(flags["--workdir"]).name] = flags
    if "--tuning_from" in flags:  # A check borrows from a sweep the script ran before it.
      assert pathlib.Path(flags["--tuning_from"]).name in sweeps, call
  make_findings = config_files.load_module(str(REPO / "experiments/make_findings.py"))
  read = {name for template, _ in make_findings.pages()
          for name in make_findings.sweep_names(template.read_text())}
  assert read <= set(sweeps), read - set(sweeps)
  for name in read:
    assert spec.load(str(REPO / sweeps[name]["--config"])).overrides, name
  # --status: the same sweeps, each only asked where it stands; nothing built.
  (tmp_path / "calls.txt").unlink()
  subprocess.run(["bash", str(REPO / "experiments/run_findings.sh"), "--status", str(tmp_path / "root")],
                 env=env, check=True, capture_output=True, text=True)
  assert (tmp_path / "calls.txt").read_text().splitlines() == [f"{c} --status" for c in calls[:-1]]
  # --workers=N: every sweep trains N points at a time; an unknown option runs nothing.
  (tmp_path / "calls.txt").unlink()
  subprocess.run(["bash", str(REPO / "experiments/run_findings.sh"), "--workers=2", str(tmp_path / "root")],
                 env=env, check=True, capture_output=True, text=True)
  with_workers = (tmp_path / "calls.txt").read_text().splitlines()
  assert len(with_workers) == len(calls) and all("--workers=2" in c.split() for c in with_workers[:-1])
  (tmp_path / "calls.txt").unlink()
  wrong = subprocess.run(["bash", str(REPO / "experiments/run_findings.sh"), "--worker=2", str(tmp_path)],
                         env=env, capture_output=True, text=True, check=False)
  assert wrong.returncode == 2 and "unknown option --worker=2" in wrong.stderr
  assert not (tmp_path / "calls.txt").exists()


def _tuned_sweep_file(tmp_path, arms: str) -> None:
  """`tmp_path/cfg/tuned.py`: the smoke config, `arms` (dict literals) with seeds 1 and 2,
  `opt.lr_max` tuned over 0.1 and 0.4 by accuracy at 32 px."""
  (tmp_path / "cfg").mkdir()
  (tmp_path / "cfg" / "tuned.py").write_text(
      "from configs import default\nfrom progressive.sweeps import spec\n\n"
      "def get_config(arg):\n  return default.get_config('smoke')\n\n"
      f"def get_sweep(arg):\n  return spec.with_seeds([{arms}], [1, 2])\n\n"
      "def get_tuning(arg):\n  return {'field': 'opt.lr_max', 'grid': [0.1, 0.4], 'metric': 'acc@32'}\n")


@pytest.mark.slow
def test_tuning_chooses_on_the_validation_slice_not_the_test_split(tmp_path, monkeypatch, capsys):
  """A constructed case where validation and test disagree: validation prefers 0.4 on the
  mean of the two tuning seeds (seed 0 alone would prefer 0.1), the test split would
  prefer 0.1. Nothing is trained: training and summaries are faked."""
  _tuned_sweep_file(tmp_path, "{'name': 'stride', 'model.downsample': 'stride'}, "
                              "{'name': 'blur', 'model.downsample': 'blur'}")
  validation = {(0.1, 0): 0.9, (0.1, 1): 0.3, (0.4, 0): 0.7, (0.4, 1): 0.75}
  runs, done = [], set()

  def fake_train(config, workdir):
    runs.append((pathlib.Path(workdir).name, config.opt.lr_max, config.data.train_split,
                 config.data.eval_split, config.seed))
    done.add(str(workdir))
    return types.SimpleNamespace(interrupted=None)  # train.Result: finished, not stopped.

  def fake_summary(workdir, name, overrides, config, settings, **kwargs):
    summary = {
        "name": name, "options": measure.Settings(num_shift_images=64, max_shift=4).options(config),
        "overrides": {k: v for k, v in overrides.items() if k != "name"}, "step": 24,
        "eval": {"32": {"accuracy": validation[config.opt.lr_max, config.seed]
                        if config.data.eval_split == "train[90%:]" else
                        {0.1: 0.8, 0.4: 0.6}[config.opt.lr_max]}},
        "best_size": 32, "images_seen": 1, "wall_seconds": 1.0}
    (pathlib.Path(workdir) / measure.SUMMARY_FILE).write_text(json.dumps(summary))

  monkeypatch.setattr(train, "train_and_evaluate", fake_train)
  monkeypatch.setattr(measure, "summarize_point", fake_summary)
  monkeypatch.setattr(measure, "finished", lambda point_dir, config: str(point_dir) in done)
  cells = [f"{arm}__lr_max={lr}_seed{seed}" for arm in ("blur", "stride") for lr in (0.1, 0.4)
           for seed in (0, 1)]
  for name in cells + ["stride_seed1", "stride_seed2", "blur_seed1", "blur_seed2"]:
    (tmp_path / "sweep" / ("tuning" if "__" in name else "") / name).mkdir(parents=True)
  workdir = tmp_path / "sweep"
  runner.run_sweep(spec.load(str(tmp_path / "cfg" / "tuned.py")), str(workdir), num_shift_images=64,
                   max_shift=4)

  assert ("At an edge of its grid (the best value may lie beyond it; get_tuning's arm_grids "
          "extends one arm's): stride 0.4 (its highest), blur 0.4 (its highest)\n"
          in capsys.readouterr().out)  # Said as the choice is made, before the seeds train.
  tuned = [r for r in runs if "__" in r[0]]
  assert sorted(r[0] for r in tuned) == sorted(cells)
  assert {(r[2], r[3]) for r in tuned} == {("train[:90%]", "train[90%:]")}
  assert sorted(r[4] for r in tuned) == [0] * 4 + [1] * 4  # Each cell on both tuning seeds.
  final = [r for r in runs if "__" not in r[0]]
  assert sorted(r[0] for r in final) == ["blur_seed1", "blur_seed2", "stride_seed1", "stride_seed2"]
  assert {(r[1], r[2], r[3]) for r in final} == {(0.4, "train", "test")}  # Chosen on validation.
  choice = tuning.read_choice(workdir)
  assert set(choice["values"].values()) == {0.4} and len(choice["grid"]) == 4
  assert choice["seeds"] == [0, 1] and not choice["pilot"]
  cell = next(r for r in choice["grid"] if r["arm"] == "stride" and r["value"] == 0.1)
  assert cell["acc@32"] == pytest.approx(0.6) and cell["per_seed"] == [0.9, 0.3]
  assert cell["n_seeds"] == 2 and cell["std"] == pytest.approx(0.6 / 2 ** 0.5)
  with (workdir / "results.csv").open() as f:
    table = list(csv.DictReader(f))
  assert {r["opt.lr_max"] for r in table} == {"0.400"} and {r["acc@32"] for r in table} == {"0.600"}
  markdown = (workdir / "results.md").read_text()
  assert ("Tuning: opt.lr_max chosen per arm by acc@32 on the validation slice (train[90%:], "
          "trained on train[:90%]), the mean over seeds 0, 1 of each grid cell") in markdown
  assert ("Chosen: stride 0.4, blur 0.4. At an edge of its grid (the best value may lie beyond "
          "it): stride 0.4 (its highest), blur 0.4 (its highest).") in markdown
  with (workdir / "tuning.csv").open() as f:
    grid = list(csv.DictReader(f))
  assert [(r["arm"], r["value"], r["acc@32"], r["n_seeds"], r["per_seed"]) for r in grid][:2] == [
      ("stride", "0.100", "0.600", "2", "0.900 0.300"), ("stride", "0.400", "0.725", "2", "0.700 0.750")]


def test_an_arm_chosen_at_an_edge_is_tuned_further_before_its_seeds(tmp_path, monkeypatch, capsys):
  """`extend_edges`, by the grid's own step (x4 here): `stride` keeps improving upwards
  (0.4, then 1.6, then 6.4, the limit of two extensions, still at the edge); `blur` is
  best at 0.1, its lower edge, then 0.025 is worse (inside now: no further). The seeds train at the final choices; a rerun
  trains nothing more. Nothing is trained: training and summaries are faked."""
  _tuned_sweep_file(tmp_path, "{'name': 'stride', 'model.downsample': 'stride'}, "
                              "{'name': 'blur', 'model.downsample': 'blur'}")
  path = tmp_path / "cfg" / "tuned.py"
  path.write_text(path.read_text().replace("'metric': 'acc@32'}", "'metric': 'acc@32', 'extend_edges': 2}"))
  validation = {"stride": {0.1: 0.3, 0.4: 0.5, 1.6: 0.6, 6.4: 0.7},
                "blur": {0.025: 0.4, 0.1: 0.6, 0.4: 0.5}}
  runs, done = [], set()

  def fake_train(config, workdir):
    runs.append((pathlib.Path(workdir).name, config.opt.lr_max))
    done.add(str(workdir))
    return types.SimpleNamespace(interrupted=None)

  def fake_summary(workdir, name, overrides, config, settings, **kwargs):
    accuracy = (validation[config.model.downsample][config.opt.lr_max]
                if config.data.eval_split == "train[90%:]" else 0.5)
    summary = {"name": name, "options": settings.options(config), "step": 24,
               "overrides": {k: v for k, v in overrides.items() if k != "name"},
               "eval": {"32": {"accuracy": accuracy}}, "best_size": 32, "images_seen": 1,
               "wall_seconds": 1.0}
    (pathlib.Path(workdir) / measure.SUMMARY_FILE).write_text(json.dumps(summary))

  monkeypatch.setattr(train, "train_and_evaluate", fake_train)
  monkeypatch.setattr(measure, "summarize_point", fake_summary)
  monkeypatch.setattr(measure, "finished", lambda point_dir, config: str(point_dir) in done)
  workdir = tmp_path / "sweep"
  sweep = spec.load(str(path))
  runner.run_sweep(sweep, str(workdir), num_shift_images=8, max_shift=4)
  tuned = sorted({(name.split("__")[0], lr) for name, lr in runs if "__" in name})
  assert tuned == [("blur", 0.025), ("blur", 0.1), ("blur", 0.4), ("stride", 0.1),
                   ("stride", 0.4), ("stride", 1.6), ("stride", 6.4)]
  assert sorted({(name, lr) for name, lr in runs if "__" not in name}) == [
      ("blur_seed1", 0.1), ("blur_seed2", 0.1), ("stride_seed1", 6.4), ("stride_seed2", 6.4)]
  out = capsys.readouterr().out
  assert "At an edge of its grid, so tuned one value further: stride 1.6, blur 0.025\n" in out
  assert "At an edge of its grid, so tuned one value further: stride 6.4\n" in out
  markdown = (workdir / "results.md").read_text()
  assert "At an edge of its grid (the best value may lie beyond it): stride 6.4 (its highest)." in markdown
  before = len(runs)
  runner.run_sweep(sweep, str(workdir), num_shift_images=8, max_shift=4)  # The same extensions.
  assert len(runs) == before
  for bad in (-1, True, 1.5):
    with pytest.raises(ValueError, match="extend_edges must be a count"):
      spec.Tuning.from_dict({"field": "opt.lr_max", "grid": [0.1], "metric": "acc@32",
                             "extend_edges": bad})
  assert {r["arm"]: r["value"] for r in tuning.read_choice(workdir)["grid"]
          if r["value"] in (0.025, 6.4)} == {"blur": 0.025, "stride": 6.4}


def _tuning_run(workdir, name, accuracy=None, *, diverged=False, step=None):
  """A tuning run's folder as the sweep leaves it: summarised with `accuracy` at 32 px
  after 60 s of training, diverged, or logged to `step` without a checkpoint."""
  point_dir = workdir / tuning.TUNING_DIR / name
  point_dir.mkdir(parents=True)
  if diverged:
    measure.record_diverged(point_dir, "Non-finite loss at step 3.")
  elif step is not None:
    (point_dir / "metrics.jsonl").write_text(json.dumps({"event": "train", "step": step}) + "\n")
  else:
    (point_dir / measure.SUMMARY_FILE).write_text(json.dumps(
        {"name": name, "overrides": {}, "step": 24, "eval": {"32": {"accuracy": accuracy}}}))
    measure.record_trained_seconds(point_dir, 60.0)


def test_status_follows_the_tuning_to_its_choice_and_edge_extension(tmp_path):
  """`status.report` reads the tuning as the sweep would: a cell's mean once each seed is
  in, a diverged seed makes its cell diverged, a partway one its step; once every run is
  in, the edge extension the sweep would add (`extend_edges`: 1, x4 here) and its runs;
  then the choice. It writes nothing. The runs' files are written here as a sweep writes
  them (nothing trains)."""
  from progressive.sweeps import status  # pylint: disable=import-outside-toplevel

  _tuned_sweep_file(tmp_path, "{'name': 'stride', 'model.downsample': 'stride'}, "
                              "{'name': 'blur', 'model.downsample': 'blur'}")
  path = tmp_path / "cfg" / "tuned.py"
  path.write_text(path.read_text().replace("'metric': 'acc@32'}", "'metric': 'acc@32', 'extend_edges': 1}"))
  sweep, workdir = spec.load(str(path)), tmp_path / "sweep"
  for name, accuracy in [("stride__lr_max=0.1_seed0", 0.3), ("stride__lr_max=0.1_seed1", 0.5),
                         ("stride__lr_max=0.4_seed0", 0.6), ("stride__lr_max=0.4_seed1", 0.7),
                         ("blur__lr_max=0.1_seed0", 0.6), ("blur__lr_max=0.4_seed0", 0.5)]:
    _tuning_run(workdir, name, accuracy)
  _tuning_run(workdir, "blur__lr_max=0.1_seed1", diverged=True)
  _tuning_run(workdir, "blur__lr_max=0.4_seed1", step=10)
  files = sorted(workdir.rglob("*"))
  lines = status.report(sweep, workdir).splitlines()
  assert lines[0] == f"{path} in {workdir}: not running."
  assert lines[1:6] == [
      "Tuning opt.lr_max by acc@32 on train[90%:] (trained on train[:90%]), seeds 0, 1 per "
      "value: 8 runs, 6 finished, 1 diverged, 1 partway.",
      "  stride: 0.1 0.400 | 0.4 0.650",
      "  blur: 0.1 diverged | 0.4 0.500 (1 of 2 seeds; seed 1 at step 10 of 24)",
      "  Not chosen yet: 1 run(s) to go, then up to 1 more value(s) per arm chosen at an edge.",
      "Points: 4, 4 not started.",
  ]
  assert lines[6:8] == ["  stride (opt.lr_max not chosen yet): seeds not started 1, 2",
                        "  blur (opt.lr_max not chosen yet): seeds not started 1, 2"]
  # At 2.5 s a step (60 s for 24): 14 steps of the partway run and 4 points of 24 steps.
  assert lines[8] == ("Time: 6 finished run(s) trained in 6 min (1 min each). Left: 5 run(s) to "
                      "train and 4 point(s) to measure, about 5 min at each arm's pace so far; the "
                      "points' measures come on top (none is timed yet), and any edge extension "
                      "of the tuning (up to 1 value(s) per arm).")
  assert sorted(workdir.rglob("*")) == files  # Nothing written.

  # Every run in: both arms chose their highest value, so each is tuned one value further.
  shutil.rmtree(workdir / tuning.TUNING_DIR / "blur__lr_max=0.4_seed1")
  _tuning_run(workdir, "blur__lr_max=0.4_seed1", 0.3)
  lines = status.report(sweep, workdir).splitlines()
  assert lines[1:5] == [
      "Tuning opt.lr_max by acc@32 on train[90%:] (trained on train[:90%]), seeds 0, 1 per "
      "value: 12 runs, 7 finished, 1 diverged, 4 not started.",
      "  stride: 0.1 0.400 | 0.4 0.650 | 1.6 (0 of 2 seeds)",
      "  blur: 0.1 diverged | 0.4 0.400 | 1.6 (0 of 2 seeds)",
      "  Not chosen yet: 4 run(s) to go.",
  ]
  for name, accuracy in [("stride__lr_max=1.6_seed0", 0.55), ("stride__lr_max=1.6_seed1", 0.65)]:
    _tuning_run(workdir, name, accuracy)
  for seed in (0, 1):
    _tuning_run(workdir, f"blur__lr_max=1.6_seed{seed}", diverged=True)
  lines = status.report(sweep, workdir).splitlines()
  assert lines[2:9] == [
      "  stride: 0.1 0.400 | 0.4 0.650 (chosen) | 1.6 0.600",
      "  blur: 0.1 diverged | 0.4 0.400 (chosen) | 1.6 diverged",
      "  choice.json is not written yet: the sweep writes this one when it runs next.",
      "Points: 4, 4 not started.",
      "  stride (opt.lr_max 0.4): seeds not started 1, 2",
      "  blur (opt.lr_max 0.4): seeds not started 1, 2",
      "Time: 9 finished run(s) trained in 9 min (1 min each). Left: 4 run(s) to train and 4 "
      "point(s) to measure, about 4 min at each arm's pace so far; the points' measures come "
      "on top (none is timed yet).",
  ]
  stale = tuning.choose(sweep, workdir)  # On the grid before the extension, as a stale choice.
  stale["values"] = {k: 0.1 for k in stale["values"]}
  (workdir / tuning.TUNING_DIR / tuning.CHOICE_FILE).write_text(json.dumps(stale))
  assert ("  choice.json holds another choice (made before the grid changed): the sweep writes "
          "this one when it runs next.") in status.report(sweep, workdir).splitlines()
  (tmp_path / "file").write_text("")
  with pytest.raises(ValueError, match=re.escape(f"--workdir={tmp_path / 'file'} is a file, not a sweep folder")):
    status.report(sweep, tmp_path / "file")


def test_an_arm_tuned_over_its_own_grid(tmp_path):
  """`arm_grids`: the named arm's tuning runs take its own values, the others the grid;
  an arm the sweep lacks is refused in one line; `--tuning_grid` replaces every arm's."""
  _tuned_sweep_file(tmp_path, "{'name': 'stride', 'model.downsample': 'stride'}, "
                              "{'name': 'blur', 'model.downsample': 'blur'}")
  path = tmp_path / "cfg" / "tuned.py"
  path.write_text(path.read_text().replace("'metric': 'acc@32'}",
                                           "'metric': 'acc@32', 'arm_grids': {'blur': [0.01, 0.02]}}"))
  sweep = spec.load(str(path))
  cells = {(t.name.rsplit("__", 1)[0], t.value, t.overrides["seed"]) for t in tuning.tuning_points(sweep)}
  assert cells == {(arm, value, seed) for arm, grid in (("stride", (0.1, 0.4)), ("blur", (0.01, 0.02)))
                   for value in grid for seed in (0, 1)}
  assert {t.value for t in tuning.tuning_points(sweep.with_grid([0.2]))} == {0.2}
  path.write_text(path.read_text().replace("{'blur':", "{'max':"))
  with pytest.raises(ValueError, match=r"arm_grids names \['max'\], not arms of .*: its arms are "
                                       r"\['blur', 'stride'\]\.$"):
    spec.load(str(path))
  # The edges of each arm's own grid: the lowest, the highest, none inside or of one value.
  choice = {"values": {"a": 0.01, "b": 0.2, "c": 0.4, "d": 0.1},
            "grid": [{"arm": arm, "key": key, "value": v} for arm, key, grid in (
                ("blur", "a", (0.01, 0.02)), ("stride", "b", (0.1, 0.2, 0.4)),
                ("max", "c", (0.1, 0.4)), ("one", "d", (0.1,))) for v in grid]}
  assert tuning.at_edges(choice) == [("blur", 0.01, "lowest"), ("max", 0.4, "highest")]


def _choice_of(sweep, values: dict[str, float]) -> dict:
  """A tuning choice as `tuning.choose` writes it for `sweep`, `values` by arm name."""
  keys = {t.name.rsplit("__", 1)[0]: t.key for t in tuning.tuning_points(sweep)}
  return {"field": "opt.lr_max", "metric": "acc@{size}", "splits": ["train[:90%]", "train[90%:]"],
          "seeds": [0, 1], "pilot": False, "values": {keys[a]: v for a, v in values.items()},
          "grid": [{"arm": a, "key": keys[a], "value": v, "acc@{size}": 0.9, "std": 0.01,
                    "n_seeds": 2, "per_seed": [0.89, 0.91]} for a, v in values.items()]}


def test_a_check_at_twice_the_budget_borrows_the_first_budgets_rates(tmp_path, capsys):
  """`--tuning_from`: px64_long's arms (twice the epochs, so other tuning keys) take the
  rates px64 chose for the arms of the same names, and no tuning runs; the command
  prints each point at its borrowed rate, and refuses what it cannot borrow in one line.
  px64_long is a second budget with every seed; its own check, px64_long_check, twice it
  again with two seeds, borrows the same rates."""
  first, check = (spec.load(f"{REPO}/configs/train_test_size.py:{v}") for v in ("px64", "px64_long"))
  chosen = {"flip48": 0.4, "flip64": 0.2, "rrc48": 0.1, "rrc64": 0.2}
  source = tmp_path / "first" / tuning.TUNING_DIR
  source.mkdir(parents=True)
  (source / tuning.CHOICE_FILE).write_text(json.dumps(_choice_of(first, chosen)))
  workdir = tmp_path / "check"
  choice = tuning.borrow(check, workdir, tmp_path / "first")
  assert choice["from"] == str(tmp_path / "first") and tuning.read_choice(workdir) == choice
  points = check.expand(choice)
  assert {o["seed"] for _, o, _ in points} == {0, 1, 2, 3, 4}
  assert {n: (c.opt.lr_max, c.stages[0]["epochs"]) for n, _, c in points if n.endswith("seed0")} == {
      f"{arm}_seed0": (lr, 32) for arm, lr in chosen.items()}
  long_check = spec.load(f"{REPO}/configs/train_test_size.py:px64_long_check")
  twice = long_check.expand(tuning.borrow(long_check, tmp_path / "long_check64", tmp_path / "first"))
  assert {(n, c.opt.lr_max, c.stages[0]["epochs"]) for n, _, c in twice if "rrc48" in n} == {
      ("rrc48_seed0", 0.1, 64), ("rrc48_seed1", 0.1, 64)}
  # The 32 px sweep at twice the budget is checked the same way, at 24 epochs.
  long, long_check = (spec.load(f"{REPO}/configs/train_test_size.py:{v}") for v in ("long", "long_check"))
  (tmp_path / "long" / tuning.TUNING_DIR).mkdir(parents=True)
  (tmp_path / "long" / tuning.TUNING_DIR / tuning.CHOICE_FILE).write_text(json.dumps(_choice_of(
      long, {"flip24": 0.4, "flip32": 0.8, "rrc24": 0.4, "rrc32": 0.4})))
  borrowed = long_check.expand(tuning.borrow(long_check, tmp_path / "long_check", tmp_path / "long"))
  assert {(n, c.opt.lr_max, c.stages[0]["epochs"]) for n, _, c in borrowed if "flip32" in n} == {
      ("flip32_seed0", 0.8, 24), ("flip32_seed1", 0.8, 24)}
  assert not tuning.made_otherwise(choice, check)  # Aggregation keeps it, and says whose it is.
  text = "\n".join(aggregate._tuning_lines(workdir, choice))
  assert f"chosen per arm by the sweep in {tmp_path / 'first'} (this sweep ran no tuning" in text
  assert "Chosen: flip48 0.4, flip64 0.2, rrc48 0.1, rrc64 0.2." in text
  tuning.borrow(check, workdir, tmp_path / "first")  # Again (a resume): the same choice.
  fv = cli.parse(sweep_command.COMMAND, ["prog", f"--config={REPO}/configs/train_test_size.py:px64_long",
                                         f"--workdir={workdir}", f"--tuning_from={tmp_path / 'first'}",
                                         "--print_commands"])
  sweep_command._main(fv)
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == len(points) and not any("/tuning/" in line for line in lines)
  assert "--config.opt.lr_max=0.4" in next(line for line in lines if "flip48_seed1" in line)
  # What cannot be borrowed: no choice there; a check whose points may have trained under
  # another choice (the first budget chose again, differently); an arm the source lacks.
  def command(target, source_dir):
    return cli.parse(sweep_command.COMMAND, [
        "prog", f"--config={REPO}/configs/train_test_size.py:px64_long", f"--workdir={target}",
        f"--tuning_from={source_dir}"])

  with pytest.raises(cli.Error, match="holds no tuning choice"):
    sweep_command._main(command(tmp_path / "fresh", tmp_path / "none"))  # Before anything trains.
  (source / tuning.CHOICE_FILE).write_text(json.dumps(_choice_of(first, {**chosen, "rrc64": 0.4})))
  with pytest.raises(cli.Error, match="already holds another tuning choice"):
    sweep_command._main(command(workdir, tmp_path / "first"))
  (source / tuning.CHOICE_FILE).write_text(json.dumps(_choice_of(first, {"flip48": 0.4})))
  with pytest.raises(ValueError, match="has no arm flip64, rrc48, rrc64 of"):
    tuning.borrow(check, tmp_path / "other", tmp_path / "first")
  with pytest.raises(ValueError, match="goes with neither --tune_only nor --tuning_grid"):
    runner.run_sweep(check, str(tmp_path / "other"), tune_only=True, tuning_from=str(tmp_path / "first"))


def test_a_borrowed_choice_trains_the_points_and_no_tuning_run(tmp_path, monkeypatch):
  first, check = (spec.load(f"{REPO}/configs/train_test_size.py:{v}")
                  for v in ("px64", "px64_long_check"))
  (tmp_path / "first" / tuning.TUNING_DIR).mkdir(parents=True)
  (tmp_path / "first" / tuning.TUNING_DIR / tuning.CHOICE_FILE).write_text(json.dumps(
      _choice_of(first, {"flip48": 0.4, "flip64": 0.2, "rrc48": 0.1, "rrc64": 0.2})))
  runs = []
  monkeypatch.setattr(train, "train_and_evaluate", lambda config, workdir: runs.append(
      (pathlib.Path(workdir).relative_to(tmp_path), config.opt.lr_max)) or types.SimpleNamespace(
          interrupted=None))
  monkeypatch.setattr(runner, "_measure", lambda *args: None)
  monkeypatch.setattr(aggregate, "aggregate", lambda *args, **kwargs: [])
  runner.run_sweep(check, str(tmp_path / "check"), tuning_from=str(tmp_path / "first"))
  assert sorted(runs) == sorted((pathlib.Path("check") / f"{arm}_seed{seed}", lr) for arm, lr in (
      ("flip48", 0.4), ("flip64", 0.2), ("rrc48", 0.1), ("rrc64", 0.2)) for seed in (0, 1))


def test_a_rate_that_diverges_is_never_chosen_nor_trained_again(tmp_path, monkeypatch, capsys):
  """A tuning run stopped by a non-finite loss marks its cell diverged (recorded, so a
  rerun skips it): the arm takes its best cell that did not; an arm whose every cell
  diverged is refused, naming it; a final point that diverges is named in results.md."""
  _tuned_sweep_file(tmp_path, "{'name': 'stride', 'model.downsample': 'stride'}")
  runs = []

  def fake_train(config, workdir):
    runs.append(pathlib.Path(workdir).name)
    if config.opt.lr_max >= diverge_at and not (config.seed == 0 and "tuning" in workdir):
      raise train.NonFiniteLossError(f"Non-finite loss nan at step 3 (lr {config.opt.lr_max}).")
    return types.SimpleNamespace(interrupted=None)

  def fake_summary(workdir, name, overrides, config, settings, **kwargs):
    summary = {"name": name, "options": settings.options(config), "overrides": overrides,
               "step": 24, "eval": {"32": {"accuracy": config.opt.lr_max}}, "best_size": 32}
    (pathlib.Path(workdir) / measure.SUMMARY_FILE).write_text(json.dumps(summary))
    return summary

  monkeypatch.setattr(train, "train_and_evaluate", fake_train)
  monkeypatch.setattr(measure, "summarize_point", fake_summary)
  monkeypatch.setattr(measure, "finished", lambda point_dir, config: False)
  monkeypatch.setattr(aggregate, "aggregate", lambda *args, **kwargs: [])
  tuned = spec.load(str(tmp_path / "cfg" / "tuned.py"))
  diverge_at = 0.4  # Seed 1 of the 0.4 cell diverges; accuracy is the rate, so 0.4 would win.
  runner.run_sweep(tuned, str(tmp_path / "sweep"), tune_only=True)
  choice = tuning.read_choice(tmp_path / "sweep")
  assert set(choice["values"].values()) == {0.1}
  cell = next(r for r in choice["grid"] if r["value"] == 0.4)
  assert cell["diverged"] == 1 and cell["acc@32"] is None and cell["per_seed"] == [0.4, None]
  with (tmp_path / "sweep" / "tuning.csv").open() as f:
    assert [(r["value"], r["acc@32"], r["diverged"]) for r in csv.DictReader(f)] == [
        ("0.100", "0.100", "0"), ("0.400", "-", "1")]
  runs.clear()
  runner.run_sweep(tuned, str(tmp_path / "sweep"), tune_only=True)  # Nothing trains again.
  assert runs == [] and "[stride__lr_max=0.4_seed1] diverged (non-finite loss) already" in (
      capsys.readouterr().out)
  diverge_at = 0.1  # Every cell loses a seed: nothing to choose.
  with pytest.raises(ValueError, match=r"Every opt.lr_max of the grid diverged for stride .*"
                                       "extend the grid below its lowest value"):
    runner.run_sweep(tuned, str(tmp_path / "all"), tune_only=True)
  # A final point that diverges is left out, and results.md says which and why.
  monkeypatch.undo()
  measure.record_diverged(tmp_path / "final" / "stride_seed1", "Non-finite loss nan at step 3.")
  finished = {"name": "stride_seed2", "step": 24, "eval": {"32": {"accuracy": 0.5}},
              "overrides": {"model.downsample": "stride", "seed": 2}}
  monkeypatch.setattr(measure, "read_summary", lambda point_dir: dict(finished) if pathlib.Path(
      point_dir).name == "stride_seed2" else None)
  rows = aggregate.aggregate(tuned, str(tmp_path / "final"))
  assert [r["name"] for r in rows] == ["stride_seed2"]
  assert ("1 of 2 points finished; missing: stride_seed1.\n\nDiverged (stopped on a non-finite "
          "loss, left out): stride_seed1: Non-finite loss nan at step 3.") in (
              tmp_path / "final" / "results.md").read_text()


@pytest.mark.slow
def test_tune_only_trains_the_grid_and_no_point(tmp_path, monkeypatch):
  _tuned_sweep_file(tmp_path, "{'name': 'stride', 'model.downsample': 'stride'}")
  runs = []

  def fake_train(config, workdir):
    runs.append(pathlib.Path(workdir).name)
    return types.SimpleNamespace(interrupted=None)

  def fake_summary(workdir, name, overrides, config, settings, **kwargs):
    summary = {"name": name, "options": {"measures": "tuning"}, "overrides": overrides, "step": 24,
               "eval": {"32": {"accuracy": {0.05: 0.8, 0.1: 0.5, 0.4: 0.7}[config.opt.lr_max]}},
               "best_size": 32}
    pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
    (pathlib.Path(workdir) / measure.SUMMARY_FILE).write_text(json.dumps(summary))

  monkeypatch.setattr(train, "train_and_evaluate", fake_train)
  monkeypatch.setattr(measure, "summarize_point", fake_summary)
  monkeypatch.setattr(measure, "finished", lambda point_dir, config: False)
  tuned = spec.load(str(tmp_path / "cfg" / "tuned.py"))
  workdir = tmp_path / "sweep"
  assert runner.run_sweep(tuned, str(workdir), tune_only=True) == []
  assert sorted(runs) == ["stride__lr_max=0.1_seed0", "stride__lr_max=0.1_seed1",
                          "stride__lr_max=0.4_seed0", "stride__lr_max=0.4_seed1"]  # No seed point.
  with (workdir / "tuning.csv").open() as f:
    assert [(r["value"], r["acc@32"], r["std"], r["n_seeds"]) for r in csv.DictReader(f)] == [
        ("0.100", "0.500", "0.000", "2"), ("0.400", "0.700", "0.000", "2")]
  assert set(tuning.read_choice(workdir)["values"].values()) == {0.4}
  with pytest.raises(ValueError, match="defines no tuning .*--tune_only has nothing to run"):
    runner.run_sweep(spec.load(f"{REPO}/configs/antialias.py:smoke"), str(tmp_path / "none"),
                     tune_only=True)
  # Another grid, checked in another workdir: only its values run, and its choice is its own.
  runs.clear()
  below = tmp_path / "below"
  runner.run_sweep(tuned, str(below), tune_only=True, tuning_grid=[0.05, 0.1])
  assert sorted(runs) == ["stride__lr_max=0.05_seed0", "stride__lr_max=0.05_seed1",
                          "stride__lr_max=0.1_seed0", "stride__lr_max=0.1_seed1"]
  with (below / "tuning.csv").open() as f:
    assert [r["value"] for r in csv.DictReader(f)] == ["0.05", "0.100"]
  assert set(tuning.read_choice(below)["values"].values()) == {0.05}
  with pytest.raises(ValueError, match="--tuning_grid needs --tune_only"):
    runner.run_sweep(tuned, str(below), tuning_grid=[0.05])
  with pytest.raises(ValueError, match="already holds a tuning choice made on another grid"):
    runner.run_sweep(tuned, str(workdir), tune_only=True, tuning_grid=[0.05])
  fv = cli.parse(sweep_command.COMMAND, ["prog", f"--config={tmp_path / 'cfg' / 'tuned.py'}",
                                 f"--workdir={workdir}", "--tune_only", "--tuning_grid=0.05"])
  with pytest.raises(cli.Error, match="already holds a tuning choice made on another grid"):
    sweep_command._main(fv)  # One line from the command, before anything runs.
  # The same check again (a resume) is allowed, and keeps its choice.
  runner.run_sweep(tuned, str(below), tune_only=True, tuning_grid=[0.05, 0.1])
  assert set(tuning.read_choice(below)["values"].values()) == {0.05}


def test_tuning_refuses_to_choose_on_the_test_split(tmp_path):
  (tmp_path / "cfg").mkdir()
  (tmp_path / "cfg" / "bad.py").write_text(
      "from configs import default\n\ndef get_config(arg):\n  return default.get_config('smoke')\n\n"
      "def get_sweep(arg):\n  return [{'seed': 1}]\n\n"
      "def get_tuning(arg):\n  return {'field': 'opt.lr_max', 'grid': [0.1], 'metric': 'acc@32',"
      " 'eval_split': 'test'}\n")
  with pytest.raises(ValueError, match="must be a slice of the training split"):
    spec.load(str(tmp_path / "cfg" / "bad.py"))


def test_a_tuning_cell_takes_two_seeds_unless_a_pilot():
  spec_ = {"field": "opt.lr_max", "grid": [0.1, 0.2], "metric": "acc@32"}
  assert spec.Tuning.from_dict(spec_).seeds == spec.TUNING_SEEDS == (0, 1)
  assert spec.Tuning.from_dict({**spec_, "seeds": [3, 4, 5]}).seeds == (3, 4, 5)
  for seeds in ((0,), 7):
    with pytest.raises(ValueError, match=re.escape(
        "get_tuning chooses opt.lr_max on 1 seed per grid cell (seeds [")
        + r".*at least 2 seeds.*give 'seeds': \(0, 1\), or mark a first look 'pilot': True\."):
      spec.Tuning.from_dict({**spec_, "seeds": seeds})
  pilot = spec.Tuning.from_dict({**spec_, "seeds": (0,), "pilot": True})
  assert pilot.seeds == (0,) and pilot.pilot
  for bad in ((), (0, 0), (0, 1.5)):
    with pytest.raises(ValueError, match="seeds must be distinct integers"):
      spec.Tuning.from_dict({**spec_, "seeds": bad})
  # A stored choice made on other tuning seeds (one seed, before they were several) is not
  # the sweep's: its commands are the tuning runs again.
  sweep = types.SimpleNamespace(tuning=spec.Tuning.from_dict(spec_))
  assert tuning.made_otherwise({"values": {}}, sweep) and not tuning.made_otherwise(
      {"seeds": [0, 1]}, sweep) and not tuning.made_otherwise(None, sweep)
  assert tuning.seeds_text({"seeds": [0, 1]}) == "the mean over seeds 0, 1 of each grid cell"
  assert tuning.seeds_text({"seeds": [0], "pilot": True}).startswith("one seed per grid cell (a pilot")


def test_findings_placeholders_render_intervals_comparisons_and_the_grid(tmp_path, monkeypatch):
  make_findings = config_files.load_module(str(REPO / "experiments/make_findings.py"))
  monkeypatch.setattr(make_findings, "RESULTS", tmp_path)
  (tmp_path / "s").mkdir()
  (tmp_path / "s" / "results_intervals.csv").write_text(
      "name,metric,mean,std,n,low,high\na,acc@32,0.5,0.1,5,0.4,0.6\nb,acc@32,0.25,0.1,5,0.15,0.35\n"
      "b,acc@16,0.125,,1,,\n")
  (tmp_path / "s" / "comparisons.csv").write_text(
      "metric,arm,baseline,difference,low,high,p,n_arm,n_baseline,verdict\n"
      "acc@16,a,b,0.1,-0.2,0.4,0.5,5,5,not resolved\nacc@32,a,b,0.25,0.1,0.4,0.01,5,5,arm higher\n")
  (tmp_path / "s" / "tuning.csv").write_text(
      "arm,value,acc@32,diverged\na,0.2,0.5,0\na,0.4,0.75,0\nb,0.2,0.25,0\nb,0.1,-,1\n")
  (tmp_path / "s" / "results_mean.csv").write_text("name,seeds,images_seen,acc@32\na,0 1,512,0.5 ± 0.1\n")
  assert make_findings.render("{{means:s:images_seen,acc@32}}").splitlines()[2] == "| a | 512 | 0.5 ± 0.1 |"
  with pytest.raises(ValueError, match="no columns"):
    make_findings.render("{{means:s:nothing}}")
  text = make_findings.render("{{intervals:s:acc@32,acc@16}}\n{{comparisons:s:acc@32}}\n{{tuning:s}}")
  lines = text.splitlines()
  assert lines[2] == "| a | 0.500 [0.400, 0.600] (n=5) | - |"
  assert lines[3] == "| b | 0.250 [0.150, 0.350] (n=5) | 0.125 (n=1) |"
  assert lines[6] == "| acc@32 | a - b | +0.250 [+0.100, +0.400] | 0.01 | 5 / 5 | arm higher |"
  assert len(lines) == 7 + 4 and lines[-4:] == [  # An arm's own grid; a cell that diverged.
      "| arm (acc@32 on the validation slice) | 0.1 | 0.2 | 0.4 |", "| --- | --- | --- | --- |",
      "| a | - | 0.500 | 0.750 |", "| b | diverged | 0.250 | - |"]
  # The arms tuned at an edge of their own grid (b's 0.1 diverged: its 0.2 is the best).
  assert make_findings.render("{{edges:s}}") == (
      "At an edge of the grid, so the best value may lie beyond it: a 0.4 (the highest of "
      "0.2-0.4, `s`); b 0.2 (the highest of 0.1-0.2, `s`).")
  (tmp_path / "t").mkdir()
  (tmp_path / "t" / "tuning.csv").write_text("arm,value,acc@32\na,0.1,0.5\na,0.2,0.75\na,0.4,0.6\n")
  assert make_findings.render("{{edges:t}}") == "No arm's tuned value is at an edge of its grid."
  assert make_findings.sweep_names("{{intervals:s:acc@32}} {{figure:t}}") == ["s", "t"]
  with pytest.raises(ValueError, match="needs its metrics"):
    make_findings.render("{{comparisons:s}}")


def test_columns_are_unique_when_the_loop_and_the_controls_both_recalibrate():
  """The training loop's eval rows carry accuracy_bn (config.eval_bn_images) and the
  sweep's controls fill acc_bn@S too: one column each, the control's value in it."""
  summary = {"name": "p", "overrides": {"seed": 0}, "eval": {
      "16": {"accuracy": 0.5, "accuracy_bn": 0.25, "accuracy_bn_shape": 0.125},
      "32": {"accuracy": 0.75}},
             "eval_bn": {"16": {"accuracy": 0.375, "accuracy_shape": 0.5}},
             "eval_canvas_bn": {"16": {"accuracy": 0.625}}}
  row = tables.point_row(summary)
  columns = tables.columns([summary], [row])
  assert len(columns) == len(set(columns))
  assert {"acc_bn@16", "acc_bn_shape@16", "acc_canvas_bn@16"} <= set(columns)
  assert "acc_canvas_bn_bn@16" not in columns
  assert row["acc_bn@16"] == 0.375 and row["acc_canvas_bn@16"] == 0.625


def test_canvas_protocol_and_shift_image_counts_are_columns_beside_the_shift_measures():
  """`--canvas_topk`'s measures (`aw_*`, intervals left to the summary) and how many images
  the shift measures used become columns, averaged over seeds like the other measures."""
  summary = {"name": "p", "overrides": {"seed": 0}, "eval": {"32": {"accuracy": 0.5}},
             "jaggedness": 0.25, "consistency": 0.75, "shift_images": 7, "shift_period": 8,
             "aw_jag_top5": 0.5, "aw_jag_top5_ci": [0.25, 0.75], "aw_changed_top5": 0.375,
             "aw_acc_top5": 0.875, "aw_canvas": 48, "aw_images": 7}
  row = tables.point_row(summary)
  columns = tables.columns([summary], [row])
  assert columns[columns.index("consistency"):columns.index("shift_period")] == [
      "consistency", "shift_images", "aw_jag_top5", "aw_changed_top5", "aw_acc_top5",
      "aw_images"]
  assert "aw_jag_top5_ci" not in columns and row["aw_acc_top5"] == 0.875
  assert tables._averaged("aw_jag_top5") and not tables._averaged("aw_images")


@pytest.mark.slow
def test_the_canvas_figure_shows_each_arm_as_its_measure_counts_it(antialias_smoke, tmp_path,
                                                                   monkeypatch):
  """With `--canvas_topk` the aggregation draws Azulay & Weiss's figure, one column per seed
  group's first seed, each the protocol its `aw_*` columns summarise (the same images)."""
  workdir, common, _ = antialias_smoke
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy)
  drawn = {}
  draw = plots.canvas_by_arm
  monkeypatch.setattr(plots, "canvas_by_arm", lambda results, **kw: drawn.update(results) or draw(
      results, **kw))
  rows = aggregate.aggregate(spec.load(f"{REPO}/configs/antialias.py:smoke", common), str(copy),
                             num_shift_images=16, canvas_topk=1)
  assert list(drawn) == ["simple_cnn_stride (seed 0)", "simple_cnn_blur3 (seed 0)"]
  assert (copy / tables.CANVAS_FIGURE).stat().st_size > 0
  assert f"({tables.CANVAS_FIGURE})" in (copy / "results.md").read_text()
  for row, result in zip(rows, drawn.values()):
    assert len(result["correct"]) == row["aw_images"] == 16  # The split's first 16 images.
    assert result["mean_changes"] == pytest.approx(row["aw_jag_top1"])
    assert result["accuracy"] == pytest.approx(row["aw_acc_top1"])
  # A point copied without its checkpoints (summarised elsewhere) has no network to draw.
  shutil.rmtree(copy / "simple_cnn_blur3" / "checkpoints")
  drawn.clear()
  assert tables.write_canvas_figure([measure.read_summary(copy / r["name"]) for r in rows], copy,
                                    topk=1, num_images=4)
  assert list(drawn) == ["simple_cnn_stride (seed 0)"]


@pytest.mark.slow
def test_a_point_finished_under_another_config_stops_the_sweep(antialias_smoke, tmp_path):
  # As when a tuning grid is extended and the choice moves: the finished point's
  # results would be reported as the new learning rate's, so the sweep refuses at once.
  workdir, common, _ = antialias_smoke
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy)
  config_path = copy / "simple_cnn_blur3" / "config.json"
  stored = json.loads(config_path.read_text())
  stored["opt"]["lr_max"] = 0.123
  config_path.write_text(json.dumps(stored))
  before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
  with pytest.raises(errors.Error, match=r"^1 finished point\(s\) in .* under another config .*: "
                     r"simple_cnn_blur3 \(opt\.lr_max: 0\.123 -> 0\.2\);.*Move those folders aside"):
    runner.run_sweep(spec.load(f"{REPO}/configs/antialias.py:smoke", common), str(copy),
                     num_shift_images=16)
  assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before  # Nothing ran.
  # Run-control fields (where the data is, the progress bar) may differ.
  stored["opt"]["lr_max"], stored["data"]["data_dir"] = 0.2, "/elsewhere"
  config_path.write_text(json.dumps(stored))
  assert not measure.trained_otherwise(copy / "simple_cnn_blur3", spec.load(
      f"{REPO}/configs/antialias.py:smoke", common).expand()[1].config)


def test_table_cells_keep_small_values_exact():
  # A learning rate of 0.0125 must not read as 0.013 in results.md or tuning.csv.
  assert tables.cell(0.0125) == "0.0125" and tables.cell(0.00143) == "0.00143"
  assert tables.cell(0.52349) == "0.523" and tables.cell(0.0) == "0.000"
  assert tables.cell(1234.7) == "1235" and tables.cell(-0.05) == "-0.05"
