"""Error kinds as they travel over wires, and the exit statuses of processes that cannot start."""

from __future__ import annotations

from hyper import errors


def test_by_kind_names_only_error_classes():
    assert errors.by_kind("NotFound") is errors.NotFound
    assert errors.by_kind("Timeout") is errors.Timeout
    for bogus in ("", "by_kind", "annotations", "Exception", "HyperErrorX"):
        assert errors.by_kind(bogus) is errors.Internal
    assert errors.by_kind("nope", errors.HyperError) is errors.HyperError


def test_start_failure_status_follows_docker():
    assert errors.start_failure_status("NotFound") == 127
    assert errors.start_failure_status("FailedPrecondition") == 126
    assert errors.start_failure_status("InvalidArgument") == 126
    assert errors.start_failure_status("Unavailable") == 125
