"""The public surface: ``combe.__all__`` names exactly what ``combe`` exports, and importing it is cheap."""

from __future__ import annotations

import subprocess
import sys

import combe


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert combe.__all__ == sorted(combe.__all__)
    assert set(combe.__all__) == set(combe._EXPORTS)  # the literal list and the lazy imports name the same
    for name in combe.__all__:
        assert getattr(combe, name).__name__ == name


def test_every_error_class_is_exported() -> None:
    from combe.format import errors

    classes = {name for name, value in vars(errors).items()
               if isinstance(value, type) and issubclass(value, errors.CombeError)}
    missing = classes - set(combe.__all__)
    assert not missing, f"error classes not re-exported from combe: {sorted(missing)}"


def test_a_read_service_importing_the_consumer_never_imports_the_producer_or_kafka() -> None:
    probe = ("import sys, combe; combe.Consumer; "
             "print(sorted(m for m in ('combe.producer', 'confluent_kafka') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
