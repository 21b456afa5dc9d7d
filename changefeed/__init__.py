"""changefeed: an events feed for any API that writes business objects."""

__version__ = "0.1.0"
