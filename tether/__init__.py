"""tether: outbound-only, end-to-end encrypted session fabric over MQTT."""

from pkgutil import extend_path

__version__ = "0.1.0"

# The role packages (agent/, client/, ...) sit beside tether/ in a source checkout and are
# installed as tether.agent etc. (docs/sources.md#roles-are-subpackages). A Python started
# in the checkout finds this folder first, which holds only the core; the rest of the
# package is wherever the installed tether is on sys.path.
__path__ = extend_path(__path__, __name__)
