"""Publisher backends and the conversion into the CernVM-FS layout."""
