"""tether.recorder."""
