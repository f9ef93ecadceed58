"""What each server changed: settings, limits and permissions, style presets, blocked members, its own API key."""
