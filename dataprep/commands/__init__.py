"""CLI subcommands: each module exposes `<name>_command_parser(subparsers)` and runs through `args.run(args)`."""
