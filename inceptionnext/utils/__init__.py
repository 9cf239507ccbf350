"""Leaf helpers every layer may use: safe text, atomic files, devices, tables and plots. They import nothing
of the library."""
