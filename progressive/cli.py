r"""One command line for every entry point: `progressive <command> [flags]`.

  progressive train --config=configs/default.py:smoke --workdir=/tmp/progressive/smoke
  progressive analyze --workdir=/tmp/progressive/smoke
  progressive train --help

`python -m progressive <command>` runs the same commands. Each module of
`progressive.commands` declares a `Command`: a function that defines its flags into a
fresh `flags.FlagValues` when the command runs (never at import, so all of them import
into one process), and the function that runs it. `run` parses the command line, sets
the verbosity (absl logging at WARNING unless `--verbosity` is given: Orbax logs every
checkpoint at INFO), joins a multi-process run from `config.distributed` where the
command takes a config, runs the command and reports the known errors
(`progressive.errors.Error`: a bad flag or config, a busy workdir, a program too large
for the device, a run that cannot be loaded) as one line on stderr, `Error: ...`, with
exit status 2. A config file loads from any directory (`progressive.config_files`).
"""

import dataclasses
import importlib
import pathlib
import re
import sys
import traceback
from collections.abc import Callable, Sequence

from absl import app, flags, logging
from ml_collections import config_flags

from progressive import errors
from progressive.config_files import add_config_root

# `progressive <name>` -> (the module whose `COMMAND` it runs, what it does).
COMMANDS = {
    "train": ("progressive.commands.train", "Train with progressive resizing."),
    "analyze": ("progressive.commands.analyze", "Analyse a run's checkpoint into WORKDIR/analysis/."),
    "sweep": ("progressive.commands.sweep", "Run, print or aggregate the points of a config's sweep."),
    "lr-find": ("progressive.commands.lr_find", "fastai's learning-rate range test."),
    "arch": ("progressive.commands.arch", "Layer by layer: output size, stride, receptive field, params."),
    "bench": ("progressive.commands.bench", "Throughput, compile time and stage-switch cost."),
    "invariance": ("progressive.commands.invariance", "Shift and resolution invariance of runs on the same images."),
    "import": ("progressive.commands.import_", "A network trained elsewhere (torchvision, timm, antialiased-cnns) as a run."),
    "imagenet-val": ("progressive.commands.imagenet_val", "ImageNet's validation images laid out by class."),
}
EXIT_ERROR = 2  # A bad command line or config, or a known error.
_ABSL_HELP_FLAGS = ("help", "helpshort", "helpfull", "helpxml")


class Error(errors.Error):
  """A command's own usage error (a bad flag value): one line on stderr, exit status 2."""


@dataclasses.dataclass(frozen=True)
class Command:
  """An entry point.

  `define_flags(fv)` defines its flags into `fv`; `main(fv)` runs it on the parsed flags
  and returns the exit status (None: 0). With `config` (its help text) the command takes
  a required `--config=FILE[:ARG]` (ml_collections, with `--config.FIELD=VALUE`
  overrides) and, if `distributed`, joins `config.distributed` before `main`.
  """

  name: str
  doc: str
  define_flags: Callable[[flags.FlagValues], None]
  main: Callable[[flags.FlagValues], int | None]
  config: str | None = None
  distributed: bool = True


def one_line(error: BaseException | str) -> str:
  """The message on one line; of a config file's traceback, only its last line."""
  text = str(error)
  if "Traceback (most recent call last)" in text:  # ml_collections keeps the file's traceback.
    head = text.split("Error whilst parsing config file:")[0]
    last = text.strip().splitlines()[-1]
    text = head + re.sub(r"^[\w.]*(Error|Exception)\w*: ", "", last)
  return errors.one_line(text)


def fail(error: BaseException | str) -> int:
  """Writes `Error: <message>` to stderr; returns the exit status (2)."""
  print(f"Error: {one_line(error)}", file=sys.stderr, flush=True)
  return EXIT_ERROR


class _HelpFlag(flags.BooleanFlag):
  """`--help` (`-?`, `--helpshort`): the command's flags; `--helpfull`: all of them."""

  def __init__(self, name: str, short_name: str | None, text: str, show: Callable[[], str]):
    super().__init__(name, False, text, short_name=short_name, allow_hide_cpp=True)
    self._show = show

  def parse(self, argument):
    if self._parse(argument):
      try:
        print(self._show(), flush=True)
      except BrokenPipeError:  # `progressive train --help | head`.
        sys.stdout = None
      sys.exit(0)


def _help(command: Command, fv: flags.FlagValues, own: Sequence[str], prog: str, full: bool) -> str:
  shown = fv
  if not full:
    shown = flags.FlagValues()
    for name in own:
      if fv[name].name == name:
        flags.DEFINE_flag(fv[name], shown, module_name="flags")
  lines = [f"usage: {prog} [flags]", "", command.doc.strip(), ""]
  lines.append(shown.get_help(include_special_flags=full).strip("\n"))
  if command.config is not None:
    lines.append("  --config.FIELD=VALUE: overrides one field of the config.")
  if not full:
    lines += ["", "--helpfull also lists absl's flags (--verbosity, --flagfile, ...)."]
  return "\n".join(lines)


def make_flags(command: Command, argv: Sequence[str], prog: str | None = None) -> flags.FlagValues:
  """A fresh `FlagValues` with the command's flags, absl's own (`--verbosity`, ..., shared
  with `absl.flags.FLAGS`) and help; `argv` is what `--config` reads its overrides from."""
  prog = prog or _prog(command)
  fv = flags.FlagValues()
  if command.config is not None:
    config_flags.DEFINE_config_file(
        "config", None, command.config, flag_values=fv, sys_argv=list(argv)
    )
    flags.mark_flag_as_required("config", flag_values=fv)
  command.define_flags(fv)
  own = list(fv)
  for module, module_flags in flags.FLAGS.flags_by_module_dict().items():
    for flag in module_flags:
      if flag.name in _ABSL_HELP_FLAGS or flag.name in fv or (flag.short_name or flag.name) in fv:
        continue
      flags.DEFINE_flag(flag, fv, module_name=module)
  for name, short_name, full in (("help", "?", False), ("helpshort", None, False),
                                 ("helpfull", None, True)):
    show = lambda full=full: _help(command, fv, own, prog, full)
    text = "Show all flags." if full else "Show this command's flags."
    flags.DEFINE_flag(_HelpFlag(name, short_name, text, show), fv, module_name=__name__)
  return fv


def _override_error(error: BaseException, argv: Sequence[str]) -> str:
  """ml_collections' KeyError for an override's unknown field, as `--config.a.b names no
  config field`."""
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  if not isinstance(error, KeyError):
    return f"Cannot apply the --config overrides: {error}"
  key, _, hint = str(error.args[0] if error.args else error).partition("\n")
  key = key.strip("'\"")
  overrides = [a.split("=", 1)[0].lstrip("-") for a in argv if re.match(r"--?(no)?config\.", a)]
  named = [o for o in overrides if key in o.split(".")[1:]]
  which = f"--{named[0]}" if named else f"A --config.FIELD override ({key!r})"
  return f"{which} names no config field. {hint}".strip()


def _raised_in(error: BaseException, filename: str) -> bool:
  tb = error.__traceback__
  while tb is not None:
    if tb.tb_frame.f_code.co_filename.endswith(filename):
      return True
    tb = tb.tb_next
  return False


def _last_line(error: BaseException) -> str:
  return str(error).strip().splitlines()[-1].strip()


def parse(command: Command, argv: Sequence[str], prog: str | None = None) -> flags.FlagValues:
  """Parses `argv` (program name first) into a fresh `FlagValues`; raises `Error`."""
  argv = list(argv)
  config_path = _config_path(argv) if command.config is not None else None
  if config_path:
    add_config_root(config_path)
  fv = make_flags(command, argv, prog)
  try:
    rest = fv(argv)
  except flags.Error as e:
    raise Error(e) from e
  except Exception as e:  # pylint: disable=broad-exception-caught
    message = config_load_error(e, config_path) if config_path else None
    if message is not None:
      raise Error(message) from e
    if not isinstance(e, (OSError, AttributeError, KeyError, TypeError)):
      raise
    if isinstance(e, OSError) and _raised_in(e, "config_flags.py"):  # Overriding a missing file.
      raise Error(f"Cannot load the config file: {_last_line(e)}") from e
    if not _raised_in(e, "config_path.py"):
      raise  # Not ml_collections resolving an override: a bug, with its traceback.
    raise Error(_override_error(e, argv)) from e
  if len(rest) > 1:
    raise Error(f"Unexpected arguments {rest[1:]} (flags take the form --name=value).")
  if command.config is not None:
    try:
      fv.config.get("distributed")  # A config file that failed to load raises here.
    except OSError as e:
      raise Error(f"Cannot load --config={fv['config'].config_filename}: {_last_line(e)}") from e
  return fv


def _config_path(argv: Sequence[str]) -> str | None:
  """The file of `--config=FILE[:ARG]` (or `--config FILE[:ARG]`) in `argv`, if any."""
  for i, arg in enumerate(argv):
    value = None
    if arg.startswith(("--config=", "-config=")):
      value = arg.split("=", 1)[1]
    elif arg in ("--config", "-config") and i + 1 < len(argv):
      value = argv[i + 1]
    if value is not None:
      return value.partition(":")[0]
  return None


def config_load_error(error: BaseException, path: str) -> str | None:
  """One line for an error raised while a config file was loaded (a syntax error, a failed
  import in the file, an exception in `get_config`), naming the file and line; None if
  the error did not come from the file."""
  path = str(pathlib.Path(path).resolve())
  if isinstance(error, SyntaxError) and error.filename and (
      str(pathlib.Path(error.filename).resolve()) == path):
    return f"Cannot load the config file {path}: {error.msg} at line {error.lineno}."
  frames = [f for f in traceback.extract_tb(error.__traceback__)
            if str(pathlib.Path(f.filename).resolve()) == path]
  if not frames:
    return None
  return (f"Cannot load the config file {path}: {type(error).__name__}: {_last_line(error)} "
          f"(line {frames[-1].lineno}).")


def _prog(command: Command) -> str:
  return f"progressive {command.name}"


_TFDS_NOISE = (
    "OpenCV is not installed",  # Logged on decoding: this package decodes with PIL on purpose.
    "has no dataset_info.json",  # Logged while a built-in dataset is generated the first time.
)


def _quiet_tfds(record) -> bool:
  """Drops TFDS's log lines that say nothing to a user of these commands (`_TFDS_NOISE`);
  TFDS's own commands keep them."""
  message = record.getMessage()
  return not any(noise in message for noise in _TFDS_NOISE)


def execute(command: Command, fv: flags.FlagValues) -> int | None:
  """Runs `command` on flags `parse` returned; the exit status (2 for a known error)."""
  if not fv["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO.
  logging.get_absl_logger().addFilter(_quiet_tfds)
  try:
    if command.config is not None and command.distributed:
      # Here, not at the top: JAX takes 1.4 s to import, and `progressive --help` needs none.
      from progressive.training import parallel  # pylint: disable=import-outside-toplevel

      if parallel.initialize_distributed(fv.config.distributed):
        status = command.main(fv)
        parallel.shutdown_distributed()  # Only after a run every process finished.
        return status
    return command.main(fv)
  except errors.Error as e:
    return fail(e)


def run(command: Command, argv: Sequence[str] | None = None, prog: str | None = None) -> None:
  """Runs `command` on `argv` (default: `sys.argv`) under `absl.app.run`; exits."""
  argv = list(sys.argv if argv is None else argv)
  prog = prog or _prog(command)

  def parse_or_exit(args):
    try:
      fv = parse(command, args, prog)
    except Error as e:
      sys.exit(fail(e))
    flags.FLAGS.mark_as_parsed()  # absl.app, absl.logging and Grain's workers read it.
    return fv

  app.run(lambda fv: execute(command, fv), argv=argv, flags_parser=parse_or_exit)


def load(name: str) -> Command:
  """The `Command` of `progressive <name>`."""
  return importlib.import_module(COMMANDS[name][0]).COMMAND


def usage() -> str:
  """What `progressive --help` prints: the commands."""
  width = max(map(len, COMMANDS))
  lines = ["usage: progressive <command> [flags]", "", "commands:"]
  lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
  lines += ["", "`progressive <command> --help` lists a command's flags."]
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
  """The `progressive` command: `progressive <command> [flags]`."""
  argv = list(sys.argv if argv is None else argv)
  name = argv[1] if len(argv) > 1 else None
  if name is None:
    print(usage(), file=sys.stderr)
    sys.exit(EXIT_ERROR)
  if name in ("-h", "-?", "--help", "--helpshort", "--helpfull", "help") and len(argv) == 2:
    print(usage())
    sys.exit(0)
  if name == "help":  # `progressive help train` == `progressive train --help`.
    name, argv = argv[2], [argv[0], argv[2], "--help"]
  if name not in COMMANDS:
    sys.exit(fail(f"Unknown command {name!r}; use one of {', '.join(COMMANDS)} (see --help)."))
  run(load(name), [argv[0], *argv[2:]], prog=f"progressive {name}")
