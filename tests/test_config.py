"""Bad configs fail fast, naming the field and what it may be."""

import ast
import json
import pathlib
import subprocess
import sys
from collections.abc import Mapping

import ml_collections
import pytest

from configs import default
from progressive import config as config_lib
from progressive.config import ConfigError, validate
from progressive.models import geometry


def _set_stage(config, index, stage):
  stages = list(config.stages)
  stages[index] = stage
  config.stages = tuple(stages)


def smoke():
  return default.get_config("smoke")


def test_default_and_smoke_configs_are_valid():
  validate(default.get_config(), num_devices=4)
  validate(smoke(), num_devices=4)


@pytest.mark.parametrize(
    "edit,pattern",
    [
        (lambda c: setattr(c.model, "name", "resnet9000"), r"config\.model\.name must be one of \['resnet18', .*, 'xresnet50'\], got 'resnet9000'"),
        (lambda c: setattr(c.data, "name", "mnist_typo"), r"config\.data\.name='mnist_typo' is neither 'scale_shapes' nor a TFDS dataset"),
        (lambda c: setattr(c.data, "builder_config", "huge"), r"builder_config must be one of \['default', 'default_fresh', .*, 'sweep32', 'sweep32_fresh'\]"),
        (lambda c: setattr(c.opt, "name", "lion"), r"config\.opt\.name must be one of \['adamw', 'sgd'\]"),
        (lambda c: setattr(c.opt, "cycle", "epoch"), r"config\.opt\.cycle must be one of"),
        (lambda c: setattr(c.model, "head", "attention"), r"config\.model\.head must be one of"),
        (lambda c: setattr(c, "batch_size", 62), r"config\.batch_size=62 does not divide evenly over 4 devices"),
        (lambda c: setattr(c, "stages", []), r"config\.stages must list at least one stage"),
        (lambda c: _set_stage(c, 0, dict(size=0, steps=2)), r"config\.stages\[0\]\.size must be a positive integer, got 0"),
        (lambda c: _set_stage(c, 0, dict(size=-16, steps=2)), r"config\.stages\[0\]\.size must be a positive integer"),
        (lambda c: _set_stage(c, 1, dict(size=16, steps=2)), r"config\.stages\[1\]\.size=16 does not grow"),
        (lambda c: _set_stage(c, 0, dict(size=4, steps=2)), r"config\.stages\[0\]\.size=4 is below 8"),
        (lambda c: _set_stage(c, 0, dict(size=16)), r"exactly one of 'epochs' or 'steps'"),
        (lambda c: _set_stage(c, 0, dict(size=16, steps=2, lr=3)), r"unknown keys \['lr'\]"),
        (lambda c: _set_stage(c, 0, dict(size=16, steps=2, batch_size=30)), r"config\.stages\[0\]\.batch_size=30 does not divide"),
        (lambda c: setattr(c, "eval_sizes", (16, 2)), r"config\.eval_sizes\[1\]=2 is below 8"),
        (lambda c: setattr(c.opt, "lr_max", 0.0), r"config\.opt\.lr_max must be positive"),
        (lambda c: setattr(c.model, "dtype", "float16"), r"config\.model\.dtype must be one of"),
        (lambda c: setattr(c.model, "head_grid", 0), r"config\.model\.head_grid must be a positive integer, got 0"),
        (lambda c: setattr(c.model, "max_blur_pool", "torch"), r"config\.model\.max_blur_pool must be one of \['same', 'zhang'\], got 'torch'"),
    ],
)
def test_invalid_configs_name_the_field(edit, pattern):
  config = smoke()
  edit(config)
  with pytest.raises(ConfigError, match=pattern):
    validate(config, num_devices=4)


def test_non_increasing_sizes_allowed_when_not_required():
  config = smoke()
  _set_stage(config, 1, dict(size=16, steps=2))
  config.require_increasing_sizes = False
  validate(config, num_devices=4)


def test_flatten_head_needs_one_size():
  config = smoke()
  config.model.head = "flatten"
  with pytest.raises(ConfigError, match="ties the weights to one input size"):
    validate(config, num_devices=4)
  config.stages = [dict(size=32, steps=2)]
  config.eval_sizes = (32,)
  validate(config, num_devices=4)


def test_adaptive_head_runs_at_every_size():
  config = smoke()
  config.model.head = "adaptive"
  validate(config, num_devices=4)  # Stages at 16, 24 and 32 px.


@pytest.mark.slow
def test_cli_reports_config_error_before_any_work(tmp_path):
  workdir = tmp_path / "run"
  result = subprocess.run(
      [
          sys.executable, "-m", "progressive", "train", "--config=configs/default.py:smoke",
          f"--workdir={workdir}", "--config.batch_size=63",
      ],
      capture_output=True, text=True, timeout=120, cwd=pathlib.Path(__file__).parents[1],
  )
  assert result.returncode != 0
  assert "config.batch_size=63 does not divide evenly" in result.stderr
  assert not workdir.exists()  # Nothing written, nothing prepared.


@pytest.mark.parametrize(
    "overrides,pattern",
    [
        (dict(downsample="foo"), r"config\.model\.downsample must be one of \['avg', 'blur', 'max', 'stride'\], got 'foo'\."),
        (dict(blur_size=0), r"config\.model\.blur_size must be an integer in 1\.\.7, got 0"),
        (dict(blur_size=8), r"config\.model\.blur_size must be an integer in 1\.\.7, got 8"),
        (dict(blur_padding="circular"), r"config\.model\.blur_padding must be one of \['reflect', 'zero'\]"),
        (dict(width=0.0), r"config\.model\.width must be a positive number, got 0\.0"),
        (dict(dilation=0), r"config\.model\.dilation must be a positive integer"),
        (dict(batch_norm="yes"), r"config\.model\.batch_norm must be True or False"),
        (dict(small_stem=1), r"config\.model\.small_stem must be True or False"),
        (dict(name="resnet18", zero_init_residual=True, batch_norm=False), r"zero_init_residual=True .* needs config\.model\.batch_norm=True"),
        (dict(head_hidden=(64, 0)), r"config\.model\.head_hidden\[1\] must be a positive integer"),
        (dict(name="vgg"), r"config\.model\.vgg_layers must list at least one conv width for name='vgg'"),
        (dict(name="vgg", vgg_layers=(8, "M", "X")), r"config\.model\.vgg_layers\[2\] \(a conv width or 'M'\) must be a positive integer, got 'X'"),
        (dict(name="vgg16", vgg_layers=(8, "M")), r"vgg_layers only applies to name='vgg', not 'vgg16'"),
        (dict(channels=()), r"config\.model\.channels must list at least one width"),
    ],
)
def test_invalid_model_fields_name_the_field(overrides, pattern):
  config = smoke()
  # A fresh ConfigDict: the command line could not give a bool field a string, Python can.
  config.model = ml_collections.ConfigDict({**config.model.to_dict(), **overrides})
  config.stages = [dict(size=32, steps=2)]
  config.eval_sizes = (32,)
  with pytest.raises(ConfigError, match=pattern):
    validate(config, num_devices=4)


@pytest.mark.parametrize(
    "overrides,min_size",
    [
        (dict(name="simple_cnn"), 8),  # The smoke config's three stride-2 convs.
        (dict(name="vgg11"), 32),
        (dict(name="vgg", vgg_layers=(8, "M", 16, "M")), 4),
        (dict(name="resnet18"), 32),
        (dict(name="resnet50", small_stem=True, downsample="blur"), 8),
    ],
)
def test_stage_sizes_below_the_models_minimum_are_rejected(overrides, min_size):
  config = smoke()
  config.model.update(overrides)
  config.stages = [dict(size=min_size, steps=2)]
  config.eval_sizes = (min_size,)
  validate(config, num_devices=4)
  config.stages = [dict(size=min_size - 1, steps=2)]
  pattern = rf"config\.stages\[0\]\.size={min_size - 1} is below {min_size}"
  with pytest.raises(ConfigError, match=pattern):
    validate(config, num_devices=4)


@pytest.mark.parametrize(
    "arg",
    [
        "resnet18", "vgg11,downsample=blur", "vgg16,downsample=avg",
        "resnet50,downsample=blur,blur_size=5,smoke", "vgg,smoke",
    ],
)
def test_zoo_configs_are_valid(arg):
  from configs import zoo  # pylint: disable=import-outside-toplevel

  validate(zoo.get_config(arg), num_devices=4)


def test_zoo_config_rejects_unknown_settings():
  from configs import zoo  # pylint: disable=import-outside-toplevel

  with pytest.raises(ValueError, match="Bad setting 'colour=red'"):
    zoo.get_config("resnet18,colour=red")
  with pytest.raises(ValueError, match="Unknown model 'alexnet'"):
    zoo.get_config("alexnet")


# --- The schema: config_lib.FIELDS ------------------------------------------------


def test_every_field_is_in_the_table_and_every_default_validates():
  names = [field.name for field in config_lib.FIELDS]
  config = config_lib.default_config()
  assert sorted(config_lib.field_names(config)) == sorted(names)
  validate(config, num_devices=4)  # Every default works.
  validate(smoke(), num_devices=4)
  for field in config_lib.FIELDS:
    assert field.on_resume in config_lib.ON_RESUME, field.name
    assert (field.default is None) == (field.placeholder is not None), field.name


def _typed(value):
  """`value` with the type of every part, so that 1 and 1.0, or () and [], differ."""
  if isinstance(value, (tuple, list)):
    return type(value), tuple(_typed(v) for v in value)
  if isinstance(value, Mapping):
    return type(value), {k: _typed(v) for k, v in value.items()}
  return type(value), value


def _ref(config, name: str):
  *parents, leaf = name.split(".")
  for parent in parents:
    config = config[parent]
  return config.get_ref(leaf)


def test_configs_default_writes_out_the_schema_defaults():
  """configs/default.py shows every default; the schema holds them too (for `with_defaults`)."""
  written, schema = default.get_config(), config_lib.default_config()
  assert sorted(config_lib.field_names(written)) == sorted(config_lib.field_names(schema))
  for field in config_lib.FIELDS:
    a, b = _ref(written, field.name), _ref(schema, field.name)
    assert _typed(a.get()) == _typed(b.get()), field.name
    assert a.get_type() is b.get_type(), field.name  # A None default's placeholder type too.


def test_configs_default_comments_every_field():
  """The comment on the line above each field is where its meaning is documented."""
  path = pathlib.Path(default.__file__)
  lines = path.read_text().splitlines()
  get_config = next(node for node in ast.parse(path.read_text()).body
                    if isinstance(node, ast.FunctionDef) and node.name == "get_config")
  documented = []
  for statement in get_config.body:
    if isinstance(statement, ast.If):
      break  # The variants.
    if not isinstance(statement, ast.Assign) or isinstance(statement.value, ast.Call) and (
        ast.unparse(statement.value.func) == "ml_collections.ConfigDict"):
      continue
    target = statement.targets[0]
    group = target.value.id
    name = target.attr if group == "config" else f"{group}.{target.attr}"
    assert lines[statement.lineno - 2].strip().startswith("#"), f"{name} has no comment"
    documented.append(name)
  assert sorted(documented) == sorted(f.name for f in config_lib.FIELDS)


@pytest.mark.parametrize("arg", [None, "smoke"])
def test_configs_default_adds_no_field_outside_the_table(arg):
  names = [field.name for field in config_lib.FIELDS]
  assert sorted(config_lib.field_names(default.get_config(arg))) == sorted(names), (
      "configs/default.py sets a field that progressive.config.FIELDS lacks (or "
      "drops one): add it to FIELDS, with its default and on_resume."
  )


def test_fields_outside_the_table_are_refused():
  config = smoke()
  config.opt.lr = 0.1  # A typo of lr_max.
  with pytest.raises(ConfigError, match=r"config\.opt\.lr is not a config field"):
    validate(config, num_devices=4)
  config = ml_collections.ConfigDict(smoke().to_dict())
  del config.data["num_workers"]
  with pytest.raises(ConfigError, match=r"lacks config\.data\.num_workers; start a config from"):
    validate(config, num_devices=4)


def test_resume_field_lists_come_from_the_table():
  by_name = config_lib.FIELDS_BY_NAME
  control = set(config_lib.RUN_CONTROL_FIELDS)
  assert {"progress_bar", "log_every_steps", "data.data_dir", "distributed.process_id"} <= control
  assert set(config_lib.RESUMABLE_FIELDS) == control | {
      "stages", "eval_sizes", "eval_batch_size", "eval_tta", "init_from", "skip_nonfinite",
      "data.skip_unreadable"}
  assert all(name in by_name for name in config_lib.RESUMABLE_FIELDS)
  assert by_name["model.channels"].on_resume == by_name["data.num_workers"].on_resume == "fixed"


def test_with_defaults_fills_missing_fields_only():
  stored = json.loads(smoke().to_json())
  del stored["skip_nonfinite"], stored["data"]["num_workers"], stored["distributed"]
  stored["model"]["channels"] = [8, 8]
  stored["model"]["dilation"] = 2
  filled = config_lib.with_defaults(stored)
  assert filled == {
      **json.loads(smoke().to_json()),
      "model": {**json.loads(smoke().to_json())["model"], "channels": [8, 8], "dilation": 2},
  }
  assert "skip_nonfinite" not in stored and "num_workers" not in stored["data"]  # A copy.
  # As JSON reads back: tuples are lists, so an old config compares equal to a new one.
  assert config_lib.with_defaults({})["stages"] == json.loads(default.get_config().to_json())["stages"]
  assert config_lib.with_defaults({})["model"]["vgg_layers"] == []


def test_a_config_stored_before_the_import_options_builds_the_model_it_did():
  # A ResNet-18 with BlurPool stored before model.head_grid and model.max_blur_pool: its
  # stem pool keeps the published 3x3 window and padding 1 at stride 1, as it did then.
  stored = json.loads(smoke().to_json())
  stored["model"].update(name="resnet18", width=0.125, downsample="blur")
  del stored["model"]["head_grid"], stored["model"]["max_blur_pool"]
  model = config_lib.with_defaults(stored)["model"]
  assert (model["head_grid"], model["max_blur_pool"]) == (7, "same")
  (pool,) = [r for r in geometry.layer_table(model, 32) if r["name"] == "stem_pool/max"]
  assert (pool["kernel"], pool["stride"], pool["padding"]) == (3, 1, 1)
