"""intake-clms: Copernicus Land Monitoring Service data as intake catalogs and lazy xarray Datasets."""

from __future__ import annotations

import warnings

__version__ = "0.1.0"



def filter_intake_warnings() -> None:
    """Silence intake 2.0.9's "Shell command not executed due to getshell=False", and nothing else.

    intake warns it twice per string user parameter of every entry it
    instantiates, though no entry of ours uses shell().  Installed on import.
    """
    warnings.filterwarnings(
        "ignore",
        message=r"Shell command not executed due to getshell=False\Z",
        category=UserWarning,
        module=r"intake\.catalog\.utils",
    )


filter_intake_warnings()

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
    "filter_intake_warnings",
    "read_transition_table",
    "resolve",
]
