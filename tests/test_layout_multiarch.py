"""``.multiarch`` directory names are what ``$(CVMFS_ARCH)`` expands to on stock clients."""

from __future__ import annotations

import pytest

from bot.core import layout
from bot.core.model import Platform


@pytest.mark.parametrize(
    ("platform", "name"),
    [
        ("linux/amd64", "x86_64"),
        ("linux/arm64", "aarch64"),
        ("linux/arm64/v8", "aarch64"),
        ("linux/arm/v7", "armv7l"),
        ("linux/arm/v6", "armv6l"),
        ("linux/386", "i686"),
        ("linux/ppc64le", "ppc64le"),
        ("linux/s390x", "s390x"),
        ("linux/riscv64", "riscv64"),
        ("linux/amd64/v3", "amd64:v3"),  # no client selects it; kept apart from x86_64
    ],
)
def test_arch_names_are_uname_m(platform: str, name: str) -> None:
    parsed = Platform.parse(platform)
    assert layout.arch_name(parsed) == name
    assert layout.arch_name(layout.platform_of(name)) == name


def test_older_oci_named_trees_still_read() -> None:
    assert layout.platform_of("amd64") == Platform("linux", "amd64")
    assert layout.platform_of("arm64:v8") == Platform("linux", "arm64", "v8")
    assert layout.platform_of("aarch64") == Platform("linux", "arm64")
    assert layout.is_variant_link("../.multiarch/$(CVMFS_ARCH:-amd64)/r/a:1")
    assert layout.ARCH_VARIABLE == "$(CVMFS_ARCH:-x86_64)"
