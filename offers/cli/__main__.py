"""`python -m offers.cli ...`: the same commands as the `offers` script."""

from offers.cli import main

main()
