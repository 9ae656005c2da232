"""Sub-commands of ``dicomnode`` that live outside ``cli.py``.

Every module here defines ``add_parser(subparsers) -> None``, which adds its sub-command and sets
``func=callable(namespace) -> int`` as the parser default. ``cli.py`` discovers them, so a new command is one new file.
"""
