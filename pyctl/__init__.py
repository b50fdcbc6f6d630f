"""pyctl: make PostgreSQL enforce legal holds and GDPR Art. 18 processing restrictions."""

from __future__ import annotations

__version__ = "0.2.0"
