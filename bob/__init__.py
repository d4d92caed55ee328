"""bob: an open benchmark harness for pretrained vision backbones."""

from __future__ import annotations

__version__ = "0.1.0"
