"""Sweeps: many training runs from one config file, measured and compared.

Modules, each importing only those before it: `spec` (a sweep file loaded once into a
`Sweep`; the point language; the only module a config file imports), `folder` (the
sweep folder's hold, and its files written whole), `measure` (a point's status on disk
and its summary, the union of per-point measures), `tables` (rows, seed groups,
intervals, exploratory comparisons; csv, markdown and the plot), `hypotheses` (the
primary hypotheses over seed groups, Holm-corrected: `hypotheses.csv`), `tuning` (a value chosen per arm on
the validation slice), `aggregate` (the tables over every finished point), `run`
(training the points, one after another or in worker processes) and `budgets` (accuracy
against training FLOPs over sweeps at several budgets). The `progressive sweep` command
is `progressive.commands.sweep`.
"""
