"""tether.broker."""
