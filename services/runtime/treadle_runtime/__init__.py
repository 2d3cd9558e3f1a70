"""What every Treadle server shares: config, logging, auth, health, metrics and shutdown."""

from treadle_runtime.config import ConfigError, load_config
from treadle_runtime.server import ServerConfig, run_server

__all__ = ["ConfigError", "ServerConfig", "load_config", "run_server"]
