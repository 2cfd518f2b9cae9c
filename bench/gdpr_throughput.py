"""GDPR purge throughput (issue 6, item 6): users erased per second by the gdpr_purge job,
and a pg_dump of the whole database still free of their personal data afterwards.

Users with bookings, payments, chats, behaviour and audit rows (in id order) get unique
Arabic names, phones and emails wherever the schema keeps personal data: the generator has
160 distinct names shared by thousands of users, so only unique values make the dump check
mean anything. Each run erases its own fresh set, soft-deleted before every soft-deleted
user of the generator, so the job (oldest first, max_users_per_run = the set size) takes
exactly that set. The seed-style alternative runs the same gdpr_erase_user() for a whole
set in ONE transaction. A stream of audited writes shows what each does to other writers
(an erasure holds the audit chain's lock from its first audited write to its commit); a few
control users, given values the same way and never erased, prove that the scan sees them.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from bench.common import (
    BenchEnv,
    Goal,
    Section,
    latency_stream,
    median,
    ms,
    percentile,
    ratio,
    rotations,
    run_job,
    timed,
)
from daemon.errors import JobFailed
from daemon.jobs.audit_verify import JOB as AUDIT_VERIFY
from daemon.jobs.gdpr_purge import JOB as GDPR_PURGE

KEY = "gdpr"
TITLE = "GDPR purge: users erased per second, pg_dump still clean"

METHODS = ("gdpr_purge job (one transaction per user)",
           "seed-style: gdpr_erase_user() for all in one transaction")
GRACE_DAYS = 30  # the job's default
SOFT_DELETED_DAYS = 160  # the generator's soft-deleted users are 31-151 days old
CONTROL_USERS = 10
STREAM_RATE = 50.0
CHUNK = 8 << 20
DOMAIN = "gdpr-bench.example"
PHONE_PREFIX = "+97150"  # the generator's phones are +9665...
# Unique names "first بن/بنت father بن grandfather family": 24 * 20 * 20 * 20 combinations.
# No first name ends another and no family name starts another, so no name contains another.
MEN = ["محمد", "أحمد", "خالد", "عمر", "يوسف", "عبدالله", "حسن", "علي", "سلمان", "فيصل", "طارق",
       "ماجد"]
WOMEN = ["فاطمة", "عائشة", "سارة", "ليلى", "مريم", "نورة", "هدى", "رنا", "سلمى", "دانة", "غادة",
         "جود"]
FATHERS = ["عبدالرحمن", "إبراهيم", "سعد", "ناصر", "فهد", "سلطان", "راشد", "حمد", "منصور", "بدر",
           "زياد", "صالح", "عادل", "جمال", "كريم", "وليد", "هشام", "مازن", "ياسر", "نبيل"]
FAMILIES = ["العتيبي", "المصري", "الحربي", "الشمري", "القحطاني", "الزهراني", "الغامدي",
            "الدوسري", "المطيري", "السبيعي", "العنزي", "الشهري", "البلوي", "الجهني", "الرشيدي",
            "الخالدي", "الهاشمي", "التميمي", "الكعبي", "النعيمي"]
FIRSTS = MEN + WOMEN
COMBINATIONS = len(FIRSTS) * len(FATHERS) ** 2 * len(FAMILIES)

CANDIDATES = """
SELECT u.id FROM users u
 WHERE u.deleted_at IS NULL AND u.email NOT LIKE %(domain)s
   AND u.created_at < now() - make_interval(days => %(days)s)
   AND EXISTS (SELECT FROM bookings b WHERE b.user_id = u.id)
   AND EXISTS (SELECT FROM crypto_payments p WHERE p.user_id = u.id)
   AND EXISTS (SELECT FROM chat_sessions s WHERE s.user_id = u.id)
   AND EXISTS (SELECT FROM user_behavior_log l WHERE l.user_id = u.id)
   AND EXISTS (SELECT FROM audit_log a WHERE a.user_id = u.id)
   AND NOT EXISTS (SELECT FROM gdpr_erasures e WHERE e.user_id = u.id)
 ORDER BY u.id LIMIT %(limit)s"""
# Where personal data lives: (table, column naming the user, SET clause over x and people p).
PERSONALISE = [
    ("users", "id", "full_name = p.name, phone = p.phone, email = p.email"),
    ("bookings", "user_id", "metadata = coalesce(x.metadata, '{}') || jsonb_build_object("
     "'contact', jsonb_build_object('name', p.name, 'phone', p.phone, 'email', p.email))"),
    ("booking_items", "user_id", "description = concat_ws(' - ', x.description, p.name)"),
    ("flight_bookings", "user_id", "passenger_details = coalesce(x.passenger_details, '{}')"
     " || jsonb_build_object('passenger', p.name, 'phone', p.phone)"),
    ("hotel_bookings", "user_id", "details = coalesce(x.details, '{}')"
     " || jsonb_build_object('guest', p.name, 'email', p.email)"),
    ("crypto_payments", "user_id",
     "metadata = coalesce(x.metadata, '{}') || jsonb_build_object('payer_email', p.email)"),
    ("hotel_ratings", "user_id", "review_text = concat_ws(' - ', x.review_text, p.name)"),
    ("trips", "user_id", "title = x.title || ' - ' || p.name"),
]
CHAT = ("INSERT INTO chat_messages (session_id, user_id, role, content)"
        " SELECT DISTINCT ON (s.user_id) s.id, s.user_id, 'user', 'اسمي ' || p.name"
        " || '، جوالي ' || p.phone || '، بريدي ' || p.email"
        " FROM chat_sessions s JOIN bench_people p ON p.id = s.user_id ORDER BY s.user_id, s.id")
STREAM = "UPDATE crypto_payments SET confirmations = confirmations + 1 WHERE id = %s"
ERASE_ALL = ("SELECT gdpr_erase_user(u, make_interval(years => 7),"
             " now() - make_interval(days => %s)) FROM unnest(%s::uuid[]) u")
# The job's transactions start one after another: the gap between two users' erasure times
# (now() = transaction start) bounds the first one's transaction from above.
GAPS = """
SELECT extract(epoch FROM max(gap)), extract(epoch FROM percentile_cont(0.5)
       WITHIN GROUP (ORDER BY gap)) FROM (
    SELECT lead(first_erased_at) OVER (ORDER BY first_erased_at) - first_erased_at AS gap
      FROM gdpr_erasures WHERE user_id = ANY (%s)) g"""
REDACTED = """
SELECT count(*), count(*) FILTER (WHERE a.payload_bytes IS NULL AND a.redacted_at IS NOT NULL),
       count(*) FILTER (WHERE a.prev_hash = coalesce(p.row_hash, audit_zero_hash())
           AND audit_row_hash_v2(a.prev_hash, a.chain_position, a.occurred_at, a.table_name,
                                 a.operation, a.actor, a.row_id, a.user_id, a.payload_hash)
               = a.row_hash)
  FROM audit_log a LEFT JOIN audit_log p ON p.chain_position = a.chain_position - 1
 WHERE a.user_id = ANY (%s)"""


@dataclass(frozen=True)
class Person:
    id: uuid.UUID
    name: str
    phone: str
    email: str


def person(user_id: uuid.UUID, k: int) -> Person:
    """The k-th unique set of values (k below COMBINATIONS)."""
    first, rest = FIRSTS[k % len(FIRSTS)], k // len(FIRSTS)
    father, rest = FATHERS[rest % len(FATHERS)], rest // len(FATHERS)
    grandfather, rest = FATHERS[rest % len(FATHERS)], rest // len(FATHERS)
    family = FAMILIES[rest % len(FAMILIES)]
    link = "بن" if first in MEN else "بنت"
    return Person(user_id, f"{first} {link} {father} بن {grandfather} {family}",
                  f"{PHONE_PREFIX}{(k * 7919 + 1_234_567) % 10**7:07d}",
                  f"traveller{k:06d}@{DOMAIN}")


@dataclass
class Outcome:
    """One method over all its rounds."""

    seconds: list[float] = field(default_factory=list)
    longest: list[float] = field(default_factory=list)  # longest transaction per round
    typical: list[float] = field(default_factory=list)  # median transaction per round
    waits: list[list[float]] = field(default_factory=list)
    deleted: Counter[str] = field(default_factory=Counter)
    scrubbed: Counter[str] = field(default_factory=Counter)
    redacted: int = 0

    def count(self, deleted: dict[str, int], scrubbed: dict[str, int], redacted: int) -> None:
        self.deleted.update(deleted)
        self.scrubbed.update(scrubbed)
        self.redacted += redacted

    def rows(self) -> str:
        def fmt(counts: Counter[str]) -> str:
            return ", ".join(f"{table} {n:,}" for table, n in sorted(counts.items())) or "none"
        return (f"deleted {fmt(self.deleted)}; scrubbed {fmt(self.scrubbed)}; audit payloads "
                f"redacted {self.redacted:,}")


def run(env: BenchEnv) -> Section:
    section = Section(KEY, TITLE, ["method", "users per run", "time", "users/s",
                                   "longest transaction", "audited write: p99 / max wait",
                                   "users/s vs the job"])
    rounds = env.repeat
    wanted = 200 if env.small else 1000
    with psycopg.connect(env.url, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute(CANDIDATES, {
            "domain": "%@" + DOMAIN, "days": SOFT_DELETED_DAYS,
            "limit": 2 * rounds * wanted + CONTROL_USERS}).fetchall()]
        size = min(wanted, (len(ids) - CONTROL_USERS) // (2 * rounds))
        if size < 10:
            raise RuntimeError(f"only {len(ids)} users qualify; the dataset is too small")
        people = _personalise(conn, ids[:2 * rounds * size + CONTROL_USERS])
        row = conn.execute("SELECT c.id FROM crypto_payments c JOIN users u ON u.id = c.user_id"
                           " WHERE u.deleted_at IS NULL AND u.id <> ALL (%s) ORDER BY c.id"
                           " LIMIT 1", ([p.id for p in people],)).fetchone()
        assert row is not None, "no payment of an active user for the audited-write stream"
        payment = row[0]
    control, purged = people[-CONTROL_USERS:], people[:-CONTROL_USERS]
    sets = iter([purged[i:i + size] for i in range(0, len(purged), size)])
    env.log(f"gdpr: {len(people):,} users personalised; {rounds} round(s) of {size} users "
            "per method")

    outcomes = {name: Outcome() for name in METHODS}
    for _, name in rotations(METHODS, rounds):
        batch = [p.id for p in next(sets)]
        with psycopg.connect(env.url, autocommit=True) as conn:
            conn.execute("UPDATE users SET deleted_at = now() - make_interval(days => %s)"
                         " WHERE id = ANY (%s)", (SOFT_DELETED_DAYS, batch))
        with latency_stream(env.url, STREAM, lambda: (payment,), rate=STREAM_RATE) as waits:
            _erase(env, name == METHODS[0], batch, outcomes[name])
        outcomes[name].waits.append(list(waits))

    audit_goal, audit_note = _audit(env, [p.id for p in purged])
    dump = _scan_dump(env, purged, control)
    job_rate = size / median(outcomes[METHODS[0]].seconds)
    for name in METHODS:
        out = outcomes[name]
        rate = size / median(out.seconds)
        p99 = median([percentile(w, 99) for w in out.waits])
        worst = max(max(w, default=float("nan")) for w in out.waits)
        bound = "≤ " if name == METHODS[0] else ""
        section.rows.append([name, f"{size:,}", f"{median(out.seconds):.2f} s", f"{rate:,.1f}",
                             bound + ms(max(out.longest)), f"{ms(p99)} / {ms(worst)}",
                             ratio(rate, job_rate)])
    section.goals += [audit_goal, dump.goal()]
    job, alone = outcomes[METHODS[0]], outcomes[METHODS[1]]
    section.notes += [
        f"How: {rounds} round(s), methods in rotating order, each run on its own {size} users "
        "(in id order among users with bookings, crypto payments, chat sessions, behaviour "
        f"and audit rows), soft-deleted {SOFT_DELETED_DAYS} days ago just before the run. "
        "Time: median wall clock over rounds; the job's includes its due-users query and its "
        "analytics-retention pass (its rows, if any, are below as \"(analytics retention)\"). "
        "Longest "
        "transaction and max wait: worst round." + (
            " The one transaction is faster per user: one commit instead of one per user, "
            "and the stream below waits instead of sharing the CPU." if size / median(
                alone.seconds) > 1.05 * job_rate else ""),
        "The job does not time its transactions: its longest is bounded from above by the "
        "longest gap between consecutive users' erasure times in gdpr_erasures (now() = "
        "transaction start; a gap adds a round trip and the job's bookkeeping); median gap "
        f"{ms(median(job.typical))}.",
        "Audited write: `" + STREAM.replace(" WHERE id = %s", "") + "` on one payment of a "
        f"user outside the sets, {STREAM_RATE:.0f}/s on its own connection. Audited writes "
        "append to the hash chain under one lock, which an erasure holds from its first "
        "audited write to its commit: the job blocks writers for one user's audited part at "
        "most, the single transaction for nearly its whole run (and one failing user rolls "
        "every user back).",
        f"Rows, job ({size * rounds:,} users over all rounds): {job.rows()}. One transaction "
        f"({size * rounds:,} users): {alone.rows()}.",
        audit_note,
        dump.note(len(purged)),
    ]
    return section


def _personalise(conn: psycopg.Connection[Any], ids: Sequence[uuid.UUID]) -> list[Person]:
    """Unique values for each user, everywhere the schema keeps personal data."""
    row = conn.execute("SELECT (SELECT count(*) FROM gdpr_erasures) + (SELECT count(*) FROM"
                       " users WHERE email LIKE %s)", ("%@" + DOMAIN,)).fetchone()
    offset = int(row[0]) if row else 0  # values of earlier runs (--reuse) are never reused
    if offset + len(ids) > COMBINATIONS:
        raise RuntimeError("out of unique names: rebuild the dataset")
    people = [person(uid, offset + k) for k, uid in enumerate(ids)]
    with conn.transaction():
        conn.execute("CREATE TEMP TABLE bench_people (id uuid PRIMARY KEY, name text,"
                     " phone text, email text) ON COMMIT DROP")
        conn.execute("INSERT INTO bench_people SELECT * FROM unnest(%s::uuid[], %s::text[],"
                     " %s::text[], %s::text[])", ([p.id for p in people],
                                                  [p.name for p in people],
                                                  [p.phone for p in people],
                                                  [p.email for p in people]))
        for table, column, assignments in PERSONALISE:
            conn.execute(sql.SQL("UPDATE {} x SET {} FROM bench_people p WHERE x.{} = p.id")
                         .format(sql.Identifier(table), sql.SQL(assignments),
                                 sql.Identifier(column)))
        conn.execute(CHAT)
    return people


def _erase(env: BenchEnv, job: bool, batch: list[uuid.UUID], out: Outcome) -> None:
    """The job in-process, or gdpr_erase_user() for the whole batch in one transaction."""
    if job:
        seconds, result = timed(lambda: run_job(
            GDPR_PURGE, env.url, "gdpr_purge", state_dir=env.workdir / "gdpr",
            grace_days=GRACE_DAYS, max_users_per_run=len(batch)))
        details, erased = result.details, result.details.get("users_erased")
        out.count(details.get("deleted_rows", {}), details.get("scrubbed_rows", {}),
                  int(details.get("audit_redacted", 0)))
        if details.get("analytics_rows"):
            out.deleted["(analytics retention)"] += int(details["analytics_rows"])
        with psycopg.connect(env.url) as conn:
            gaps = conn.execute(GAPS, (batch,)).fetchone() or (0, 0)
        out.longest.append(float(gaps[0] or 0))
        out.typical.append(float(gaps[1] or 0))
    else:
        with psycopg.connect(env.url) as conn:  # not autocommit: one transaction
            began = time.perf_counter()
            results = [r[0] for r in conn.execute(ERASE_ALL, (GRACE_DAYS, batch)).fetchall()]
            conn.commit()
            seconds = time.perf_counter() - began
        erased = sum(1 for r in results if r.get("erased"))
        for r in results:
            out.count(r.get("deleted", {}), r.get("scrubbed", {}), int(r.get("audit_redacted", 0)))
        out.longest.append(seconds)
    if erased != len(batch):
        raise RuntimeError(f"{erased} users erased, expected {len(batch)}")
    out.seconds.append(seconds)


def _audit(env: BenchEnv, purged: list[uuid.UUID]) -> tuple[Goal, str]:
    """Full chain pass (small dataset only) and, always, the purged users' own audit rows."""
    with psycopg.connect(env.url) as conn:
        row = conn.execute(REDACTED, (purged,)).fetchone()
    assert row is not None
    rows, redacted, intact = (int(v) for v in row)
    targeted = (f"{rows:,} audit rows of the {len(purged):,} erased users: {redacted:,} "
                f"redacted, {intact:,} with a row hash that recomputes and links to the row "
                "before")
    ok = rows == redacted == intact and rows > 0
    if not env.small:
        note = ("Audit chain: full scale, so only the erased users' own rows were checked "
                "(no full pass, to keep the section short): " + targeted + ".")
        return Goal("erased users' audit rows redacted, hashes intact", f"{redacted:,} of "
                    f"{rows:,} redacted, {intact:,} intact", ok), note
    try:
        seconds, result = timed(lambda: run_job(AUDIT_VERIFY, env.url, "audit_verify",
                                                options={"full": True},
                                                state_dir=env.workdir / "gdpr-audit"))
    except JobFailed as exc:
        return Goal("audit chain verifies after the purge", f"broken: {exc}", False), targeted
    details = result.details
    measured = (f"full pass: {details['rows_verified']:,} rows, "
                f"{details['redacted_rows']:,} redacted, {seconds:.1f} s")
    return (Goal("audit chain verifies after the purge", measured, ok),
            f"Audit chain: the audit_verify job, full pass (small dataset); and {targeted}.")


@dataclass
class DumpScan:
    """What the streamed scan of the pg_dump output found."""

    size: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    control_missing: list[str] = field(default_factory=list)
    leak: str = ""

    def goal(self) -> Goal:
        measured = (f"leak: {self.leak}" if self.leak else "clean") + (
            f" ({self.size / 2**20:,.0f} MiB dumped in {self.seconds:.1f} s)")
        return Goal("pg_dump after the purge: no erased user's email, name or phone",
                    measured, not self.leak and not self.control_missing)

    def note(self, users: int) -> str:
        return (f"pg_dump check: `pg_dump --format=plain` of the whole dataset database, "
                f"streamed ({CHUNK >> 20} MiB reads) through a Python scan for the {users:,} "
                "erased users' emails, Arabic names and phones in UTF-8, as text and as hex "
                "(audit payloads are dumped as bytea hex: the jsonb `payload` column is "
                f"generated, so pg_dump leaves it out). {self.size / 2**20:,.0f} MiB in "
                f"{self.seconds:.1f} s wall clock, pg_dump and scan together (the scan used "
                f"{self.cpu:.1f} s of CPU). Control, {CONTROL_USERS} users given values the "
                "same way and not erased: " + ("every value found, as text and as hex."
                if not self.control_missing else "**values NOT found, so the check proves "
                "nothing**: " + ", ".join(self.control_missing[:5])))


def _scan_dump(env: BenchEnv, purged: list[Person], control: list[Person]) -> DumpScan:
    """Stream pg_dump through a search for the values. Each kind of value contains an anchor
    that is rare elsewhere (its email domain, its phone prefix, the " بن" of its name); at
    each anchor the candidate value is cut out and looked up, so the cost follows the number
    of anchors in the dump, not the number of values."""
    needles: dict[bytes, tuple[Person, str, bool]] = {}  # value -> (person, what, control)
    for group, is_control in ((purged, False), (control, True)):
        for p in group:
            for kind, text in (("email", p.email), ("name", p.name), ("phone", p.phone)):
                needles[text.encode()] = (p, kind, is_control)
                needles[text.encode().hex().encode()] = (p, f"{kind} (hex)", is_control)
    local = len(person(uuid.UUID(int=0), 0).email) - len("@" + DOMAIN)
    names = {len(p.name.encode()) for p in [*purged, *control]}
    kinds = [  # anchor, where the value starts from it (None: the word's start), lengths
        (("@" + DOMAIN).encode(), -local, {local + len(DOMAIN) + 1}),
        (PHONE_PREFIX.encode(), 0, {len(PHONE_PREFIX) + 7}),
        (" بن".encode(), None, names)]
    scan, found, table = DumpScan(), set[bytes](), "?"
    errors = env.workdir / "pg_dump.err"
    cpu, began = time.process_time(), time.perf_counter()
    with errors.open("wb") as err:
        proc = subprocess.Popen([env.cluster.bin("pg_dump"), "--format=plain", "--no-owner",
                                 "--dbname", env.url], stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        carry = b"\n"  # each buffer starts with the newline that ends the line before it
        while chunk := proc.stdout.read(CHUNK):
            scan.size += len(chunk)
            buf = carry + chunk
            end = buf.rfind(b"\n") + 1  # whole lines only; the rest waits for the next read
            for anchor, offset, lengths in kinds:
                for hexed in (False, True):
                    width = 2 if hexed else 1
                    mark = anchor.hex().encode() if hexed else anchor
                    pos = buf.find(mark, 0, end)
                    while pos != -1:
                        start = (pos + offset * width if offset is not None
                                 else _word_start(buf, pos, hexed))
                        for length in lengths:
                            value = buf[start:start + length * width]
                            hit = needles.get(value)
                            if hit is None or value in found:
                                continue
                            found.add(value)
                            if not hit[2] and not scan.leak:
                                at = buf.rfind(b"\nCOPY ", 0, pos)
                                scan.leak = (f"{hit[1]} of user {hit[0].id} in "
                                             f"{_copied_table(buf, at) if at >= 0 else table}")
                        pos = buf.find(mark, pos + 1, end)
            at = buf.rfind(b"\nCOPY ", 0, end)
            table = _copied_table(buf, at) if at >= 0 else table
            carry = buf[end - 1:]
        proc.stdout.close()
        if proc.wait() != 0:
            raise RuntimeError(f"pg_dump failed: {errors.read_text(errors='replace')[-500:]}")
    scan.seconds, scan.cpu = time.perf_counter() - began, time.process_time() - cpu
    scan.control_missing = [f"{what} of {p.id}" for n, (p, what, c) in needles.items()
                            if c and n not in found]
    return scan


ARABIC = frozenset([*range(0x80, 0xC0), *range(0xD8, 0xDC)])  # UTF-8 bytes of Arabic letters
HEX_ARABIC = frozenset(f"{b:02x}".encode() for b in ARABIC)


def _word_start(buf: bytes, pos: int, hexed: bool) -> int:
    """Where the Arabic word ending at pos starts (in hex text: two characters a byte)."""
    if hexed:
        while pos >= 2 and buf[pos - 2:pos] in HEX_ARABIC:
            pos -= 2
    else:
        while pos >= 1 and buf[pos - 1] in ARABIC:
            pos -= 1
    return pos


def _copied_table(buf: bytes, at: int) -> str:
    """The table of the `COPY table (...) FROM stdin;` line starting after buf[at]."""
    line = buf[at + 1:buf.find(b"\n", at + 1)]
    return line.split(b" ", 2)[1].decode(errors="replace")
