"""intake-clms: Copernicus Land Monitoring Service data as intake catalogs and lazy xarray Datasets."""

from __future__ import annotations

import warnings

__version__ = "0.1.0"

# intake 2.0.9 warns "Shell command not executed due to getshell=False" twice per
# string user parameter of every entry it instantiates, though no entry of ours
# uses shell(). Silence that one message from that one module, nothing else.
warnings.filterwarnings(
    "ignore",
    message=r"Shell command not executed due to getshell=False\Z",
    category=UserWarning,
    module=r"intake\.catalog\.utils",
)

from .errors import (  # noqa: E402
    ClmsError,
    ColumnNotFoundError,
    CredentialsError,
    ParameterError,
    ServiceError,
    ServiceNotImplementedError,
    TableError,
    UnknownIdentifierError,
)
from .resolve import default_catalog_path, resolve  # noqa: E402
from .table import read_transition_table  # noqa: E402

__all__ = [
    "ClmsError",
    "ColumnNotFoundError",
    "CredentialsError",
    "ParameterError",
    "ServiceError",
    "ServiceNotImplementedError",
    "TableError",
    "UnknownIdentifierError",
    "__version__",
    "default_catalog_path",
    "read_transition_table",
    "resolve",
]
