"""Sweeps: many training runs from one config file, measured and compared.

`spec` loads a sweep file once into a `Sweep` and holds the language its points are
written in; it is the only module a config file imports.
"""
