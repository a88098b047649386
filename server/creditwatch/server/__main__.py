"""`python -m creditwatch.server` is the `creditwatch` command."""

from creditwatch.server.cli import main

main()
