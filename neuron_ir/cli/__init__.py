"""Command-line mains (each ``main(argv) -> exit code``)."""
