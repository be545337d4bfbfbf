"""Every ``affectsr`` subcommand, one module per command or group of commands.

Each module has ``add_parser(subparsers)``, which registers its subcommand(s) and sets ``func`` to a
``run(args) -> exit code`` function; :mod:`affectsr.cli` builds the parser from them. Argument parsing,
messages and exit codes live here and nowhere else: the library modules below take plain values and
raise exceptions.
"""
