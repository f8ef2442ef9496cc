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
    UnknownEntryError,
    UnknownIdentifierError,
)
from .catalog.resolve import default_catalog_path, resolve  # noqa: E402


def doctor(services: tuple[str, ...] | None = None):  # noqa: ANN201  (a doctor.Report)
    """Check every service's credentials (where found, never their values), endpoints, token and a search."""
    from .health import SERVICES
    from .health import doctor as _doctor

    return _doctor(tuple(services) if services else tuple(SERVICES))


def open_catalog(path=None, **kwargs):
    """The bundled catalog (or the YAML file at ``path``), whose unknown entry names raise
    :class:`UnknownEntryError` with close matches; see :mod:`intake_clms.catalog.lookup`."""
    from .catalog.lookup import open_catalog as _open

    return _open(path, **kwargs)


def __getattr__(name: str):
    """``read_transition_table`` on first use: the table reader pulls in pandas and openpyxl, which only
    ``generate`` needs (opening a catalog and creating a source must stay light)."""
    if name == "read_transition_table":
        from .catalog.table import read_transition_table

        return read_transition_table
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "doctor",
    "ClmsError",
    "ColumnNotFoundError",
    "CredentialsError",
    "ParameterError",
    "ServiceError",
    "ServiceNotImplementedError",
    "TableError",
    "UnknownEntryError",
    "UnknownIdentifierError",
    "__version__",
    "default_catalog_path",
    "filter_intake_warnings",
    "open_catalog",
    "read_transition_table",
    "resolve",
]
