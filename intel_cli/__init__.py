"""intel: enrich music-industry contact lists with Claude and account for every token and cent."""

__version__ = "0.1.0"
