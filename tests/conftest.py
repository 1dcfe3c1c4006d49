"""Shared fixtures. Models are built offline (no hub access) and once per test session."""

from __future__ import annotations

import pytest

from leti.testing import make_tiny_model


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Directory of a random-init 2-layer GPT-2 (vocab 512) with a BPE tokenizer trained on
    stdlib source; load it with leti.model.load_model_and_tokenizer."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` run only where CUDA is available (the GPU machine), skipped elsewhere."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
