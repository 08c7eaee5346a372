"""CLI subcommands, one module each (see :mod:`core.cli` for the plugin convention).

Modules starting with ``_`` are helpers, not commands.
"""
