"""Examples of the main requests and answers of a patient's day, shown in the OpenAPI document (and sent by
schemathesis's explicit phase, so each request example must pass its own schema)."""

from __future__ import annotations

LOGIN = {"email": "ada@example.org", "password": "correct horse battery staple"}
TOKENS = {"access_token": "eyJhbGciOiJIUzI1NiIs...", "refresh_token": "q3v4Yk...", "token_type": "Bearer",
          "expires_in": 900}
PAIN_ENTRY_INPUT = {"client_entry_id": "3f2b1c9e-7d4a-4e8b-9c1d-2a6f5e8b0c47", "recorded_at": "2026-11-30T08:15:00+00:00",
                    "nrs": 6, "context": {"location": "lower back", "activity": "after the school run", "mood": 4}}
PAIN_ENTRY = {"id": "6b0d14e67f9b2cc8f2277746", "client_entry_id": "3f2b1c9e-7d4a-4e8b-9c1d-2a6f5e8b0c47",
              "recorded_at": "2026-11-30T08:15:00+00:00", "nrs": 6, "context": None, "bpi": None,
              "session_record_id": None, "phase": None, "server_received_at": "2026-11-30T08:15:02+00:00",
              "updated_at": "2026-11-30T08:15:02+00:00", "deleted": False, "version": 1}
PRACTICE_START = {"item_slug": "three-breath-reset"}
REMINDER_INPUT = {"kind": "tens", "title": "Morning TENS session", "completion_window_min": 60,
                  "schedule": {"type": "weekly", "times": ["08:00"], "weekdays": [1, 2, 3, 4, 5]},
                  "repeat": {"count": 2, "every_min": 15}}
PUSH_TOKEN = {"token": "fcm-registration-token-from-the-phone", "platform": "android"}
TODAY = {"date": "2026-11-30", "zone": "Europe/London",
         "reminders": {"due": 3, "pending": 1, "done": 2, "skipped": 0, "missed": 0, "items": []},
         "tens": {"state": "progress", "fraction": 0.5, "minutes": 30.0, "minutes_target": 60.0, "done": 1,
                  "planned": 2, "counts_towards_adherence": True, "sessions": 1},
         "mindfulness": {"state": "progress", "fraction": 1.0, "minutes": 10.0, "minutes_target": 10.0, "done": 1,
                         "planned": 1, "counts_towards_adherence": True,
                         "goal": {"minutes_per_day": 10, "sessions_per_week": None}, "sessions_this_week": 4},
         "medication": {"state": "no_tasks", "fraction": None, "minutes": 0.0, "minutes_target": 0.0, "done": 0,
                        "planned": 0, "counts_towards_adherence": False},
         "pain": {"entries": 1, "latest_nrs": 6}}
