"""``python -m halp``: the ``halp`` command."""

from halp.cli import main

main()
