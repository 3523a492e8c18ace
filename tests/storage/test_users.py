"""Accounts and sign-in checks (storage.users) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from argon2 import PasswordHasher
from sqlalchemy.engine import Engine
from sqlmodel import col, select

import storage.users as users
from storage.db import session_scope
from storage.models import AppUser
from storage.types import utcnow
from storage.users import (
    LOCKOUT_AFTER,
    MAX_LOCKOUT,
    AuthStatus,
    UserError,
    authenticate,
    change_password,
    create_first_admin,
    create_user,
    has_users,
    lockout_for,
    new_account_problems,
)

PASSWORD = "correct horse battery"
OTHER_PASSWORD = "another long passphrase"


class CountingHasher(PasswordHasher):
    """A cheap Argon2id hasher that counts the hashes it checks, to show every path pays the same."""

    def __init__(self, time_cost: int = 1) -> None:
        super().__init__(time_cost=time_cost, memory_cost=1024, parallelism=1)
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified += 1
        return super().verify(hash, password)


@pytest.fixture(autouse=True)
def hasher(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingHasher]:
    """A fast hasher for the test, and a clean slate of remembered unknown usernames."""
    fast = CountingHasher()
    monkeypatch.setattr(users, "HASHER", fast)
    users._unknown_names.clear()
    yield fast
    users._unknown_names.clear()


def stored(engine: Engine, username: str) -> AppUser:
    with session_scope(engine) as session:
        user = session.exec(select(AppUser).where(col(AppUser.username) == username)).one()
    return user


def has_users_named(engine: Engine, username: str) -> bool:
    with session_scope(engine) as session:
        return session.exec(select(AppUser).where(col(AppUser.username) == username)).first() is not None


def fail(engine: Engine, username: str, times: int, **kwargs: object) -> list[users.AuthResult]:
    return [
        authenticate(engine, username=username, password="wrong password!", **kwargs) for _ in range(times)
    ]


def test_has_users_is_false_until_an_account_exists(engine: Engine) -> None:
    assert not has_users(engine)
    create_user(engine, username="ops", password=PASSWORD)
    assert has_users(engine)


def test_create_user_keeps_only_an_argon2id_hash(engine: Engine) -> None:
    public = create_user(engine, username="  ops  ", password=PASSWORD, is_admin=True)

    row = stored(engine, "ops")
    assert (public.username, public.is_admin) == ("ops", True)
    assert row.password_hash.startswith("$argon2id$")
    assert PASSWORD not in row.password_hash
    assert "password_hash" not in public.model_dump()
    assert PASSWORD not in repr(public)


@pytest.mark.parametrize(
    ("username", "password", "field", "words"),
    [
        ("", PASSWORD, "username", "Username: enter"),
        ("two words", PASSWORD, "username", "Username: no spaces"),
        ("x" * 201, PASSWORD, "username", "Username: at most 200"),
        ("ops", "short", "password", "Password: at least 12 characters (this one has 5)"),
        ("ops", " " * 12, "password", "Password: must not be only spaces"),
        ("ops", "x" * 1025, "password", "Password: at most 1024"),
    ],
)
def test_create_user_refuses_bad_input_naming_the_field(
    engine: Engine, username: str, password: str, field: str, words: str
) -> None:
    with pytest.raises(UserError) as caught:
        create_user(engine, username=username, password=password)

    assert caught.value.field == field
    assert words in caught.value.message
    assert not has_users(engine)


def test_create_user_refuses_a_taken_username(engine: Engine) -> None:
    create_user(engine, username="ops", password=PASSWORD)

    with pytest.raises(UserError, match="already taken") as caught:
        create_user(engine, username="ops", password=OTHER_PASSWORD)
    assert caught.value.field == "username"


def test_new_account_problems_lists_every_field_at_fault() -> None:
    assert new_account_problems(username="", password="short", confirmation="short") == {
        "username": "Username: enter a username.",
        "password": "Password: at least 12 characters (this one has 5).",
    }
    assert new_account_problems(username="admin", password=PASSWORD, confirmation=PASSWORD + "!") == {
        "confirmation": "Confirm password: does not match the password."
    }
    assert new_account_problems(username="admin", password=PASSWORD, confirmation=PASSWORD) == {}


def test_create_first_admin_makes_an_admin_once(engine: Engine) -> None:
    admin = create_first_admin(engine, username="admin", password=PASSWORD)

    assert admin.is_admin
    with pytest.raises(UserError, match="sign in instead"):
        create_first_admin(engine, username="second", password=PASSWORD)
    assert [stored(engine, "admin").username] == ["admin"]


def test_authenticate_accepts_the_right_password_and_stamps_the_sign_in(engine: Engine) -> None:
    create_user(engine, username="ops", password=PASSWORD)
    fail(engine, "ops", 2)
    now = utcnow()

    result = authenticate(engine, username="ops", password=PASSWORD, now=now)

    assert result.status is AuthStatus.OK
    assert result.user is not None and result.user.username == "ops"
    row = stored(engine, "ops")
    assert (row.failed_logins, row.locked_until, row.last_login_at) == (0, None, now)


def test_authenticate_refuses_a_wrong_password_and_counts_it(engine: Engine) -> None:
    create_user(engine, username="ops", password=PASSWORD)

    result = authenticate(engine, username="ops", password=OTHER_PASSWORD)

    assert (result.status, result.user, result.retry_at) == (AuthStatus.WRONG, None, None)
    assert stored(engine, "ops").failed_logins == 1
    assert stored(engine, "ops").last_login_at is None


def test_repeated_failures_lock_the_account_in_the_database(engine: Engine) -> None:
    create_user(engine, username="ops", password=PASSWORD)
    now = utcnow()

    results = fail(engine, "ops", LOCKOUT_AFTER, now=now)
    locked = authenticate(engine, username="ops", password=PASSWORD, now=now + timedelta(milliseconds=500))

    assert [r.retry_at for r in results[:-1]] == [None] * (LOCKOUT_AFTER - 1)
    assert results[-1].status is AuthStatus.WRONG
    assert results[-1].retry_at == now + timedelta(seconds=1)
    assert (locked.status, locked.retry_at) == (AuthStatus.LOCKED, now + timedelta(seconds=1))
    assert stored(engine, "ops").locked_until == now + timedelta(seconds=1)  # what every process reads


def test_a_locked_account_is_not_checked_and_its_count_stands(engine: Engine, hasher: CountingHasher) -> None:
    create_user(engine, username="ops", password=PASSWORD)
    now = utcnow()
    fail(engine, "ops", LOCKOUT_AFTER, now=now)
    checked = hasher.verified

    fail(engine, "ops", 3, now=now)

    assert hasher.verified == checked
    assert stored(engine, "ops").failed_logins == LOCKOUT_AFTER


def test_the_lock_lifts_when_its_time_has_passed_and_doubles_on_the_next_failure(engine: Engine) -> None:
    create_user(engine, username="ops", password=PASSWORD)
    now = utcnow()
    fail(engine, "ops", LOCKOUT_AFTER, now=now)
    later = now + timedelta(seconds=1)

    again = fail(engine, "ops", 1, now=later)[0]
    ok = authenticate(engine, username="ops", password=PASSWORD, now=later + timedelta(seconds=2))

    assert again.retry_at == later + timedelta(seconds=2)
    assert ok.status is AuthStatus.OK
    assert stored(engine, "ops").failed_logins == 0


@pytest.mark.parametrize(
    ("failures", "lockout"),
    [
        (0, None),
        (LOCKOUT_AFTER - 1, None),
        (LOCKOUT_AFTER, timedelta(seconds=1)),
        (LOCKOUT_AFTER + 1, timedelta(seconds=2)),
        (LOCKOUT_AFTER + 9, timedelta(seconds=512)),
        (LOCKOUT_AFTER + 10, MAX_LOCKOUT),
        (10_000, MAX_LOCKOUT),
    ],
)
def test_lockout_doubles_per_failure_up_to_the_cap(failures: int, lockout: timedelta | None) -> None:
    assert lockout_for(failures) == lockout


def test_unknown_usernames_answer_like_wrong_passwords(engine: Engine, hasher: CountingHasher) -> None:
    create_user(engine, username="ops", password=PASSWORD)
    now = utcnow()
    hasher.verified = 0

    known = fail(engine, "ops", LOCKOUT_AFTER + 1, now=now)
    known_checks, hasher.verified = hasher.verified, 0
    unknown = fail(engine, "nobody", LOCKOUT_AFTER + 1, now=now)

    assert [(r.status, r.retry_at) for r in unknown] == [(r.status, r.retry_at) for r in known]
    assert hasher.verified == known_checks == LOCKOUT_AFTER  # one Argon2 check per unlocked attempt
    assert not has_users_named(engine, "nobody")


def test_an_overlong_password_is_refused_at_the_same_cost(engine: Engine, hasher: CountingHasher) -> None:
    create_user(engine, username="ops", password=PASSWORD)
    hasher.verified = 0

    result = authenticate(engine, username="ops", password=PASSWORD + "x" * 2000)

    assert (result.status, hasher.verified) == (AuthStatus.WRONG, 1)


def test_a_hash_made_with_older_parameters_is_upgraded_at_sign_in(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_user(engine, username="ops", password=PASSWORD)
    before = stored(engine, "ops").password_hash
    monkeypatch.setattr(users, "HASHER", CountingHasher(time_cost=2))

    assert authenticate(engine, username="ops", password=PASSWORD).ok

    after = stored(engine, "ops").password_hash
    assert ",t=1," in before and ",t=2," in after
    assert authenticate(engine, username="ops", password=PASSWORD).ok


def test_change_password_needs_the_current_one(engine: Engine) -> None:
    create_user(engine, username="ops", password=PASSWORD)

    with pytest.raises(UserError) as wrong:
        change_password(
            engine, username="ops", current_password="not my password", new_password=OTHER_PASSWORD
        )
    with pytest.raises(UserError) as weak:
        change_password(engine, username="ops", current_password=PASSWORD, new_password="short")
    change_password(engine, username="ops", current_password=PASSWORD, new_password=OTHER_PASSWORD)

    assert (wrong.value.field, weak.value.field) == ("current_password", "new_password")
    assert "New password: at least 12" in weak.value.message
    assert not authenticate(engine, username="ops", password=PASSWORD).ok
    assert authenticate(engine, username="ops", password=OTHER_PASSWORD).ok


def test_change_password_respects_the_lock_out(engine: Engine) -> None:
    create_user(engine, username="ops", password=PASSWORD)
    now = utcnow()
    fail(engine, "ops", LOCKOUT_AFTER, now=now)

    with pytest.raises(UserError, match="too many failed attempts"):
        change_password(
            engine, username="ops", current_password=PASSWORD, new_password=OTHER_PASSWORD, now=now
        )
    assert authenticate(engine, username="ops", password=PASSWORD, now=now + MAX_LOCKOUT).ok
