"""Registry client: resolve, expand and fetch images over the distribution API.

Public API: :class:`RegistryClient` (``resolve``, ``resolve_all``,
``inspect``, ``expand``, ``list_tags``, ``get_manifest``, ``get_config``,
``download_blob``, ``push_blob``, ``push_manifest``, ``requests_made``) and
:func:`check_wishes` and :func:`check_wishlist` (validate --check-registry).
"""

from bot.registry.check import RegistryCheck, check_wishes, check_wishlist
from bot.registry.client import ImageInfo, RegistryClient

__all__ = ["ImageInfo", "RegistryCheck", "RegistryClient", "check_wishes", "check_wishlist"]
