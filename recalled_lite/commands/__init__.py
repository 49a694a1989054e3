"""The `recalled-lite` subcommands, one module per group; recalled_lite/cli.py builds the parser."""
