"""``python -m smtpx``: the same as the ``smtpx`` command."""

from smtpx.cli import main

main()
