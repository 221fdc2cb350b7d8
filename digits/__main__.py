"""`python -m digits`: the `digits` command, for when the script is not on PATH."""

from digits.cli import main

main()
