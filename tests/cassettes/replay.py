"""The one vcrpy configuration cassettes are recorded and replayed with.

Recording and replay must filter and match alike, so both build their VCR
here.  Matching is on method, path, query, body (compared parsed, after
scrubbing: credentials, tokens and the CLMS grant's signed assertion are
placeholders on both sides, so any key signing at any time matches) and the
Range header; never on host, port or headers, so a replay does not depend on
the sandbox's port or on the scrubbed Authorization header.  Each recorded
answer plays once, in order, so a replay also checks how many calls the client
makes (e.g. polls); an unrecorded request raises instead of going out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import vcr

from .scrub import PLACEHOLDER, SECRET_HEADER_NAMES, SECRET_KEYS, Scrubber, sandbox_secrets
from .stable import Normalizer

HERE = Path(__file__).resolve().parent
MATCH_ON = ("method", "path", "query", "body", "range_header")


def range_header(r1: Any, r2: Any) -> None:
    """vcrpy matcher: a resumed download (Range) must not be answered by a full one, nor the reverse."""
    a, b = r1.headers.get("Range"), r2.headers.get("Range")
    assert a == b, f"Range {a!r} != {b!r}"


def cassette_path(service: str, scenario: str, root: Path = HERE) -> Path:
    """Where the cassette of one scenario of one service lives: ``<root>/<service>/<scenario>.yaml``."""
    return root / service / f"{scenario}.yaml"


def make_vcr(
    *,
    record_mode: str = "none",
    scrubber: Scrubber | None = None,
    normalizer: Normalizer | None = None,
) -> vcr.VCR:
    """A VCR with the project's scrubbing hooks and matchers (``record_mode="none"``: replay only)."""
    scrubber = scrubber if scrubber is not None else Scrubber(sandbox_secrets())
    request_hooks = ([normalizer.request] if normalizer else []) + [scrubber.request]
    response_hooks = ([normalizer.response] if normalizer else []) + [scrubber.response]
    recorder = vcr.VCR(
        serializer="yaml",
        record_mode=record_mode,
        match_on=MATCH_ON,
        filter_headers=[(name, PLACEHOLDER) for name in SECRET_HEADER_NAMES],
        filter_post_data_parameters=[(key, PLACEHOLDER) for key in sorted(SECRET_KEYS)],
        filter_nested_post_data_parameters=True,
        before_record_request=request_hooks,
        before_record_response=response_hooks,
        decode_compressed_response=True,
        record_on_exception=False,  # a scenario that failed half-way leaves no cassette
    )
    recorder.register_matcher("range_header", range_header)
    return recorder


def calls(cassette: Any) -> list[tuple[str, str]]:
    """(method, path) of every recorded request, in order."""
    return [(r.method, r.path) for r in cassette.requests]


@contextlib.contextmanager
def replaying(service: str, scenario: str, all_played: bool = True) -> Iterator[Any]:
    """Play one cassette offline; with ``all_played``, fail if the client skipped a recorded answer."""
    with make_vcr(record_mode="none").use_cassette(str(cassette_path(service, scenario))) as cas:
        yield cas
    if all_played:
        unused = [calls(cas)[i] for i in range(len(cas)) if not cas.play_counts[i]]
        assert not unused, f"the client skipped recorded calls: {unused}"
