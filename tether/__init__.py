"""tether: outbound-only, end-to-end encrypted session fabric over MQTT."""

import os as _os

__version__ = "0.1.0"

# The role packages (agent/, client/, ...) sit beside tether/ in a source checkout and are
# installed as tether.agent etc. (docs/sources.md#roles-are-subpackages). When the checkout
# itself is on sys.path, as under pytest, find them there too.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_root, "pyproject.toml")) and _os.path.isfile(
    _os.path.join(_root, "agent", "__init__.py")
):
    __path__.append(_root)
