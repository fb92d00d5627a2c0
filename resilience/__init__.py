"""Circuit breakers whose state can be shared between processes, usable as decorators at import time.

Typical use::

    from resilience import rag_api_breaker, init_registry

    @rag_api_breaker
    async def retrieve(query: str) -> list[str]: ...

    await init_registry()        # on app start; before this, calls pass straight through
"""

from ._breaker import BreakerEvent, PersistentCircuitBreaker
from ._registry import (
    CircuitBreakerRegistry,
    get_registry,
    init_registry,
    init_registry_sync,
    shutdown_registry,
    shutdown_registry_sync,
)
from ._state import CircuitState, Snapshot
from ._store import BreakerStore, MemoryStore, StoreHealth
from .clock import Clock, SystemClock
from .config import BreakerConfig, RegistryConfig, load_config
from .errors import CallTimeoutError, CircuitOpenError, ConfigError, ResilienceError
from .proxy import (
    CircuitBreakerProxy,
    llm_breaker,
    rag_api_breaker,
    session_breaker,
    stt_breaker,
    tts_breaker,
)

__all__ = [
    "BreakerConfig",
    "BreakerEvent",
    "BreakerStore",
    "CallTimeoutError",
    "CircuitBreakerProxy",
    "CircuitBreakerRegistry",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "ConfigError",
    "MemoryStore",
    "PersistentCircuitBreaker",
    "RegistryConfig",
    "ResilienceError",
    "Snapshot",
    "StoreHealth",
    "SystemClock",
    "get_registry",
    "init_registry",
    "init_registry_sync",
    "llm_breaker",
    "load_config",
    "rag_api_breaker",
    "session_breaker",
    "shutdown_registry",
    "shutdown_registry_sync",
    "stt_breaker",
    "tts_breaker",
]
