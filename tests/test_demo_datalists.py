"""``ensure_datalists``: the workflows' first step, which makes demo datalists or says how to prepare real ones."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from bundle.data.demo import ensure_datalists
from bundle.data.synthetic import GENERATED_MARKER


def _datalists(root: Path) -> dict[str, Path]:
    return {"aiforcovid": root / "aiforcovid.json", "brixia": root / "brixia.json"}


def test_missing_real_datalist_names_the_prepare_command(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"aiforcovid\.json.*scripts/prepare_data\.py aiforcovid"):
        ensure_datalists(_datalists(tmp_path), demo=False, root=tmp_path)


def test_demo_data_of_the_requested_size_is_reused_silently(tiny_demo: Path) -> None:
    marker = (tiny_demo / GENERATED_MARKER).read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ensure_datalists(_datalists(tiny_demo), demo=True, root=tiny_demo, size="tiny") == _datalists(tiny_demo)
    assert (tiny_demo / GENERATED_MARKER).read_text() == marker


def test_demo_data_of_another_size_is_reused_with_a_warning(tiny_demo: Path) -> None:
    """Asking for ``small`` where ``tiny`` data lives keeps the data (nothing regenerated) and says so."""
    marker = (tiny_demo / GENERATED_MARKER).read_text()
    with pytest.warns(UserWarning, match=r"size 'tiny', not the requested 'small'"):
        paths = ensure_datalists(_datalists(tiny_demo), demo=True, root=tiny_demo, size="small")
    assert paths == _datalists(tiny_demo)
    assert (tiny_demo / GENERATED_MARKER).read_text() == marker
