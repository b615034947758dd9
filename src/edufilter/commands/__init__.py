"""One module per command group; each has register(commands), adding its subparsers.

A handler returns the exit status; EdufilterError is turned into a message in cli.main.
"""
