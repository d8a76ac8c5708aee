"""``python -m nonstop.cli``: the same as the ``nonstop`` command."""

from nonstop.cli.main import main

main()
