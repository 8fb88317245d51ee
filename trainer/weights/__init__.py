"""Weights in and out: the official TCL/ALBEF layout (official), every layout read into one full state
(state, load), and the export writers (export). The only package that knows foreign layouts."""
