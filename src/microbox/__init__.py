"""microbox: disposable, hardware-isolated Linux microVMs."""

__version__ = "0.1.0"
