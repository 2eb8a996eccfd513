"""CrossLogic Inference Cloud: the shared core (settings, data model, services, CLI)."""

__version__ = "0.1.0"
