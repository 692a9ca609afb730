"""Registry client: resolve, expand and fetch images over the distribution API."""
