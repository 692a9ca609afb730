"""wishbot: validate, plan and publish container-image wishlists onto CernVM-FS."""

__version__ = "0.1.0"
