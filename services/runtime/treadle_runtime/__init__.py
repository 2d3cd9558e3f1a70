"""What every Treadle server shares: config, logging, auth, health, metrics and shutdown."""

from treadle_runtime.config import ConfigError, load_config
from treadle_runtime.server import App, ServerConfig, run_app

__all__ = ["App", "ConfigError", "ServerConfig", "load_config", "run_app"]
