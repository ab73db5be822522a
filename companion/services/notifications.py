"""A person's phones and what was pushed to them: FCM tokens per app install, receipts, and the history of
notifications about a patient (what each was about, since a push carries only an opaque id).

Consent holds here as at sending (:class:`DeliveryConsent`): a caregiver whose access ended (the patient
revoked it or closed the account, or the caregiver left), or was narrowed so that it no longer covers an alert's
kind, no longer sees those notifications in their list nor can post receipts for them."""

from __future__ import annotations

from datetime import datetime

from companion.clock import Clock, now
from companion.domain.access import (
    Actor,
    Grant,
    Relationship,
    Role,
    delivery_refusal,
    notifications_visible_to,
    visible_alert_kinds,
)
from companion.domain.errors import NotFound, Unauthorized
from companion.domain.notifications import alert_of, snooze_key
from companion.domain.people import Account
from companion.store.stores import Stores


def describe_source(source_key: str) -> tuple[str, str | None]:
    """What a notification is about, from its source key: (``about``, the id the app can fetch)."""
    kind, _, rest = source_key.partition(":")
    if kind == "reminder":
        return "reminder_occurrence", rest.split(":repeat:")[0].split(":snooze:")[0].removesuffix(":resend")
    if kind == "alert":
        return "alert", alert_of(source_key)
    if kind == "invitation":
        return "care_team_invitation", rest
    if kind == "enrolment":
        return "care_team", rest.split(":")[0]
    if kind == "caregiver-invitation":
        return "caregiver_invitation", rest
    return "missed_summary", None


HistoryPlace = tuple[datetime, str]  # where a page of a notification list ended: the (created_at, _id) of its last


def _page(read: list[dict], limit: int) -> tuple[list[dict], HistoryPlace | None]:
    """The first ``limit`` notifications of ``read`` (one more than a page, if there are) and, if more follow, the
    place of the last of them. The place is that of the last read, not of the last shown: one a caregiver may no
    longer see is still passed, so a page of such never ends a list that goes on."""
    if len(read) <= limit:
        return read, None
    page = read[:limit]
    return page, (page[-1]["created_at"], page[-1]["_id"])


def _described(items: list[dict]) -> list[dict]:
    for item in items:
        item["about"], item["about_id"] = describe_source(item["source_key"])
    return items


class DeliveryConsent:
    """Whether each notification may still go to its recipient, decided afresh at the moment of sending
    (companion.domain.access.delivery_refusal), from the accounts, caregiver links and alerts as they are now."""

    def __init__(self, stores: Stores, clock: Clock = now):
        self.users = stores.users
        self.clock = clock
        self.links = stores.care_links
        self.alerts = stores.alerts
        self.occurrences = stores.occurrences

    def refusals(self, docs: list[dict], people: dict[str, Account] | None = None) -> dict[str, str]:
        """For each notification that must not go out, why (by notification id). ``people``: the accounts of
        the notifications' recipients and patients when the caller has just read them (else read here)."""
        if not docs:
            return {}
        if people is None:
            people = self.people(docs)
        to_caregivers = [d for d in docs if d["recipient_user_id"] != d["patient_id"]]
        links = self.links.active_pairs({(d["patient_id"], d["recipient_user_id"]) for d in to_caregivers})
        share_kinds = self._share_kinds(to_caregivers)
        resolved, acknowledged = self._about_settled_alerts(docs)
        settled, snoozed = self._about_held_reminders(docs)
        refused = {}
        for doc in docs:
            recipient, patient = people.get(doc["recipient_user_id"]), people.get(doc["patient_id"])
            link = links.get((doc["patient_id"], doc["recipient_user_id"]))
            reason = delivery_refusal(
                recipient_active=bool(recipient and recipient.active), patient_active=bool(patient and patient.active),
                to_patient=doc["recipient_user_id"] == doc["patient_id"],
                caregiver=link.permissions if link else None, share_kind=share_kinds.get(doc["_id"]),
                alert_resolved=doc["_id"] in resolved, alert_acknowledged=doc["_id"] in acknowledged,
                reminder_settled=settled.get(doc["_id"]), reminder_snoozed=doc["_id"] in snoozed)
            if reason is not None:
                refused[doc["_id"]] = reason
        return refused

    def unconsented(self, docs: list[dict]) -> set[str]:
        """The caregivers' notifications whose patient no longer shares them with the caregiver (no active link,
        or one that does not cover the alert's kind), judged on consent alone: whatever the accounts' state
        (a closed patient's links are revoked)."""
        to_caregivers = [d for d in docs if d["recipient_user_id"] != d["patient_id"]]
        if not to_caregivers:
            return set()
        links = self.links.active_pairs({(d["patient_id"], d["recipient_user_id"]) for d in to_caregivers})
        share_kinds = self._share_kinds(to_caregivers)
        return {doc["_id"] for doc in to_caregivers if delivery_refusal(
            recipient_active=True, patient_active=True, to_patient=False,
            caregiver=links[key].permissions if (key := (doc["patient_id"], doc["recipient_user_id"])) in links
            else None, share_kind=share_kinds.get(doc["_id"])) is not None}

    def people(self, docs: list[dict]) -> dict[str, Account]:
        """The accounts of the notifications' recipients and patients, by id (one read)."""
        return {a.id: a for a in self.users.by_ids({d["recipient_user_id"] for d in docs}
                                                   | {d["patient_id"] for d in docs})}

    def _about_settled_alerts(self, docs: list[dict]) -> tuple[set[str], set[str]]:
        """The notifications about an alert that is resolved now, and those about one the care team has
        acknowledged (by notification id; one read): resolving or acknowledging withdraws them, but a crash
        between the two writes leaves them queued, or a sender had claimed them just before, and this is the check
        that still stops them."""
        about = {d["_id"]: alert_id for d in docs if (alert_id := alert_of(d["source_key"])) is not None}
        if not about:
            return set(), set()
        resolved, acknowledged = self.alerts.settled_among(set(about.values()))
        return ({nid for nid, alert_id in about.items() if alert_id in resolved},
                {nid for nid, alert_id in about.items() if alert_id in acknowledged})

    def _about_held_reminders(self, docs: list[dict]) -> tuple[dict[str, str], set[str]]:
        """The reminder pushes whose occurrence (with the rest of its push group) the patient has answered, or
        that was called off, since they were queued: {notification id: the occurrence's status}; and those
        planned before a snooze whose time has not come (all but the push the snooze asked for). Answering or
        snoozing withdraws them, but one claimed by a sender just before is already past that, and this check
        stops it."""
        about = {d["_id"]: d["source_key"].split(":")[1] for d in docs if d["source_key"].startswith("reminder:")}
        if not about:
            return {}, set()
        # A snooze's push is its slot's alone; the others are its push group's (a DST gap: held once all are).
        own = {d["_id"] for d in docs if d["_id"] in about and ":snooze:" in d["source_key"]}
        at = self.clock()
        held = self.occurrences.held_pushes({about[nid] for nid in about if nid not in own}, at)
        held_alone = self.occurrences.held_alone({about[nid] for nid in own}, at) if own else {}
        settled, snoozed = {}, set()
        for doc in docs:
            occurrence = (held_alone if doc["_id"] in own else held).get(about.get(doc["_id"], ""))
            if occurrence is None:
                continue
            if occurrence["status"] != "pending":
                settled[doc["_id"]] = occurrence["status"]
            elif doc["source_key"] != snooze_key(occurrence):
                snoozed.add(doc["_id"])
        return settled, snoozed

    def _share_kinds(self, docs: list[dict]) -> dict[str, str | None]:
        """The consent kind each caregiver notification needs: recorded on it, or (for one queued before it was
        recorded) its alert's."""
        kinds = {d["_id"]: d.get("share_kind") for d in docs}
        missing = {d["_id"]: alert_id for d in docs
                   if not d.get("share_kind") and (alert_id := alert_of(d["source_key"])) is not None}
        if missing:
            of_alert = self.alerts.share_kinds_of(set(missing.values()))
            kinds.update({nid: of_alert.get(alert_id) for nid, alert_id in missing.items()})
        return kinds


class Notifications:
    def __init__(self, stores: Stores):
        self.tokens = stores.push_tokens
        self.users = stores.users
        self.outbox = stores.outbox
        self.links = stores.care_links
        self.consent = DeliveryConsent(stores)

    def _still_consented(self, actor: Actor, items: list[dict]) -> list[dict]:
        """Those of a caregiver's notifications whose patient still shares them with the caregiver."""
        if actor.role is not Role.CAREGIVER:
            return items
        return self._shared_with_caregiver(items)

    def _shared_with_caregiver(self, items: list[dict]) -> list[dict]:
        # The lists read only what is shared (by the consent kind recorded on each); this also judges those
        # queued before the kind was recorded, by their alert's kind.
        hidden = self.consent.unconsented(items)
        return [item for item in items if item["_id"] not in hidden]

    def phones(self, user_id: str) -> list[dict]:
        """The person's registered phones (never the tokens themselves), by install id."""
        return sorted(self.tokens.for_users([user_id]).get(user_id, []), key=lambda p: p["install_id"])

    def register_phone(self, user_id: str, install_id: str, token: str, platform: str, address: str,
                       locale: str | None = None, *, session: str | None = None,
                       session_started_at: datetime | None = None) -> dict:
        """Register or refresh one install's token (the app does so at least monthly), with the phone's
        language, which notifications use unless the account chose one, under the API session ``session``
        started at ``session_started_at`` (the phone is forgotten when it ends).

        Unauthorized if the session ended meanwhile: the request's check of the session came before the
        registration, and a sign-out, a password change or a deactivation between the two forgot the session's
        phones before this one was written, so it is taken back here (every ending marks the account before
        forgetting the phones, so one of the two sees the other)."""
        phone = self.tokens.register(user_id, install_id, token, platform, address, locale, session)
        if session is not None:
            user = self.users.by_id(user_id)
            if user is None or not user.accepts_session(session, session_started_at):
                self.tokens.unregister(user_id, install_id, session=session)
                raise Unauthorized("invalid or expired token")
        return phone

    def forget_phone(self, user_id: str, install_id: str) -> None:
        """Forget one install's token (signing out on that phone). An install with no token registered is
        already forgotten: a retried sign-out succeeds as the first did."""
        self.tokens.unregister(user_id, install_id)

    def sent_to(self, actor: Actor, limit: int,
                after: HistoryPlace | None = None) -> tuple[list[dict], HistoryPlace | None]:
        """A page of the notifications sent to a person, newest first, with what each is about (a caregiver: only
        about patients who still share them, read as such so that ``limit`` of them come back while there are),
        after the (created_at, id) a previous page ended on; and the place the next page starts after (None: this
        was the last page)."""
        shared = None
        if actor.role is Role.CAREGIVER:
            shared = {link.patient_id: link.permissions.alerts for link in self.links.for_caregiver(actor.id)}
        read, place = _page(self.outbox.for_recipient(actor.id, limit=limit + 1, shared=shared, after=after), limit)
        return _described(self._still_consented(actor, read)), place

    def patient_of(self, notification_id: str) -> str | None:
        """The patient a notification is about, whoever it was sent to (None for no such notification): whose
        data a receipt for it concerns, refused or not."""
        doc = self.outbox.get(notification_id)
        return doc["patient_id"] if doc else None

    def record_receipt(self, actor: Actor, notification_id: str, receipt: str) -> None:
        """The recipient's app got (``delivered``) or the person opened (``opened``) a notification (not a
        caregiver whose access to the patient has ended)."""
        doc = self.outbox.get(notification_id)
        if doc is None or doc["recipient_user_id"] != actor.id or not self._still_consented(actor, [doc]):
            raise NotFound("no such notification for you")
        if not self.outbox.record_receipt(notification_id, actor.id, receipt):
            raise NotFound("no such notification for you")

    def about_patient(self, grant: Grant, caller_id: str, *, since: datetime | None, until: datetime | None,
                      limit: int, after: HistoryPlace | None = None) -> tuple[list[dict], HistoryPlace | None]:
        """A page of the notifications sent about the patient, newest first (a caregiver sees only those sent to
        them, of the kinds the patient still shares with them), after the (created_at, id) a previous page ended
        on; and the place the next page starts after (None: this was the last page)."""
        items, place = _page(self.outbox.for_patient(grant.patient_id, since=since, until=until,
                                                     recipient_user_id=notifications_visible_to(grant, caller_id),
                                                     share_kinds=visible_alert_kinds(grant), limit=limit + 1,
                                                     after=after), limit)
        if grant.relationship is Relationship.CAREGIVER:
            items = self._shared_with_caregiver(items)
        return _described(items), place
