"""tether.authority."""
