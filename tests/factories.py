"""factory_boy factories bound to the app's session."""

from __future__ import annotations

import factory
from werkzeug.security import generate_password_hash

from webapp.extensions import db
from webapp.models import Membership, Service, Team, User

PASSWORD = "correct horse battery"
# Hash once, and cheaply: production's scrypt cost (N=2**15, ~150 ms a check here) would
# spend minutes of every test run on sign-ins. Werkzeug reads the cost from the hash itself,
# so sign-in code is exercised unchanged; only test accounts made by this factory are cheap.
PASSWORD_HASH = generate_password_hash(PASSWORD, method="scrypt:1024:8:1")


class Base(factory.alchemy.SQLAlchemyModelFactory):
    class Meta:
        abstract = True
        sqlalchemy_session_factory = lambda: db.session  # noqa: E731
        sqlalchemy_session_persistence = "flush"


class UserFactory(Base):
    class Meta:
        model = User

    email = factory.Sequence(lambda n: f"person{n}@example.test")
    name = factory.Sequence(lambda n: f"Person {n}")
    password_hash = PASSWORD_HASH
    is_admin = False
    is_reviewer = False


class TeamFactory(Base):
    class Meta:
        model = Team

    name = factory.Sequence(lambda n: f"Team {n}")
    slug = factory.Sequence(lambda n: f"team-{n}")
    description = ""


class MembershipFactory(Base):
    class Meta:
        model = Membership

    team = factory.SubFactory(TeamFactory)
    user = factory.SubFactory(UserFactory)
    role = "member"


class ServiceFactory(Base):
    class Meta:
        model = Service

    team = factory.SubFactory(TeamFactory)
    name = factory.Sequence(lambda n: f"Service {n}")
    slug = factory.Sequence(lambda n: f"service-{n}")
    tier = 2
    lifecycle = "live"
    probe_interval_minutes = 15
