"""The `ggnet` command: main.py dispatches to one module per subcommand."""
