"""The planner registry: every planner's ``config`` holds every constructor argument."""

from __future__ import annotations

import inspect

import pytest

from diffplan.models import create_model, list_models
from diffplan.models._registry import get_model_entry


@pytest.mark.parametrize("name", list_models())
def test_config_names_every_constructor_argument_with_its_value(name):
    builder = get_model_entry(name).builder
    defaults = {
        key: param.default
        for key, param in inspect.signature(builder).parameters.items()
        if param.default is not inspect.Parameter.empty
    }
    small = {"k": 3} if "k" in defaults else {}
    model = create_model(name, **small)
    assert set(model.config) == set(defaults)
    assert model.config == {**defaults, **small}
