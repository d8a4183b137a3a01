"""The role rules, and scopes: a query of one tenant never sees another's rows."""

from __future__ import annotations

import sqlite3

import pytest

from hyper import errors
from hyper.tenancy import policy
from hyper.tenancy.policy import Action
from hyper.tenancy.principal import Principal, Role, Scope

OPERATOR = Principal.local_operator("default")
ADMIN = Principal("alpha", Role.ADMIN, "k1")
MEMBER = Principal("alpha", Role.MEMBER, "k2")


@pytest.mark.parametrize("action", list(Action))
def test_the_operator_may_do_everything_everywhere(action: Action) -> None:
    for tenant in ("alpha", "beta", None):
        policy.require(OPERATOR, action, tenant)


@pytest.mark.parametrize(
    ("principal", "allowed"),
    [
        (ADMIN, {Action.READ, Action.WRITE, Action.KEYS, Action.QUOTA_READ, Action.USAGE_READ}),
        (MEMBER, {Action.READ, Action.QUOTA_READ, Action.USAGE_READ}),
    ],
)
def test_tenant_roles_in_their_own_tenant(principal: Principal, allowed: set[Action]) -> None:
    for action in Action:
        if action in allowed:
            policy.require(principal, action, "alpha")
        else:
            with pytest.raises(errors.PermissionDenied):
                policy.require(principal, action, "alpha")


@pytest.mark.parametrize("principal", [ADMIN, MEMBER])
@pytest.mark.parametrize("action", list(Action))
def test_no_tenant_role_reaches_another_tenant(principal: Principal, action: Action) -> None:
    for tenant in ("beta", None):
        with pytest.raises(errors.PermissionDenied):
            policy.require(principal, action, tenant)
    with pytest.raises(errors.PermissionDenied):
        policy.scope(principal, action, every=True)


def test_scope_is_the_principals_tenant_unless_the_operator_names_another() -> None:
    assert policy.scope(MEMBER, Action.READ) == Scope("alpha")
    assert policy.scope(ADMIN, Action.WRITE, "alpha") == Scope("alpha")
    with pytest.raises(errors.PermissionDenied):
        policy.scope(ADMIN, Action.READ, "beta")
    assert policy.scope(OPERATOR, Action.READ, "beta") == Scope("beta")
    assert policy.scope(OPERATOR, Action.READ, every=True).every_tenant


def test_keys_are_never_granted_above_ones_own_role() -> None:
    policy.require_grant(ADMIN, "alpha", Role.ADMIN)
    policy.require_grant(ADMIN, "alpha", Role.MEMBER)
    with pytest.raises(errors.PermissionDenied):
        policy.require_grant(ADMIN, "alpha", Role.OPERATOR)
    with pytest.raises(errors.PermissionDenied):
        policy.require_grant(MEMBER, "alpha", Role.MEMBER)
    with pytest.raises(errors.PermissionDenied):
        policy.require_grant(ADMIN, "beta", Role.MEMBER)
    policy.require_grant(OPERATOR, "beta", Role.OPERATOR)


def test_a_scoped_query_sees_only_its_tenant() -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE pods (id TEXT, tenant TEXT)")
    db.executemany("INSERT INTO pods VALUES (?, ?)", [("p1", "alpha"), ("p2", "beta")])

    def pods(scope: Scope) -> list[str]:
        clause, params = scope.sql("tenant")
        return [r[0] for r in db.execute(f"SELECT id FROM pods WHERE {clause} ORDER BY id", params)]

    assert pods(policy.scope(MEMBER, Action.READ)) == ["p1"]
    assert pods(policy.scope(OPERATOR, Action.READ, every=True)) == ["p1", "p2"]
    with pytest.raises(errors.Internal):
        Scope("alpha").sql("tenant; DROP TABLE pods")


def test_another_tenants_object_answers_like_a_missing_one() -> None:
    scope = Scope("alpha")
    scope.check("alpha", "no such pod: p2")
    with pytest.raises(errors.NotFound, match=r"^no such pod: p2$"):
        scope.check("beta", "no such pod: p2")
    Scope(None).check("beta", "no such pod: p2")
    assert Scope("alpha").single() == "alpha"
    with pytest.raises(errors.InvalidArgument):
        Scope(None).single()


def test_roles_parse_only_their_names() -> None:
    assert Role.parse("admin") is Role.ADMIN
    for bad in ("Admin", "root", "", None, 1):
        with pytest.raises(errors.InvalidArgument):
            Role.parse(bad)
