"""Examples of the main requests and answers of a patient's day, shown in the OpenAPI document (and sent by
schemathesis's explicit phase, so each request example must pass its own schema)."""

from __future__ import annotations

LOGIN = {"email": "ada@example.org", "password": "correct horse battery staple",
         "device_key": "dk1.6b0d14e67f9b2cc8f2277746.1780214400000.Xx3...."}
TOKENS = {"access_token": "eyJhbGciOiJIUzI1NiIs...", "refresh_token": "q3v4Yk...", "token_type": "Bearer",
          "expires_in": 900, "device_key": "dk1.6b0d14e67f9b2cc8f2277746.1780214400000.Qm7...."}
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
TENS_SESSION = {"record_id": "CTU-4821:311", "device_serial": "CTU-4821", "device_seq": 311,
                "started_at": "2026-11-30T07:42:10+00:00", "started_earliest": "2026-11-30T07:42:10+00:00",
                "started_latest": "2026-11-30T07:42:10+00:00", "time_quality": "exact", "time_basis": "offset_known",
                "local_date": "2026-11-30", "device_started_at": "2026-11-30T07:42:13+00:00",
                "reported_started_at": "2026-11-30T07:42:10+00:00", "unit_offset_s": 3.0, "clock_offset_s": 3.0,
                "clock_status": "ok", "gateway_received_at": "2026-11-30T08:25:02+00:00",
                "server_received_at": "2026-11-30T08:25:03+00:00", "flags": [], "held": False, "counts": True,
                "counted_minutes": 30.0, "resolution": None, "duration_s": 1800, "programme": 2,
                "frequency_hz": 80, "pulse_width_us": 200, "intensity_mean_ma": 18.5, "intensity_peak_ma": 22.0,
                "end_reason": "completed", "battery_pct": 71}
TENS_SESSIONS = {"items": [TENS_SESSION], "next": None}
