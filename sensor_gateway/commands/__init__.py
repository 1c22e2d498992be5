"""One module per ``crampwatch`` subcommand (see :mod:`sensor_gateway.cli`)."""
