"""Command-line interface: `napari-brgm <subcommand>`; one module per subcommand."""
