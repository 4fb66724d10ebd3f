"""AEGIS Python client SDK: deploy agents to an ``aegis server``, run them, follow their logs. Standard library only.

    from aegis_sdk import AegisClient
    aegis = AegisClient("http://127.0.0.1:8088", api_key=os.environ["AEGIS_API_KEY"])
    aegis.deploy("examples/hello-python")
    execution = aegis.wait(aegis.exec("hello-python", {"name": "Ada"})["id"])

See README.md.
"""

__version__ = "0.1.0"

from .client import TERMINAL_STATUSES, AegisClient  # noqa: E402
from .errors import (  # noqa: E402
    AegisError,
    AuthError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PolicyDeniedError,
    RetryableError,
    RuntimeUnavailableError,
    WaitTimeoutError,
)
from .pack import PackedAgent, pack_agent  # noqa: E402

__all__ = [
    "AegisClient",
    "AegisError",
    "AuthError",
    "ConflictError",
    "InvalidRequestError",
    "NotFoundError",
    "PackedAgent",
    "PolicyDeniedError",
    "RetryableError",
    "RuntimeUnavailableError",
    "TERMINAL_STATUSES",
    "WaitTimeoutError",
    "pack_agent",
    "__version__",
]
