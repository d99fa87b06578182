"""tether: outbound-only, end-to-end encrypted session fabric over MQTT."""

__version__ = "0.1.0"
