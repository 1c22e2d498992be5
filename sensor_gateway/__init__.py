"""crampwatch gateway: band protocol codec, recordings, BLE client, MQTT and InfluxDB I/O, CLI."""

__version__ = "0.1.0"
