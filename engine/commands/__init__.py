"""One module per `chattune` subcommand, each with register(subparsers)."""
