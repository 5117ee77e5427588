"""mailcli: turn email exports into structured business analysis."""

__version__ = "0.1.0"
