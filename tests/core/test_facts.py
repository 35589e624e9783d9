"""The JSON facts file: what loads, and errors that name the entry at fault.

"Facts that point at nothing are almost always a data bug: refuse them at load." Every
error is a ``ConfigurationError`` (exit 2 in the CLI) that names the file and the entry,
such as ``memberships[1]`` or ``chats[0].assistant``; nothing surfaces as a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from illumichat_authz import ConfigurationError, load_facts_file
from illumichat_authz.facts import (
    Assistant,
    AsyncFacts,
    Chat,
    Facts,
    Grant,
    InMemoryFacts,
    Membership,
    Resource,
)
from illumichat_authz.facts_file import facts_from_document
from illumichat_authz.vocab import Role, Visibility


def good() -> dict[str, Any]:
    return {
        "memberships": [
            {"user": "u-1", "workspace": "ws-1", "role": "owner"},
            {"user": "u-2", "workspace": "ws-1", "role": "guest", "status": "invited"},
        ],
        "assistants": [
            {"id": "a-1", "workspace": "ws-1", "visibility": "private", "creator": "u-1"},
        ],
        "chats": [{"id": "c-1", "workspace": "ws-1", "assistant": "a-1", "creator": "u-2"}],
        "grants": [{"user": "u-2", "assistant": "a-1"}],
    }


def dump(tmp_path: Path, data: Any, name: str = "facts.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def refused(tmp_path: Path, data: Any) -> str:
    path = dump(tmp_path, data)
    with pytest.raises(ConfigurationError) as info:
        load_facts_file(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_a_good_file_loads_into_lookups(tmp_path: Path) -> None:
    facts = load_facts_file(dump(tmp_path, good()))
    assert facts.membership("u-1", "ws-1") == Membership(
        user="u-1", workspace="ws-1", role=Role.OWNER
    )
    invited = facts.membership("u-2", "ws-1")
    assert invited is not None
    assert invited.status == "invited"
    assert facts.membership("u-1", "ws-2") is None
    assert facts.resource("assistant", "a-1") == Assistant(
        id="a-1", workspace="ws-1", visibility=Visibility.PRIVATE, creator="u-1"
    )
    assert facts.resource("chat", "c-1") == Chat(
        id="c-1", workspace="ws-1", assistant="a-1", creator="u-2"
    )
    assert facts.resource("chat", "a-1") is None  # kinds are separate name spaces
    assert facts.has_grant("u-2", "assistant", "a-1")
    assert not facts.has_grant("u-1", "assistant", "a-1")
    assert len(facts) == 5
    assert facts.workspaces() == {"ws-1"}


def test_an_empty_document_is_an_empty_store(tmp_path: Path) -> None:
    facts = load_facts_file(dump(tmp_path, {}))
    assert len(facts) == 0


def test_in_memory_facts_satisfy_the_sync_protocol_only() -> None:
    facts = InMemoryFacts()
    assert isinstance(facts, Facts)
    facts.add(
        Membership(user="u", workspace="w", role=Role.MEMBER),
        Assistant(id="a", workspace="w", visibility=Visibility.PUBLIC, creator="u"),
        Chat(id="c", workspace="w", assistant="a", creator="u"),
        Grant(user="v", assistant="a"),
    )
    assert len(facts) == 4
    assert facts.has_grant("v", "assistant", "a")
    assert AsyncFacts is not Facts


def test_the_typed_helpers_are_resources_of_their_kind() -> None:
    assistant = Assistant(id="a", workspace="w", visibility="public", creator="u")
    chat = Chat(id="c", workspace="w", assistant="a", creator="u")
    assert isinstance(assistant, Resource)
    assert (assistant.kind, chat.kind, chat.visibility) == ("assistant", "chat", None)
    assert Grant(user="v", assistant="a") == Grant(user="v", kind="assistant", id="a")
    with pytest.raises(TypeError):
        Grant(user="v")


def test_generic_resources_and_their_grants_load(tmp_path: Path) -> None:
    data = good()
    data["resources"] = [
        {"kind": "document", "id": "d-1", "workspace": "ws-1", "visibility": "draft"},
        {"kind": "folder", "id": "f-1", "workspace": "ws-1", "creator": "u-1"},
    ]
    data["grants"].append({"user": "u-2", "kind": "document", "id": "d-1"})
    data["memberships"].append({"user": "u-3", "workspace": "ws-1", "role": "editor"})
    facts = load_facts_file(dump(tmp_path, data))
    assert facts.resource("document", "d-1") == Resource(
        kind="document", id="d-1", workspace="ws-1", visibility="draft"
    )
    assert facts.resource("folder", "f-1") == Resource(
        kind="folder", id="f-1", workspace="ws-1", creator="u-1"
    )
    assert facts.has_grant("u-2", "document", "d-1")
    assert not facts.has_grant("u-2", "assistant", "d-1")
    # Any non-empty role: the policy's g lines decide what it may do.
    editor = facts.membership("u-3", "ws-1")
    assert editor is not None
    assert editor.role == "editor"


@pytest.mark.parametrize(
    ("grant", "entry"),
    [
        ({"user": "u-2", "kind": "document", "id": "d-ghost"}, "grants[1].id"),
        ({"user": "u-2", "kind": "document"}, "grants[1]"),
        ({"user": "u-2", "assistant": "a-1", "kind": "document", "id": "d-1"}, "grants[1]"),
    ],
)
def test_a_grant_names_one_known_target(tmp_path: Path, grant: Any, entry: str) -> None:
    data = good()
    data["resources"] = [{"kind": "document", "id": "d-1", "workspace": "ws-1"}]
    data["grants"].append(grant)
    assert entry in refused(tmp_path, data)


def test_a_resource_twice_is_refused(tmp_path: Path) -> None:
    data = good()
    data["resources"] = [
        {"kind": "document", "id": "d-1", "workspace": "ws-1"},
        {"kind": "document", "id": "d-1", "workspace": "ws-1"},
        {"kind": "assistant", "id": "a-1", "workspace": "ws-1"},
    ]
    message = refused(tmp_path, data)
    assert "duplicate (kind, id)" in message
    assert "('document', 'd-1')" in message
    assert "('assistant', 'a-1')" in message


def test_a_duplicate_membership_names_the_entry(tmp_path: Path) -> None:
    data = good()
    data["memberships"].append({"user": "u-1", "workspace": "ws-1", "role": "guest"})
    message = refused(tmp_path, data)
    assert "memberships[2]" in message
    assert "duplicate membership" in message


def test_duplicate_assistant_and_chat_ids(tmp_path: Path) -> None:
    data = good()
    data["assistants"].append(dict(data["assistants"][0]))
    data["chats"].append(dict(data["chats"][0]))
    message = refused(tmp_path, data)
    assert "assistants: duplicate ids ['a-1']" in message
    assert "chats: duplicate ids ['c-1']" in message


@pytest.mark.parametrize(
    ("mutate", "entry"),
    [
        (lambda d: d["assistants"][0].update(workspace="ws-ghost"), "assistants[0].workspace"),
        (lambda d: d["chats"][0].update(assistant="a-ghost"), "chats[0].assistant"),
        (lambda d: d["grants"][0].update(assistant="a-ghost"), "grants[0].assistant"),
    ],
    ids=["assistant-in-unknown-workspace", "chat-of-unknown-assistant", "grant-on-unknown"],
)
def test_dangling_references_name_the_entry(tmp_path: Path, mutate: Any, entry: str) -> None:
    data = good()
    mutate(data)
    message = refused(tmp_path, data)
    assert entry in message
    assert "ghost" in message


def test_a_chat_in_another_workspace_than_its_assistant(tmp_path: Path) -> None:
    data = good()
    data["memberships"].append({"user": "u-1", "workspace": "ws-2", "role": "owner"})
    data["chats"][0]["workspace"] = "ws-2"
    message = refused(tmp_path, data)
    assert "chats[0].workspace" in message


@pytest.mark.parametrize(
    ("section", "index", "field", "value"),
    [
        # Any non-empty role loads (the policy decides what it may do), but not "".
        ("memberships", 0, "role", ""),
        ("memberships", 0, "role", 42),
        ("memberships", 1, "role", None),
        ("memberships", 0, "user", 42),
        ("memberships", 0, "user", ""),
        ("memberships", 0, "status", ""),
        ("memberships", 0, "workspace", "w" * 300),
        ("assistants", 0, "visibility", ""),
        ("assistants", 0, "id", ["a-1"]),
        ("chats", 0, "creator", {"id": "u-2"}),
        ("grants", 0, "user", True),
    ],
)
def test_wrong_types_name_the_field(
    tmp_path: Path, section: str, index: int, field: str, value: Any
) -> None:
    data = good()
    data[section][index][field] = value
    message = refused(tmp_path, data)
    assert f"{section}[{index}].{field}" in message


def test_a_missing_field_names_the_field(tmp_path: Path) -> None:
    data = good()
    del data["assistants"][0]["creator"]
    assert "assistants[0].creator" in refused(tmp_path, data)


def test_an_unknown_field_is_refused(tmp_path: Path) -> None:
    data = good()
    data["memberships"][0]["admin"] = True
    assert "memberships[0].admin" in refused(tmp_path, data)
    data = good()
    data["workspaces"] = []
    assert "workspaces" in refused(tmp_path, data)


@pytest.mark.parametrize("document", [[], "facts", 3, None])
def test_the_top_level_must_be_an_object(tmp_path: Path, document: Any) -> None:
    assert "invalid facts" in refused(tmp_path, document)


def test_a_section_must_be_a_list(tmp_path: Path) -> None:
    assert "memberships" in refused(tmp_path, {"memberships": {"u-1": "owner"}})


def test_bad_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "facts.json"
    path.write_text(
        "{\n"
        '  "memberships": [\n'
        '    {"user": "u-1", "workspace": "ws-1", "role": "owner",}\n'
        "  ]\n}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigurationError) as info:
        load_facts_file(path)
    message = str(info.value)
    assert f"{path}:3:" in message
    assert "invalid JSON" in message


def test_bytes_that_are_not_utf8_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "facts.json"
    path.write_bytes(b'{"memberships": [{"user": "\xff\xfe", "workspace": "w", "role": "owner"}]}')
    with pytest.raises(ConfigurationError, match="facts"):
        load_facts_file(path)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="facts file not found"):
        load_facts_file(tmp_path / "nope.json")


def test_a_directory_is_not_a_facts_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        load_facts_file(tmp_path)


def test_problems_are_listed_together_but_bounded() -> None:
    data: dict[str, Any] = {
        "memberships": [{"user": "u", "workspace": "w", "role": "owner"}] * 50,
    }
    with pytest.raises(ConfigurationError) as info:
        facts_from_document(data, source="inline")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("inline: invalid facts")
    assert 2 <= len(lines) <= 21  # every problem up to a bound, not 49 lines


def test_deeply_nested_json_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "facts.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises((ConfigurationError, RecursionError)) as info:
        load_facts_file(path)
    assert info.type is ConfigurationError, "a RecursionError escaped load_facts_file"
    assert str(path) in str(info.value)


def test_loaded_vocabulary_values_are_the_policys_own_string_objects() -> None:
    """The decision table's keys match the rules' keys by identity (vocab.canonical): a
    role, status or visibility read from JSON is the very object the compiled table holds,
    not an equal copy (which would cost a memcmp per key item on every decision)."""
    import illumichat_authz as ia

    # Built at run time, so that neither is the interpreter's interned literal.
    role, vis = "".join(["ad", "min"]), "".join(["pri", "vate"])
    facts = facts_from_document(
        {
            "memberships": [{"user": "u", "workspace": "w", "role": role}],
            "assistants": [{"id": "a", "workspace": "w", "visibility": vis, "creator": "u"}],
        }
    )
    core = ia.build_core(ia.load_settings(environment=False))
    keys = {item: item for key in core.policy.table for item in key if item is not None}
    member = facts.membership("u", "w")
    assistant = facts.resource("assistant", "a")
    assert member is not None
    assert assistant is not None
    assert member.role is keys["admin"]
    assert member.status is keys["active"]
    assert assistant.visibility is keys["private"]
    assert assistant.kind is keys["assistant"]
    route = core.access_routes[("assistant:read", "assistant")]
    assert route.action is keys["assistant:read"]
    assert route.resource is not None
    assert route.resource.kind is keys["assistant"]
