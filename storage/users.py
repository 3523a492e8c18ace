"""People who may sign in to the app: accounts, password checks, and the lock-out that slows guessing down.

Passwords are hashed with Argon2id (argon2-cffi, its RFC 9106 "low memory" defaults); only the hash is
kept, and no function here returns or logs it: callers get `AppUserPublic`.

Guessing is slowed by the database, never by sleeping (a sleep would hold a server thread and slow the
attacker no more than anyone else): after `LOCKOUT_AFTER` wrong passwords in a row, each further failure
locks the account for 2**(n - LOCKOUT_AFTER) seconds, at most `MAX_LOCKOUT`. `AppUser.locked_until` holds
across browser sessions and processes; while it is in the future `authenticate` does not even look at the
password. A correct password resets the count.

Unknown usernames take the same path: the password is checked against a dummy hash of the same cost, and
their failures are counted (in this process) under the same rule, so neither the time taken nor the
answer tells which usernames exist.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, col, select

from storage.db import session_scope
from storage.models import AppUser
from storage.types import utcnow

MIN_PASSWORD_LENGTH = 12  # characters
MAX_PASSWORD_LENGTH = 1024  # characters; longer input is refused before any hashing
MAX_USERNAME_LENGTH = 200  # characters, the column's size
LOCKOUT_AFTER = 5  # wrong passwords in a row before the account starts locking
MAX_LOCKOUT = timedelta(minutes=15)
UNKNOWN_NAMES_KEPT = 10_000  # unknown usernames whose failures this process remembers, newest kept

# Argon2id with argon2-cffi's defaults (t=3, 64 MiB, 4 lanes: RFC 9106's low-memory profile). Tests swap
# in a cheaper hasher; hashes record their own parameters, so old ones keep verifying after a change and
# are upgraded at the next successful sign-in.
HASHER = PasswordHasher()
# Each hash takes 64 MiB for a fraction of a second: a burst of sign-in attempts queues here instead of
# taking the server's memory.
_HASH_SLOTS = threading.BoundedSemaphore(4)


class AuthStatus(StrEnum):
    OK = "ok"
    WRONG = "wrong"  # wrong username or password; the two are never told apart
    LOCKED = "locked"  # too many failures: the password was not checked


class AppUserPublic(SQLModel):
    """What pages may show about an account: everything but the password hash."""

    id: int
    username: str
    is_admin: bool
    last_login_at: datetime | None
    created_at: datetime


@dataclass(frozen=True)
class AuthResult:
    """The answer to a sign-in attempt.

    `user` is set when `status` is OK. `retry_at` is when the account may try again: set when LOCKED,
    and on a WRONG answer whose failure started a lock-out.
    """

    status: AuthStatus
    user: AppUserPublic | None = None
    retry_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.status is AuthStatus.OK


class UserError(ValueError):
    """Input the person has to fix. `field` names the form field (None: the form as a whole); the
    message names it too, so it reads on its own."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def username_problem(username: str) -> str | None:
    """Why `username` cannot name an account, or None when it can (surrounding spaces are ignored)."""
    name = username.strip()
    if not name:
        return "Username: enter a username."
    if len(name) > MAX_USERNAME_LENGTH:
        return f"Username: at most {MAX_USERNAME_LENGTH} characters."
    if any(ch.isspace() or not ch.isprintable() for ch in name):
        return "Username: no spaces or control characters."
    return None


def password_problem(password: str, *, field: str = "Password") -> str | None:
    """Why `password` is not acceptable as a new password, or None. Never repeats the password."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"{field}: at least {MIN_PASSWORD_LENGTH} characters (this one has {len(password)})."
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"{field}: at most {MAX_PASSWORD_LENGTH} characters."
    if not password.strip():
        return f"{field}: must not be only spaces."
    return None


def new_account_problems(*, username: str, password: str, confirmation: str) -> dict[str, str]:
    """Every problem with a new-account form, by field ("username", "password", "confirmation")."""
    problems: dict[str, str] = {}
    if problem := username_problem(username):
        problems["username"] = problem
    if problem := password_problem(password):
        problems["password"] = problem
    elif confirmation != password:
        problems["confirmation"] = "Confirm password: does not match the password."
    return problems


def has_users(engine: Engine) -> bool:
    """Whether any account exists; without one, the app asks for the admin's password first."""
    with session_scope(engine) as session:
        return session.exec(select(AppUser.id).limit(1)).first() is not None


def create_user(engine: Engine, *, username: str, password: str, is_admin: bool = False) -> AppUserPublic:
    """Add an account. Raises UserError for a bad username or password, or a username already taken."""
    name = _checked(username, password)
    password_hash = _hash(password)
    try:
        with session_scope(engine, write=True) as session:
            return _insert(session, name, password_hash, is_admin)
    except IntegrityError as exc:
        raise UserError("username", f"Username: {name!r} is already taken.") from exc


def create_first_admin(engine: Engine, *, username: str, password: str) -> AppUserPublic:
    """Create the admin account on first start. Raises UserError when any account exists already (two
    people racing through the first-start form: the second is told to sign in instead)."""
    name = _checked(username, password)
    password_hash = _hash(password)
    with session_scope(engine, write=True) as session:
        # SQLite's BEGIN IMMEDIATE (write=True) already serialises this check-then-insert; PostgreSQL
        # needs a lock that two first-start transactions cannot both hold.
        if engine.dialect.name == "postgresql":
            session.execute(text(f"LOCK TABLE {AppUser.__tablename__} IN SHARE ROW EXCLUSIVE MODE"))
        if session.exec(select(AppUser.id).limit(1)).first() is not None:
            raise UserError(None, "An account exists already: sign in instead.")
        return _insert(session, name, password_hash, True)


def authenticate(engine: Engine, *, username: str, password: str, now: datetime | None = None) -> AuthResult:
    """Check a sign-in attempt and record its outcome.

    A success stamps `last_login_at` and clears the failure count; a failure counts, and may lock the
    account (see the module docstring). Unknown usernames answer exactly like wrong passwords.
    """
    now = now or utcnow()
    name = username.strip()
    with session_scope(engine) as session:
        user = session.exec(select(AppUser).where(col(AppUser.username) == name)).first()
    if user is None or user.id is None:
        return _unknown_name_attempt(name, password, now)
    if user.locked_until is not None and user.locked_until > now:
        return AuthResult(AuthStatus.LOCKED, retry_at=user.locked_until)
    ok = _verify(user.password_hash, password)
    upgraded = _hash(password) if ok and HASHER.check_needs_rehash(user.password_hash) else None
    return _record(engine, user_id=user.id, ok=ok, new_hash=upgraded, sign_in=True, now=now)


def change_password(
    engine: Engine,
    *,
    username: str,
    current_password: str,
    new_password: str,
    now: datetime | None = None,
) -> None:
    """Replace an account's password after checking the current one (which counts like a sign-in
    attempt towards the lock-out). Raises UserError naming the field at fault."""
    if problem := password_problem(new_password, field="New password"):
        raise UserError("new_password", problem)
    now = now or utcnow()
    name = username.strip()
    with session_scope(engine) as session:
        user = session.exec(select(AppUser).where(col(AppUser.username) == name)).first()
    if user is None or user.id is None:
        result = _unknown_name_attempt(name, current_password, now)
    elif user.locked_until is not None and user.locked_until > now:
        result = AuthResult(AuthStatus.LOCKED, retry_at=user.locked_until)
    else:
        ok = _verify(user.password_hash, current_password)
        new_hash = _hash(new_password) if ok else None
        result = _record(engine, user_id=user.id, ok=ok, new_hash=new_hash, sign_in=False, now=now)
    if result.status is AuthStatus.LOCKED:
        raise UserError("current_password", "Current password: too many failed attempts; try again later.")
    if not result.ok:
        raise UserError("current_password", "Current password: wrong password.")


def lockout_for(failures: int) -> timedelta | None:
    """How long an account stays locked after `failures` wrong passwords in a row (None: not locked)."""
    if failures < LOCKOUT_AFTER:
        return None
    exponent = min(failures - LOCKOUT_AFTER, 20)  # 2**20 s is far past the cap already
    return min(timedelta(seconds=2**exponent), MAX_LOCKOUT)


# -- internals ---------------------------------------------------------------------------------------


def _checked(username: str, password: str) -> str:
    if problem := username_problem(username):
        raise UserError("username", problem)
    if problem := password_problem(password):
        raise UserError("password", problem)
    return username.strip()


def _insert(session: Session, name: str, password_hash: str, is_admin: bool) -> AppUserPublic:
    user = AppUser(username=name, password_hash=password_hash, is_admin=is_admin)
    session.add(user)
    session.flush()
    return AppUserPublic.model_validate(user, from_attributes=True)


def _hash(password: str) -> str:
    with _HASH_SLOTS:
        return HASHER.hash(password)


def _verify(password_hash: str, password: str) -> bool:
    """Whether `password` matches; always costs one Argon2 computation, whatever the input."""
    if len(password) > MAX_PASSWORD_LENGTH:
        _verify_dummy("")
        return False
    with _HASH_SLOTS:
        try:
            return HASHER.verify(password_hash, password)
        except VerificationError:
            return False
        except InvalidHashError:
            pass
    # An account without a usable hash (one made for single sign-on, say) must not answer faster.
    _verify_dummy(password)
    return False


def _verify_dummy(password: str) -> None:
    dummy = _dummy_hash()
    with _HASH_SLOTS, contextlib.suppress(VerificationError):
        HASHER.verify(dummy, password)


_dummy_hashes: dict[tuple[object, ...], str] = {}
_dummy_lock = threading.Lock()


def _dummy_hash() -> str:
    """A hash of a random password, made with the current hasher's parameters (so checking it costs
    what checking a real one does)."""
    key = (HASHER.type, HASHER.time_cost, HASHER.memory_cost, HASHER.parallelism, HASHER.hash_len)
    with _dummy_lock:
        if key not in _dummy_hashes:
            _dummy_hashes[key] = HASHER.hash(secrets.token_urlsafe(32))
        return _dummy_hashes[key]


def _record(
    engine: Engine, *, user_id: int, ok: bool, new_hash: str | None, sign_in: bool, now: datetime
) -> AuthResult:
    """Write an attempt's outcome in one short transaction (the hashing happened before it, so the write
    lock is never held for the length of an Argon2 computation)."""
    with session_scope(engine, write=True) as session:
        user = session.exec(select(AppUser).where(col(AppUser.id) == user_id).with_for_update()).first()
        if user is None:  # deleted while the password was being checked
            return AuthResult(AuthStatus.WRONG)
        if user.locked_until is not None and user.locked_until > now:
            # Another attempt failed meanwhile and locked the account: parallel guesses get no more
            # tries than sequential ones, even a right one.
            return AuthResult(AuthStatus.LOCKED, retry_at=user.locked_until)
        if ok:
            user.failed_logins = 0
            user.locked_until = None
            if sign_in:
                user.last_login_at = now
            if new_hash is not None:
                user.password_hash = new_hash
            session.add(user)
            session.flush()
            return AuthResult(AuthStatus.OK, user=AppUserPublic.model_validate(user, from_attributes=True))
        user.failed_logins += 1
        lockout = lockout_for(user.failed_logins)
        user.locked_until = now + lockout if lockout is not None else None
        session.add(user)
        return AuthResult(AuthStatus.WRONG, retry_at=user.locked_until)


class _UnknownNames:
    """Failure counts for usernames that have no account, kept in this process only. They protect no
    account; they make the answers for unknown names lock out like those for real ones."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[int, datetime | None]] = OrderedDict()

    def locked_until(self, name: str, now: datetime) -> datetime | None:
        with self._lock:
            _failures, until = self._entries.get(name, (0, None))
        return until if until is not None and until > now else None

    def fail(self, name: str, now: datetime) -> datetime | None:
        with self._lock:
            failures = self._entries.pop(name, (0, None))[0] + 1
            lockout = lockout_for(failures)
            until = now + lockout if lockout is not None else None
            self._entries[name] = (failures, until)
            while len(self._entries) > self._limit:
                self._entries.popitem(last=False)
        return until

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_unknown_names = _UnknownNames(UNKNOWN_NAMES_KEPT)


def _unknown_name_attempt(name: str, password: str, now: datetime) -> AuthResult:
    if (until := _unknown_names.locked_until(name, now)) is not None:
        return AuthResult(AuthStatus.LOCKED, retry_at=until)
    _verify(_dummy_hash(), password)
    return AuthResult(AuthStatus.WRONG, retry_at=_unknown_names.fail(name, now))
