"""The services one process shares: database handle, settings, tokens, access control, audit trail."""

from __future__ import annotations

from functools import cached_property

from pymongo import MongoClient
from pymongo.database import Database

from companion.config import Settings
from companion.services.access import AccessControl
from companion.services.accounts import Accounts
from companion.services.audit import AuditTrail
from companion.services.tokens import TokenService
from companion.store.db import make_client
from companion.store.relationships import Gateways
from companion.store.tokens import TokenFamilies


class Services:
    def __init__(self, settings: Settings, client: MongoClient | None = None):
        self.settings = settings
        self.client = client or make_client(
            settings.mongodb_uri,
            timeout_ms=settings.db_timeout_ms,
            server_selection_timeout_ms=settings.server_selection_timeout_ms,
        )
        self.db: Database = self.client[settings.mongodb_db]

    @cached_property
    def tokens(self) -> TokenService:
        return TokenService(self.settings, TokenFamilies(self.db))

    @cached_property
    def accounts(self) -> Accounts:
        return Accounts(self.db, self.settings)

    @cached_property
    def access(self) -> AccessControl:
        return AccessControl(self.db)

    @cached_property
    def audit(self) -> AuditTrail:
        return AuditTrail(self.db)

    def gateway_active(self, gateway_id: str) -> bool:
        gateway = Gateways(self.db).get(gateway_id)
        return bool(gateway) and not gateway["revoked"]
