"""`python -m bob.cli ...`: the same as the `bob` console script."""

from bob.cli import main

main()
