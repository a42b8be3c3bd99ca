"""How many examples a property test tries, under the hypothesis profile the run loaded.

tests/conftest.py registers the profiles: hypothesis's own "default" (`make test`) and "check", which
`make check` loads (`--hypothesis-profile=check`). A test that names no count gets the profile's; a test
that needs more or fewer than hypothesis's default names its count through examples(), so that "check"
scales it down in the same proportion instead of the explicit count overriding the profile.
"""

from __future__ import annotations

from hypothesis import settings


def examples(full: int) -> int:
    """``full`` under the default profile, scaled as the loaded profile scales the default's count (at least 1)."""
    default = settings.get_profile("default").max_examples
    return max(1, full * settings.default.max_examples // default)
