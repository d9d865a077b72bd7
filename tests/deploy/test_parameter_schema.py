"""What an operator sees in the UI's run form: the parameter schema `prefect deploy` stores for each deployment
(``parameter_schema`` of the loaded entrypoint) describes every parameter, and offers a choice where the values
are a fixed set."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from prefect import flow
from prefect.utilities.callables import parameter_schema

from flows.ops.preflight import BLOCK_TYPES
from tests.deploy.test_prefect_yaml import DEPLOYMENTS, flow_of

# Parameters whose values are a fixed set, wherever a flow takes them: the form must offer the choices.
CHOICES = {"dispatch", "engine", "on_primary_down", "qdrant_mode", "report_type", "node", "local_node"}
ENTRYPOINTS = sorted({d["entrypoint"] for d in DEPLOYMENTS})


def schema_of(entrypoint: str) -> dict[str, Any]:
    return parameter_schema(flow_of(entrypoint)).model_dump()


def offers_choices(prop: dict[str, Any], definitions: dict[str, Any]) -> bool:
    """An enum, directly or as a branch of an optional (``anyOf``) or a referenced definition."""
    if "enum" in prop or "const" in prop:
        return True
    if ref := prop.get("$ref") or next((p["$ref"] for p in prop.get("allOf", []) if "$ref" in p), None):
        return offers_choices(definitions[ref.rsplit("/", 1)[-1]], definitions)
    branches = [p for p in prop.get("anyOf", []) if p.get("type") != "null"]
    return bool(branches) and all(offers_choices(p, definitions) for p in branches)


def test_a_google_style_args_section_reaches_the_schema() -> None:
    """The one way parameters are described here (the flow's docstring), checked against Prefect itself."""

    @flow
    def sample(mode: Literal["a", "b"] = "a", count: int = 1) -> None:
        """Do a sample thing.

        Args:
            mode: which way to do it.
            count: how many times.
        """

    props = parameter_schema(sample).model_dump()["properties"]
    assert (props["mode"]["description"], props["mode"]["enum"]) == ("which way to do it.", ["a", "b"])
    assert props["count"]["description"] == "how many times."
    assert offers_choices(props["mode"], {}) and not offers_choices(props["count"], {})


@pytest.mark.parametrize("entrypoint", ENTRYPOINTS)
def test_every_parameter_is_described(entrypoint: str) -> None:
    props = schema_of(entrypoint)["properties"]
    assert [name for name, prop in props.items() if not (prop.get("description") or "").strip()] == []


@pytest.mark.parametrize("entrypoint", ENTRYPOINTS)
def test_parameters_with_a_fixed_set_of_values_are_choices(entrypoint: str) -> None:
    schema = schema_of(entrypoint)
    definitions = schema.get("definitions") or {}
    free = [name for name, prop in schema["properties"].items() if name in CHOICES]
    assert [name for name in free if not offers_choices(schema["properties"][name], definitions)] == []


def block_slugs(prop: dict[str, Any], definitions: dict[str, Any]) -> set[str]:
    """The block types the form offers saved blocks of for this field."""
    refs = [p["$ref"] for p in prop.get("anyOf", [prop]) if "$ref" in p]
    return {definitions[ref.rsplit("/", 1)[-1]].get("block_type_slug") for ref in refs} - {None}


@pytest.mark.parametrize("entrypoint", ENTRYPOINTS)
def test_block_parameters_offer_the_saved_blocks_of_their_type(entrypoint: str) -> None:
    """Every ``*_block`` field, at the top or inside a model (rag-sync's source, its config), lists saved blocks."""
    schema = schema_of(entrypoint)
    definitions = schema.get("definitions") or {}
    models = [schema, *definitions.values()]
    fields = {name: prop for model in models for name, prop in (model.get("properties") or {}).items()}
    wrong = {
        name: block_slugs(prop, definitions)
        for name, prop in fields.items()
        if name.endswith("_block") and block_slugs(prop, definitions) != {BLOCK_TYPES[name].get_block_type_slug()}
    }
    assert wrong == {}
