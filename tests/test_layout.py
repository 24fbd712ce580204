"""The package's shape: packages by role, imports running one way, at the top of files.

    models/ data/ schedules optim statistics errors config_files
      <- config <- training/ <- analysis/ <- sweeps/ <- cli, commands/

A module imports only from its own floor or below; no two modules import each other,
directly or around a circle; at most 10 imports sit inside functions, each with a
comment saying why.
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).parents[1] / "progressive"
FLOORS = {  # The first dotted part under `progressive` -> its floor.
    "errors": 0, "config_files": 0, "statistics": 0, "schedules": 0, "optim": 0,
    "models": 0, "data": 0,
    "config": 1,
    "training": 2,
    "analysis": 3,
    "sweeps": 4,
    "cli": 5, "commands": 5, "__main__": 5,
}
MAX_INSIDE_FUNCTIONS = 10


def _modules() -> dict[str, pathlib.Path]:
  modules = {}
  for path in PACKAGE.rglob("*.py"):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    modules[name] = path
  return modules


def _imports(modules):
  """{module: [(imported module, line, inside a function, the line's source)]}."""
  found = {}
  for name, path in modules.items():
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    rows = []
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + [base])
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                   for a in node.names]
      else:
        continue
      for target in targets:
        if target in modules and target != name:
          rows.append((target, node.lineno, id(node) in inside, lines[node.lineno - 2:node.lineno]))
        elif id(node) in inside and not target.startswith("progressive"):
          rows.append((target, node.lineno, True, lines[node.lineno - 2:node.lineno]))
    found[name] = rows
  return found


def _floor(module: str) -> int | None:
  parts = module.split(".")
  return FLOORS.get(parts[1]) if len(parts) > 1 else None


def test_every_module_has_a_floor():
  assert not [m for m in _modules() if m != "progressive" and _floor(m) is None]


def test_imports_run_down_or_across_never_up():
  up = [(m, t, line) for m, rows in _imports(_modules()).items() for t, line, _, _ in rows
        if None not in (_floor(m), _floor(t)) and _floor(t) > _floor(m)]
  assert not up, up


def test_no_import_cycle():
  modules = _modules()
  graph = {m: {t for t, *_ in rows if t in modules and t != "progressive"}
           for m, rows in _imports(modules).items()}
  # A package's __init__ importing its submodules is not a cycle with them.
  for m in graph:
    graph[m] = {t for t in graph[m] if not (m.startswith(t + ".") and t in modules)}
  state, cycles = {}, []

  def visit(node, stack):
    state[node] = "open"
    for nxt in graph.get(node, ()):
      if state.get(nxt) == "open":
        cycles.append(stack[stack.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt, stack + [nxt])
    state[node] = "done"

  for m in graph:
    if m not in state:
      visit(m, [m])
  assert not cycles, cycles


def test_few_imports_inside_functions_each_with_a_reason():
  inside = [(m, line, text) for m, rows in _imports(_modules()).items()
            for _, line, is_inside, text in rows if is_inside]
  inside = list({(m, line): (m, line, text) for m, line, text in inside}.values())
  assert len(inside) <= MAX_INSIDE_FUNCTIONS, inside
  for module, line, text in inside:
    assert any("#" in t for t in text), f"{module}:{line} imports inside a function without a reason"
