"""Image work with Pillow: inputs made safe for the API, results fitted to Discord; always off the event loop."""
