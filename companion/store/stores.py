"""Every repository of one database, built once: what the services are given instead of a database.

Each repository owns its collections (it declares their indexes and holds every query on them); the
services never see a collection, only these objects and the values they return.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

from pymongo.database import Database

from companion.clock import Clock, now
from companion.store.accounts import Users
from companion.store.adherence import AdherenceDays
from companion.store.alerts import Alerts, OwedDeviceAlerts
from companion.store.audit import AuditEvents
from companion.store.changes import ChangeSequences
from companion.store.clinical_notes import ClinicalNotes
from companion.store.codes import OneTimeCodes
from companion.store.content import ContentItems, Favourites, PracticeLog
from companion.store.db import IndexChange, ensure_indexes, migrate_indexes
from companion.store.devices import Devices, PairingCodes
from companion.store.diary import PainEntries
from companion.store.gateway_reports import GatewayDeadLetters
from companion.store.heartbeats import WorkerHeartbeats
from companion.store.idempotency import IdempotencyKeys
from companion.store.leases import JobMarks, Leases
from companion.store.outbox import Outbox
from companion.store.plans import TherapyPlans
from companion.store.push_tokens import PushTokens
from companion.store.read_models import PanelEntries, PanelRowDays, PanelRowMarks, PanelRows, TodayRows
from companion.store.recompute import DaysToRecompute
from companion.store.relationships import (
    CaregiverInvitations,
    CareInvitations,
    CareLinks,
    CareTeams,
    EmergencyGrants,
    Gateways,
)
from companion.store.reminders import Occurrences, Reminders
from companion.store.sessions import DeviceEvents, SessionConflicts, SessionRecords, UnitClaims, UnitSyncs
from companion.store.signups import SignUps
from companion.store.throttle import Counters
from companion.store.tokens import TokenFamilies
from companion.store.web_sessions import WebSessions


class Stores:
    def __init__(self, db: Database, clock: Clock = now):
        self.db = db
        self.clock = clock

    def ping(self) -> None:
        """Raise unless the database answers."""
        self.db.client.admin.command("ping")

    def ensure_indexes(self) -> None:
        """Create every collection's missing indexes (idempotent); IndexesOutOfDate for changed ones."""
        ensure_indexes(self.db)

    def migrate_indexes(self, progress: Callable[[IndexChange], None] | None = None) -> list[IndexChange]:
        """Bring every index to its definition in the code (see companion.store.db.migrate_indexes)."""
        return migrate_indexes(self.db, progress)

    @cached_property
    def users(self) -> Users:
        return Users(self.db)

    @cached_property
    def token_families(self) -> TokenFamilies:
        return TokenFamilies(self.db)

    @cached_property
    def one_time_codes(self) -> OneTimeCodes:
        return OneTimeCodes(self.db)

    @cached_property
    def signups(self) -> SignUps:
        return SignUps(self.db)

    @cached_property
    def counters(self) -> Counters:
        return Counters(self.db)

    @cached_property
    def web_sessions(self) -> WebSessions:
        return WebSessions(self.db)

    @cached_property
    def care_links(self) -> CareLinks:
        return CareLinks(self.db)

    @cached_property
    def care_teams(self) -> CareTeams:
        return CareTeams(self.db)

    @cached_property
    def care_invitations(self) -> CareInvitations:
        return CareInvitations(self.db)

    @cached_property
    def caregiver_invitations(self) -> CaregiverInvitations:
        return CaregiverInvitations(self.db)

    @cached_property
    def emergency_grants(self) -> EmergencyGrants:
        return EmergencyGrants(self.db)

    @cached_property
    def gateways(self) -> Gateways:
        return Gateways(self.db)

    @cached_property
    def devices(self) -> Devices:
        return Devices(self.db)

    @cached_property
    def pairing_codes(self) -> PairingCodes:
        return PairingCodes(self.db)

    @cached_property
    def audit_events(self) -> AuditEvents:
        return AuditEvents(self.db)

    @cached_property
    def idempotency_keys(self) -> IdempotencyKeys:
        return IdempotencyKeys(self.db)

    @cached_property
    def session_records(self) -> SessionRecords:
        return SessionRecords(self.db)

    @cached_property
    def device_events(self) -> DeviceEvents:
        return DeviceEvents(self.db)

    @cached_property
    def unit_syncs(self) -> UnitSyncs:
        return UnitSyncs(self.db)

    @cached_property
    def unit_claims(self) -> UnitClaims:
        return UnitClaims(self.db)

    @cached_property
    def session_conflicts(self) -> SessionConflicts:
        return SessionConflicts(self.db)

    @cached_property
    def gateway_dead_letters(self) -> GatewayDeadLetters:
        return GatewayDeadLetters(self.db)

    @cached_property
    def days_to_recompute(self) -> DaysToRecompute:
        return DaysToRecompute(self.db)

    @cached_property
    def plans(self) -> TherapyPlans:
        return TherapyPlans(self.db)

    @cached_property
    def reminders(self) -> Reminders:
        return Reminders(self.db)

    @cached_property
    def occurrences(self) -> Occurrences:
        return Occurrences(self.db)

    @cached_property
    def change_sequences(self) -> ChangeSequences:
        return ChangeSequences(self.db)

    @cached_property
    def pain_entries(self) -> PainEntries:
        return PainEntries(self.db)

    @cached_property
    def content(self) -> ContentItems:
        return ContentItems(self.db)

    @cached_property
    def favourites(self) -> Favourites:
        return Favourites(self.db)

    @cached_property
    def practice(self) -> PracticeLog:
        return PracticeLog(self.db)

    @cached_property
    def adherence_days(self) -> AdherenceDays:
        return AdherenceDays(self.db)

    @cached_property
    def alerts(self) -> Alerts:
        return Alerts(self.db, self.clock)

    @cached_property
    def owed_device_alerts(self) -> OwedDeviceAlerts:
        return OwedDeviceAlerts(self.db)

    @cached_property
    def clinical_notes(self) -> ClinicalNotes:
        return ClinicalNotes(self.db)

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(self.db, self.clock)

    @cached_property
    def push_tokens(self) -> PushTokens:
        return PushTokens(self.db, self.clock)

    @cached_property
    def leases(self) -> Leases:
        return Leases(self.db, self.clock)

    @cached_property
    def job_marks(self) -> JobMarks:
        return JobMarks(self.db)

    @cached_property
    def worker_heartbeats(self) -> WorkerHeartbeats:
        return WorkerHeartbeats(self.db)

    @cached_property
    def panel_rows(self) -> PanelRows:
        return PanelRows(self.db)

    @cached_property
    def today_rows(self) -> TodayRows:
        return TodayRows(self.db)

    @cached_property
    def panel_row_days(self) -> PanelRowDays:
        return PanelRowDays(self.db)

    @cached_property
    def panel_entries(self) -> PanelEntries:
        return self.care_teams.panel_entries  # (which moves its teams' panel versions on)

    @cached_property
    def panel_row_marks(self) -> PanelRowMarks:
        return PanelRowMarks(self.db)
