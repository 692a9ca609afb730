"""The pure core: data in, data out. No network, no disk, no clock.

Nothing in this package imports from ``bot.registry``, ``bot.publisher``,
``bot.forge``, ``bot.runtime`` or ``bot.commands``.
"""
