"""Turn var/bench/*.json (one file per benchmark, from one run) into bench/RESULTS.md."""

from __future__ import annotations

import argparse
import json

from bench.common import OUT, ROOT, machine

# Measured by hand on the same machine and seed with the job as it was before the one-pass rewrite
# (commit 0d5b5f8): (patients, job seconds, job / floor in that run). The 100-patient run stalled once.
NIGHTLY_BEFORE = ((200, 10.5, 4.04),)  # a 100-patient run (238.7 s) had an unexplained stall: left out


def _load(name: str) -> dict | None:
    path = OUT / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _missing(name: str, figures: dict | None) -> list[str]:
    if figures is None:
        return [f"*{name}: not run.*", ""]
    return [f"*Not available: {figures.get('reason', '?')}*", ""]


def ingestion(lines: list[str]) -> None:
    lines += ["## Ingestion: session records through the API vs raw insert_many", ""]
    figures = _load("ingestion")
    runs = [r for r in (figures or {}).get("runs", []) if r.get("available")]
    if not runs:
        lines += _missing("ingestion", (figures or {}).get("runs", [None])[0] if figures else None)
        return
    first = runs[0]
    lines += [f"{first['gateways']} gateways post batches of {first['batch']} concurrently to "
              "`POST /api/v1/gateway/session-records` (gunicorn, 2 workers × 4 gthreads); the floor is "
              f"{first['gateways']} threads doing `insert_many` of the same documents, {first['batch']} at a time, "
              "into a collection with the same indexes on the same server. Each size is cut into slices of whole "
              "batches and the two sides alternate slice by slice (API then raw, raw then API, ...), so that other "
              "work on the machine weighs on both alike; each side's time is the sum over its slices, and the "
              "spread of the per-slice ratios shows how steady the conditions were.", "",
              "| records | API records/s | raw insert_many records/s | **API / raw** | per-slice API / raw: "
              "min / median / max (slices) | API s | raw s | stored | 429/503 retries |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        lines.append(f"| {r['records']:,} | {r['api_records_per_s']:,} | {r['raw_records_per_s']:,} | "
                     f"**{r['ratio_api_to_raw']:.2f}** | {r['slice_ratio_min']:.2f} / {r['slice_ratio_median']:.2f} / "
                     f"{r['slice_ratio_max']:.2f} ({r['slices']}) | {r['api_seconds']} | {r['raw_seconds']} | "
                     f"{r['stored']:,} | {r['api_retries']} |")
    lines.append("")
    if len(runs) > 1:
        growth = runs[-1]["api_records_per_s"] / runs[0]["api_records_per_s"]
        raw_growth = runs[-1]["raw_records_per_s"] / runs[0]["raw_records_per_s"]
        lines += [f"Throughput from {runs[0]['records']:,} to {runs[-1]['records']:,} records: API × {growth:.2f}, "
                  f"raw × {raw_growth:.2f} (1.00 = flat).", ""]
    profile = _load("profile_ingestion")
    if profile:
        lines += [f"Where an API request spends its time (cProfile, {profile['records']:,} records posted "
                  f"in-process, {profile['seconds_in_process']} s; fractions overlap where calls nest):", "",
                  "| part | fraction of handler time |", "|---|---:|"]
        lines += [f"| {name} | {share:.0%} |" for name, share in profile["fraction_of_time"].items()]
        lines.append("")


# Before the read models (commit e04298f, same machine, 16 connections, 200 patients × 90 days), from the
# report of that run: (endpoint, req/s, p50 ms, p95 ms, req/s ratio to the bare Flask floor).
READS_BEFORE = (("bare Flask", 1470.6, 8.77, 24.65, 1.0), ("today", 32.7, 332.13, 797.04, 0.0222),
                ("panel (200 × 90)", 2.1, 6778.43, 10956.22, 0.0014))


def _case_line(case: dict, name: str, shortest: dict | None) -> str:
    r = case.get(name, {})
    label = f"{name} ({case['patients']} patients × {case['days']} days)"
    if not r.get("available"):
        return f"| {label} | not available: {r.get('reason', '?')} | | | | | | |"
    growth = ""
    if shortest is not None and shortest is not case and shortest.get(name, {}).get("available"):
        growth = f"{r['p95_ms'] / shortest[name]['p95_ms']:.2f}"
    turns = r.get("slice_rps_ratios") or []
    spread = f" ({min(turns):.2f}–{max(turns):.2f})" if len(turns) > 1 else ""
    return (f"| {label} | {r['ok_rps']} | {r['p50_ms']} | {r['p95_ms']} | {r['errors']} / {r['requests']} | "
            f"**{r['rps_ratio_to_floor']:.3f}**{spread} | {r['p95_ratio_to_floor']} | {growth} |")


def reads(lines: list[str]) -> None:
    lines += ["## API reads under concurrent load", ""]
    figures = _load("reads")
    if not figures or "cases" not in figures:
        lines += _missing("reads", None)
        return
    bare = figures["bare"]
    lines += [f"Closed-loop load from a separate process, {figures['concurrency']} connections for "
              f"{figures['seconds']} s each. Each case is a fresh database: one clinician whose team has N patients, "
              "each with D days of adherence snapshots and a pain rating every third day; the patient who opens "
              "'today' also has three TENS sessions a day over the D days. The panel is a page of "
              f"{figures['page']}. The **database floor** is a bare Flask endpoint on the same gunicorn setup doing "
              "one `find_one` by `_id` on the same server, measured in each case in turns with the endpoints "
              f"({figures.get('slices', 1)} turns, each endpoint and the floor once a turn, so that other work on "
              "the machine weighs on both alike; in brackets, the lowest and highest ratio of one turn); "
              f"the bare floor (no database) ran at {bare['ok_rps']} req/s, p50 {bare['p50_ms']} ms, "
              f"p95 {bare['p95_ms']} ms. *growth*: p95 against the same panel size with the shortest history. "
              "*panel*: the same page read again while the team's panel is unchanged (each web process keeps the "
              "pages it read, checked against the team's panel version on every read); *panel_unkept*: with "
              "`COMPANION_PANEL_PAGE_CACHE=0`, what each read costs after the team's panel changed.", "",
              "| endpoint | req/s answered 200 | p50 ms | p95 ms | errors / requests | **req/s ratio to the "
              "database floor** | p95 ratio to the floor | growth (p95) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    shortest: dict[int, dict] = {}
    for case in figures["cases"]:
        shortest.setdefault(case["patients"], case)
        floor = case["floor"]
        lines.append(f"| database floor ({case['patients']} × {case['days']}) | {floor['ok_rps']} | "
                     f"{floor['p50_ms']} | {floor['p95_ms']} | {floor['errors']} / {floor['requests']} | 1.000 | 1.00 | |")
        for name in ("today", "panel", "panel_unkept"):
            lines.append(_case_line(case, name, shortest[case["patients"]]))
    lines += ["", "Building the panel's read model for each case (what `companion migrate` does on a database "
              "from before it): " + ", ".join(f"{c['patients']} × {c['days']}: {c['rows']} rows in {c['rebuild_s']} s"
                                              for c in figures["cases"]) + ".", "",
              "Before the read models (same machine, 16 connections, 200 patients × 90 days; ratios to the *bare* "
              "floor, since there was no database floor then):", "",
              "| endpoint | req/s | p50 ms | p95 ms | req/s ratio to bare |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {n} | {rps} | {p50} | {p95} | {ratio} |" for n, rps, p50, p95, ratio in READS_BEFORE]
    lines.append("")
    profile = _load("profile_reads")
    if profile:
        lines += [f"Where one request spends its time (in-process, same data, {profile['repeat']} requests each, "
                  "database commands counted with a pymongo CommandListener; server s = time waiting for the "
                  "database):", "",
                  "| endpoint | s per request | commands per request | server s per request | costliest command "
                  "(server s per request) |", "|---|---:|---:|---:|---|"]
        for name in ("today", "panel"):
            p = profile[name]
            costliest, spent = next(iter(p["queries"].items()))
            lines.append(f"| {name} | {p['seconds_per_request']} | {p['commands_per_request']} | "
                         f"{p['server_s_per_request']} | `{costliest}` ({spent['server_s'] / profile['repeat']:.3f}) |")
        lines.append("")


def scheduler(lines: list[str]) -> None:
    lines += ["## Scheduler", ""]
    figures = _load("scheduler")
    if not figures:
        lines += _missing("scheduler", None)
        return
    for name, title in (("peak_minute", "Peak minute"), ("nightly_adherence", "Nightly adherence")):
        part = figures[name]
        if not part.get("available"):
            lines += [f"**{title}**: not available: {part.get('reason', '?')}", ""]
        elif "table" in part:
            lines += [f"**{title}**: {part['table']}", ""]
        elif "output" in part:
            lines += [f"**{title}** (output of its own bench):", "", "```", part["output"], "```", ""]
        else:
            nightly(lines, part["runs"])


def nightly(lines: list[str], runs: list[dict]) -> None:
    lines += ["**Nightly adherence** (`compute_adherence`, bench/nightly.py): every patient's last two local days "
              "recomputed and stored, then the low-adherence rule over 31 days of snapshots. Each patient has 90 "
              "days of snapshots, one plan, and 2-3 TENS sessions, practice and doses a day over the last 4 days "
              "(the only events the job reads; see the module docstring). The floor is a streamed find of every "
              "input collection, the same `_id $in` snapshot reads and insert_many of as many snapshots, same server, "
              "same run.", "",
              "| patients | job s | patients/s | snapshots written | alerts | floor s | **job / floor** | seed s |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        lines.append(f"| {r['patients']:,} | {r['job_s']} | {r['patients_per_s']:,} | {r['snapshots_written']:,} | "
                     f"{r['low_adherence_alerts']} | {r['floor_s']} | **{r['ratio_job_to_floor']:.2f}** | {r['seed_s']} |")
    lines.append("")
    if len(runs) > 1:
        first, last = runs[0], runs[-1]
        size = last["patients"] / first["patients"]
        lines += [f"From {first['patients']:,} to {last['patients']:,} patients (× {size:g}) the job takes "
                  f"× {last['job_s'] / first['job_s']:.1f} the time (× {size:g} = linear).", ""]
    if all("one_new_day_s" in r for r in runs):
        lines += ["**The hourly job after the first run** (issue 16: its cost follows the change). A day later every "
                  "patient's local day has rolled over once and each has one new session, its day and panel row "
                  "marked as ingestion marks them; the refresher's pass (every minute in the worker; the job runs at "
                  "minute 5) computes the marked rows and those due at local midnight, timed apart; then the job "
                  "(*one new day each*: the low-adherence rule reads the settled rows' kept days), then ten minutes "
                  "later with nothing new. Targets at 10,000 patients: < 30 s and < 5 s.", "",
                  "| patients | refresher pass s (rows) | one new day s | snapshots written | nothing new s | "
                  "next midnight, refresher by time alone s (rows) |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for r in runs:
            lines.append(f"| {r['patients']:,} | {r.get('refresher_s', '-')} ({r.get('refresher_rows', '-'):,}) | "
                         f"**{r['one_new_day_s']}** | {r['one_new_day_written']:,} | **{r['nothing_new_s']}** | "
                         f"{r.get('midnight_refresher_s', '-')} ({r.get('midnight_rows', '-'):,}) |")
        lines.append("")
    before = "; ".join(f"{p} patients {t} s ({r:.2f} × its floor)" for p, t, r in NIGHTLY_BEFORE)
    lines += ["Reading these figures: before the one-pass rewrite the job ran several queries per patient and day, "
              "each a scan of a whole collection on FerretDB (then patched for `_id` only; see the README), so its time "
              f"grew with patients × collection size (measured by hand, same machine and seed: {before}). Now each "
              "input collection is read once per run, the rule's older snapshots by computed `_id $in` (the most "
              "recent first, only until the rule is settled; on later runs from the settled panel rows instead), "
              "new days in one insert_many and recomputed ones by one replace on `_id` each (an unordered bulk of "
              "upserting replaces hangs FerretDB v1.24). The windowed session and practice queries are served by "
              "the `started_at` index (on FerretDB through the project's date-range patch), so they read the "
              "window's records, not the patients' whole history.", ""]


def gateway(lines: list[str]) -> None:
    lines += ["## Gateway: parse, buffer, 1,000,000-record backlog", ""]
    g = _load("gateway")
    if not g:
        lines += _missing("gateway", None)
        return
    if not g.get("available", True):
        lines += _missing("gateway", g)
        return
    lines += ["| figure | value | floor | ratio to floor |", "|---|---:|---:|---:|",
              f"| frames decoded + captured /s | {g['parse_records_per_s']:,} | {g['parse_floor_unpack_per_s']:,} "
              f"(struct unpack only) | {g['parse_ratio_to_floor']} |",
              f"| records buffered /s, empty buffer | {g['buffer_records_per_s_empty']:,} | "
              f"{g['buffer_floor_executemany_per_s']:,} (executemany, same pragmas) | {g['buffer_ratio_to_floor_empty']} |",
              f"| records buffered /s, on top of the backlog | {g['buffer_records_per_s_at_backlog']:,} | "
              f"{g['buffer_floor_executemany_per_s']:,} | {g['buffer_ratio_to_floor_at_backlog']} |",
              f"| filling the backlog (capture + store) /s | {g['fill_records_per_s']:,} | | |", "",
              f"Backlog: {g['backlog_records']:,} records, {g['backlog_file_mib']} MiB of SQLite. "
              f"RSS {g['rss_mib_before_backlog']} MiB before, {g['rss_mib_with_backlog']} MiB with the backlog "
              f"(max {g['max_rss_mib']} MiB); tracemalloc peak of storing one run of 50 on top of the backlog "
              f"{g['store_run_at_backlog_tracemalloc_peak_mib']} MiB. "
              f"Reading one upload batch ({g['read_upload_batch_items']} records) from the full backlog: "
              f"{g['read_upload_batch_ms']} ms, {g['read_upload_batch_tracemalloc_peak_mib']} MiB.", ""]


def flood(lines: list[str]) -> None:
    lines += ["## Flood: many gateways reconnecting at once", ""]
    f = _load("flood")
    if not f:
        lines += _missing("flood", None)
        return
    lines += [f"`python -m bench.flood`: {f['gateways']} gateways, each paired to its own patient with one unit and a "
              f"day's backlog of {f['records_per_gateway']} records, all start uploading at the same instant (threads "
              "of one separate process, batches of 50, waiting on 503/429 as device_gateway's uploader does: "
              "full-jitter backoff, never less than Retry-After), then keep replaying their backlog until the "
              f"window ends. One patient's \"today\" (90 days of history) under {f['today_clients']} closed-loop "
              f"clients for {f['seconds']:g} s, without the flood and during it, same server (gunicorn 2 workers × "
              "4 threads), same run, the flood measured from the moment every gateway is ready to send. *budget* is "
              "COMPANION_GATEWAY_UPLOAD_CONCURRENCY, one for the web server, both its processes together (8: every "
              "thread, i.e. no budget; the default is 1).", "",
              "| budget | today p95 quiet ms | today p95 during the flood ms | **p95 flood / quiet** | p50 flood / quiet "
              "| today errors | uploads 200 / 503 | all delivered s | stored / expected | every record once |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for run in f["runs"]:
        statuses = run.get("statuses", {})
        lines.append(f"| {run['budget']} | {run['today_quiet']['p95_ms']:,.0f} | {run['today_flood']['p95_ms']:,.0f} "
                     f"| **{run['p95_ratio_flood_to_quiet']}** | {run['p50_ratio_flood_to_quiet']} "
                     f"| {run['today_flood'].get('errors', 0)} | {statuses.get('200', 0)} / {statuses.get('503', 0)} "
                     f"| {run['all_delivered_s']} | {run['stored']:,} / {run['expected']:,} "
                     f"| {'yes' if run['every_record_once'] else '**no**'} |")
    lines.append("")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--elapsed-s", type=int, default=0)
    parser.add_argument("--command", default="scripts/bench.sh")
    args = parser.parse_args(argv)
    m = machine()
    lines = ["# Benchmark results", "",
             f"Produced by `{args.command}` in one run ({args.elapsed_s // 60} min {args.elapsed_s % 60} s). "
             "Every figure is given with a floor measured in the same run on the same machine, and as a ratio to it.",
             "", f"Machine: {m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB RAM, Python {m['python']}, "
             f"Linux {m['kernel']}, database: {m['database']}, FerretDB {m['ferretdb']}. "
             "Client, server and database share the same cores: figures are for the whole system on one box.", ""]
    ingestion(lines)
    reads(lines)
    scheduler(lines)
    flood(lines)
    gateway(lines)
    notes = ROOT / "bench" / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    (ROOT / "bench" / "RESULTS.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
