"""`tether user`."""

from tether.client.login import configure_user as configure
from tether.client.login import run_user as run

__all__ = ["configure", "run"]
