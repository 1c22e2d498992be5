"""``python -m sensor_gateway`` runs the crampwatch CLI."""

from sensor_gateway.cli import main

raise SystemExit(main())
