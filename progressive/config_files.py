"""Config files load from any directory: a config's own imports (`from configs import
default`) resolve from the folder above its `configs/` folder, which goes on `sys.path`.
Every command (`progressive.cli`) and the sweep loader use this one rule.
"""

import importlib.util
import pathlib
import sys
from types import ModuleType


def config_root(path: str) -> str:
  """The folder a config file's own imports (`from configs import default`) resolve from:
  the parent of the `configs/` folder that holds it, else the parent of its folder."""
  folder = pathlib.Path(path).resolve().parent
  for parent in (folder, *folder.parents):
    if parent.name == "configs":
      return str(parent.parent)
  return str(folder.parent)


def add_config_root(path: str) -> None:
  """Puts `config_root(path)` first on `sys.path`, so a config loads from any directory."""
  root = config_root(path)
  if root not in sys.path:
    sys.path.insert(0, root)


def load_module(path: str, name: str | None = None) -> ModuleType:
  """Imports the Python file `path` (a config or sweep file) after `add_config_root`."""
  path = pathlib.Path(path).resolve()
  add_config_root(str(path))
  spec = importlib.util.spec_from_file_location(name or f"_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
