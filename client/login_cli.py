"""`tether login`."""

from tether.client.login import configure_login as configure
from tether.client.login import run_login as run

__all__ = ["configure", "run"]
