"""Every use case of one process, built once from its settings: the composition root.

The web app keeps one in ``app.extensions["companion"]`` (views reach it through
``companion.http.services()``), the scheduler worker and the command line build their own. Each
attribute is one area's service; they share the stores (one per collection) and the clock.
"""

from __future__ import annotations

from functools import cached_property

from pymongo import MongoClient

from companion.clock import Clock, now
from companion.metrics import PrometheusTelemetry
from companion.notify.mail import mailer_for
from companion.notify.push import PushSender
from companion.services.access import AccessControl
from companion.services.accounts import Accounts
from companion.services.adherence import Adherence
from companion.services.adherence_batch import AdherenceJob
from companion.services.adherence_upgrade import AdherenceUpgrade
from companion.services.alerts import AlertService
from companion.services.audit import AnchorSink, AuditTrail
from companion.services.care import Care
from companion.services.diary import Diary
from companion.services.gateways import Gateways
from companion.services.health import Health
from companion.services.heartbeat import Heartbeats
from companion.services.housekeeping import Housekeeping
from companion.services.idempotency import IdempotencyClaims
from companion.services.ingestion import Ingestion
from companion.services.leadership import LeaderLease
from companion.services.library import Library
from companion.services.lifecycle import AccountLifecycle
from companion.services.notifications import Notifications
from companion.services.patients import Profiles
from companion.services.plans import Plans
from companion.services.progress import Progress
from companion.services.push_delivery import PushDelivery
from companion.services.read_models import PanelPages, PanelReadModel
from companion.services.reminder_dispatch import ReminderDispatch
from companion.services.reminders import ReminderService
from companion.services.review import Review
from companion.services.rights import PatientRights
from companion.services.sessions import TensSessions
from companion.services.sync import Changes
from companion.services.telemetry import Telemetry
from companion.services.tokens import TokenService
from companion.services.touched_days import TouchedDays
from companion.settings import Settings
from companion.store.db import DatabaseNotFound as DatabaseNotFound  # re-exported for the worker and sender
from companion.store.db import make_client
from companion.store.stores import Stores


class Services:
    def __init__(self, settings: Settings, client: MongoClient | None = None, *, clock: Clock = now,
                 sender: PushSender | None = None, telemetry: Telemetry | None = None, mailer=None):
        self.settings = settings
        self.clock = clock
        self.telemetry = telemetry or PrometheusTelemetry()
        self.client = client or make_client(
            settings.mongodb_uri,
            timeout_ms=settings.db_timeout_ms,
            server_selection_timeout_ms=settings.server_selection_timeout_ms,
        )
        self.stores = Stores(self.client[settings.mongodb_db], clock)
        self.sender = sender
        self.mailer = mailer or mailer_for(settings.smtp_url, settings.mail_dir, settings.mail_from,
                                           pseudonym_key=settings.pseudonym_key)

    @property
    def db(self):
        """The database (for tests and benchmarks that look behind the services; the code never does)."""
        return self.stores.db

    def close(self) -> None:
        if "audit" in self.__dict__:
            self.audit.close()  # anchor the chain's last events before the process goes
        self.client.close()

    def anchor_audit(self) -> None:
        """Anchor this process's audit chain now, if it wrote anything (at exit)."""
        if "audit" in self.__dict__:
            self.audit.close()

    @cached_property
    def changes(self) -> Changes:
        """The patient's change sequence, shared by every service that writes what the app syncs."""
        return Changes(self.stores, self.clock, settle_after=self.settings.sync_settle)

    @cached_property
    def health(self) -> Health:
        return Health(self.stores, self.settings.mongodb_uri)

    @cached_property
    def heartbeats(self) -> Heartbeats:
        return Heartbeats(self.stores.worker_heartbeats, self.settings.lease_ttl, self.clock)

    @cached_property
    def tokens(self) -> TokenService:
        return TokenService(self.settings, self.stores.token_families, self.stores.users, self.stores.push_tokens,
                            self.clock)

    @cached_property
    def accounts(self) -> Accounts:
        return Accounts(self.settings, self.stores, self.tokens, self.clock, mailer=self.mailer)

    @cached_property
    def lifecycle(self) -> AccountLifecycle:
        return AccountLifecycle(self.settings, self.stores, self.accounts, self.tokens, self.clock,
                                changes=self.changes, sessions=self.sessions)

    @cached_property
    def rights(self) -> PatientRights:
        return PatientRights(self.settings, self.stores, self.care, self.clock)

    @cached_property
    def access(self) -> AccessControl:
        return AccessControl(self.stores)

    @cached_property
    def audit(self) -> AuditTrail:
        s = self.settings
        return AuditTrail(self.stores.audit_events, self.clock, key=s.audit_key,
                          anchors=AnchorSink(s.audit_anchor_file), anchor_every=s.audit_anchor_interval)

    @cached_property
    def idempotency(self) -> IdempotencyClaims:
        return IdempotencyClaims(self.settings, self.stores)

    @cached_property
    def profiles(self) -> Profiles:
        return Profiles(self.stores, self.reminders, self.clock, touched=self.touched_days)

    @cached_property
    def care(self) -> Care:
        return Care(self.settings, self.stores, self.accounts, self.profiles, self.clock)

    @cached_property
    def gateways(self) -> Gateways:
        return Gateways(self.settings, self.stores, self.tokens, self.profiles, self.clock, telemetry=self.telemetry,
                        sessions=self.sessions)

    @cached_property
    def touched_days(self) -> TouchedDays:
        return TouchedDays(self.stores, self.clock)

    @cached_property
    def ingestion(self) -> Ingestion:
        return Ingestion(self.settings, self.stores, self.clock, telemetry=self.telemetry, changes=self.changes,
                         touched=self.touched_days, on_events_changed=self.alerts.events_changed)

    @cached_property
    def sessions(self) -> TensSessions:
        return TensSessions(self.stores, self.changes, self.clock, touched=self.touched_days,
                            on_events_changed=self.alerts.events_changed)

    @cached_property
    def diary(self) -> Diary:
        return Diary(self.stores, self.changes, self.clock, touched=self.touched_days)

    @cached_property
    def reminders(self) -> ReminderService:
        return ReminderService(self.stores, self.clock, changes=self.changes, touched=self.touched_days,
                               on_outcome=self.alerts.outcome_recorded)

    @cached_property
    def plans(self) -> Plans:
        return Plans(self.stores, self.changes, self.clock, touched=self.touched_days)

    @cached_property
    def library(self) -> Library:
        return Library(self.stores, self.changes, self.clock, touched=self.touched_days)

    @cached_property
    def progress(self) -> Progress:
        return Progress(self.stores, self.reminders, self.clock)

    @cached_property
    def adherence(self) -> Adherence:
        return Adherence(self.stores, self.clock)

    @cached_property
    def adherence_job(self) -> AdherenceJob:
        return AdherenceJob(self.stores, self.alerts, self.adherence, self.clock)

    @cached_property
    def adherence_upgrade(self) -> AdherenceUpgrade:
        return AdherenceUpgrade(self.stores, self.settings.clinical_retention, self.clock)

    @cached_property
    def panel_rows(self) -> PanelReadModel:
        return PanelReadModel(self.stores, self.clock, PanelPages(self.settings.panel_page_cache))

    @cached_property
    def review(self) -> Review:
        return Review(self.stores, self.clock, self.panel_rows)

    @cached_property
    def alerts(self) -> AlertService:
        return AlertService(self.settings, self.stores, self.clock)

    @cached_property
    def notifications(self) -> Notifications:
        return Notifications(self.stores)

    @cached_property
    def reminder_dispatch(self) -> ReminderDispatch:
        return ReminderDispatch(self.settings, self.stores, self.clock, changes=self.changes)

    @cached_property
    def push(self) -> PushDelivery:
        return PushDelivery(self.settings, self.stores, self.sender, clock=self.clock, telemetry=self.telemetry)

    def leader_lease(self, holder: str) -> LeaderLease:
        """This worker's hold on the scheduler's leader lease."""
        return LeaderLease(self.stores.leases, holder, self.settings.lease_ttl, self.stores.job_marks)

    @cached_property
    def housekeeping(self) -> Housekeeping:
        return Housekeeping(self.stores, self.heartbeats, self.clock, sync_window=self.settings.sync_window,
                            changes=self.changes, audit=self.audit, audit_retention=self.settings.audit_retention,
                            longest_session=max(self.settings.session_max, self.settings.staff_session_max))
