"""What server admins use: /atelier (settings, limits, stats, blocks, keys), style presets, the audit channel."""
