"""The Discord client and what every cog shares: the command tree and its one error path, languages, custom ids,
requests as typed, downloads and uploads."""
