"""The warehouse schema and every statement the pipeline runs, written once.

Statements use ``?`` placeholders and ``{slot}`` names that a
:class:`~cohortflow.warehouse.dialects.Dialect` fills in. All timestamps are
UTC text (sources' own ``YYYY-MM-DD HH:MM:SS.ffffff``; ours ISO 8601).

Incremental model: a tick stages its rows and marks the students, batches and
lesson titles it touched in temp tables; :data:`FINISH` then recomputes only
those keys, so a tick costs O(delta), not O(history).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SCHEMA_VERSION: Final = "2"

TABLES: Final = (
    """CREATE TABLE IF NOT EXISTS batches (
        id {bigint} PRIMARY KEY,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        students_total {bigint} NOT NULL DEFAULT 0,
        students_completed_3plus {bigint} NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL,
        absent_listings {bigint} NOT NULL DEFAULT 0,
        gone_at TEXT
    )""",
    # Ranks and the top of the leaderboard without sorting every batch (the dashboard's pages).
    "CREATE INDEX IF NOT EXISTS batches_by_completed ON batches (students_completed_3plus)",
    """CREATE TABLE IF NOT EXISTS students (
        id {bigint} PRIMARY KEY,
        name TEXT NOT NULL,
        batch_id {bigint} NOT NULL,
        created_at TEXT NOT NULL,
        lessons_completed {bigint} NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS students_by_batch ON students (batch_id, lessons_completed)",
    """CREATE TABLE IF NOT EXISTS lessons (
        id {bigint} PRIMARY KEY,
        title TEXT NOT NULL UNIQUE
    )""",
    """CREATE TABLE IF NOT EXISTS lesson_completions (
        student_id {bigint} NOT NULL,
        lesson_id {bigint} NOT NULL,
        PRIMARY KEY (student_id, lesson_id)
    ) {without_rowid}""",
    """CREATE TABLE IF NOT EXISTS pending_title_completions (
        lesson_title TEXT NOT NULL,
        student_id {bigint} NOT NULL,
        PRIMARY KEY (lesson_title, student_id)
    ) {without_rowid}""",
    """CREATE TABLE IF NOT EXISTS quarantine (
        id {serial_pk},
        source TEXT NOT NULL,
        location TEXT NOT NULL,
        raw TEXT NOT NULL,
        reason TEXT NOT NULL,
        ingested_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS quarantine_by_reason ON quarantine (source, reason)",
    """CREATE TABLE IF NOT EXISTS pipeline_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL
    )""",
)
# Batches the API stopped serving (gone_at set by the reconciler) leave the leaderboard.
VIEWS: Final = (
    """{create_view} batch_leaderboard AS
    SELECT RANK() OVER (ORDER BY students_completed_3plus DESC) AS rank,
           id AS batch_id, name, students_completed_3plus, students_total,
           created_at, updated_at
    FROM batches WHERE gone_at IS NULL""",
)
# From version 1: batches gain the reconciler's columns; the view is rebuilt with its filter.
MIGRATE_FROM_1: Final = (
    "ALTER TABLE batches ADD COLUMN absent_listings {bigint} NOT NULL DEFAULT 0",
    "ALTER TABLE batches ADD COLUMN gone_at TEXT",
    "DROP VIEW IF EXISTS batch_leaderboard",
)

TEMP_TABLES: Final = (
    "{temp_table} touched_students (id {bigint} PRIMARY KEY)",
    "{temp_table} touched_batches (id {bigint} PRIMARY KEY)",
    "{temp_table} touched_titles (title TEXT PRIMARY KEY)",
    "{temp_table} batch_figures (id {bigint} PRIMARY KEY, total {bigint}, done {bigint})",
    "{temp_table} listed_batches (id {bigint} PRIMARY KEY, name TEXT, created_at TEXT)",
)
CLEAR_TEMP: Final = (
    "DELETE FROM touched_students",
    "DELETE FROM touched_batches",
    "DELETE FROM touched_titles",
    "DELETE FROM batch_figures",
    "DELETE FROM listed_batches",
)
DATA_TABLES: Final = (
    "batches",
    "students",
    "lessons",
    "lesson_completions",
    "pending_title_completions",
    "quarantine",
    "pipeline_state",
)

INSERT_BATCH: Final = """INSERT INTO batches
    (id, name, created_at, students_total, students_completed_3plus, updated_at)
    VALUES (?, ?, ?, 0, 0, ?) ON CONFLICT (id) DO NOTHING"""
INSERT_STUDENT: Final = """INSERT INTO students
    (id, name, batch_id, created_at, lessons_completed)
    VALUES (?, ?, ?, ?, 0) ON CONFLICT (id) DO NOTHING"""
# Students edited or deleted upstream (the change detector): both the old and the new batch
# are recomputed; a deleted student's completions stay stored but count for no batch.
UPSERT_STUDENT: Final = """INSERT INTO students
    (id, name, batch_id, created_at, lessons_completed)
    VALUES (?, ?, ?, ?, 0) ON CONFLICT (id) DO UPDATE SET
    name = excluded.name, batch_id = excluded.batch_id, created_at = excluded.created_at"""
TOUCH_BATCH_OF_STUDENT: Final = """INSERT INTO touched_batches (id)
    SELECT batch_id FROM students WHERE id = ? ON CONFLICT DO NOTHING"""
DELETE_STUDENT: Final = "DELETE FROM students WHERE id = ?"
SELECT_STUDENTS_BETWEEN: Final = """SELECT id, name, batch_id, created_at FROM students
    WHERE id > ? AND id <= ? ORDER BY id"""
SELECT_STUDENT_AT_OR_AFTER: Final = "SELECT id, created_at FROM students WHERE id >= ? ORDER BY id LIMIT 1"
INSERT_LESSON: Final = "INSERT INTO lessons (id, title) VALUES (?, ?) ON CONFLICT DO NOTHING"
INSERT_COMPLETION: Final = """INSERT INTO lesson_completions (student_id, lesson_id)
    VALUES (?, ?) ON CONFLICT DO NOTHING"""
INSERT_PENDING: Final = """INSERT INTO pending_title_completions (student_id, lesson_title)
    VALUES (?, ?) ON CONFLICT DO NOTHING"""
INSERT_QUARANTINE: Final = """INSERT INTO quarantine (source, location, raw, reason, ingested_at)
    VALUES (?, ?, ?, ?, ?)"""
TOUCH_STUDENT: Final = "INSERT INTO touched_students (id) VALUES (?) ON CONFLICT DO NOTHING"
TOUCH_BATCH: Final = "INSERT INTO touched_batches (id) VALUES (?) ON CONFLICT DO NOTHING"
TOUCH_TITLE: Final = "INSERT INTO touched_titles (title) VALUES (?) ON CONFLICT DO NOTHING"
UPSERT_STATE: Final = """INSERT INTO pipeline_state (key, value, updated_at) VALUES (?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"""
SELECT_STATE: Final = "SELECT key, value FROM pipeline_state"


@dataclass(frozen=True)
class Bulk:
    """A set-based form of one INSERT for backends that load rows faster than they insert them.

    The rows (in the INSERT's parameter order) are loaded into the temp table ``stage``,
    then ``apply`` moves them with the same conflict rule as the row-by-row statement.
    """

    stage: str
    columns: tuple[str, ...]
    apply: str

    @property
    def ddl(self) -> str:
        """The staging table (temp, emptied after each use)."""
        return f"{{temp_table}} {self.stage} ({', '.join(self.columns)})"

    @property
    def names(self) -> tuple[str, ...]:
        """The staged column names, in load order."""
        return tuple(c.split()[0] for c in self.columns)


BULK: Final = {
    INSERT_BATCH: Bulk(
        "stage_batches",
        ("id {bigint}", "name TEXT", "created_at TEXT", "updated_at TEXT"),
        """INSERT INTO batches (id, name, created_at, students_total, students_completed_3plus, updated_at)
        SELECT id, name, created_at, 0, 0, updated_at FROM stage_batches WHERE TRUE
        ON CONFLICT (id) DO NOTHING""",
    ),
    TOUCH_BATCH: Bulk(
        "stage_touched_batches",
        ("id {bigint}",),
        """INSERT INTO touched_batches (id)
        SELECT DISTINCT id FROM stage_touched_batches WHERE TRUE ON CONFLICT DO NOTHING""",
    ),
    INSERT_STUDENT: Bulk(
        "stage_students",
        ("id {bigint}", "name TEXT", "batch_id {bigint}", "created_at TEXT"),
        """INSERT INTO students (id, name, batch_id, created_at, lessons_completed)
        SELECT id, name, batch_id, created_at, 0 FROM stage_students WHERE TRUE
        ON CONFLICT (id) DO NOTHING""",
    ),
    INSERT_COMPLETION: Bulk(
        "stage_completions",
        ("student_id {bigint}", "lesson_id {bigint}"),
        """INSERT INTO lesson_completions (student_id, lesson_id)
        SELECT DISTINCT student_id, lesson_id FROM stage_completions WHERE TRUE ON CONFLICT DO NOTHING""",
    ),
    INSERT_PENDING: Bulk(
        "stage_pending",
        ("student_id {bigint}", "lesson_title TEXT"),
        """INSERT INTO pending_title_completions (student_id, lesson_title)
        SELECT DISTINCT student_id, lesson_title FROM stage_pending WHERE TRUE ON CONFLICT DO NOTHING""",
    ),
    TOUCH_STUDENT: Bulk(
        "stage_touched_students",
        ("id {bigint}",),
        """INSERT INTO touched_students (id)
        SELECT DISTINCT id FROM stage_touched_students WHERE TRUE ON CONFLICT DO NOTHING""",
    ),
    INSERT_QUARANTINE: Bulk(
        "stage_quarantine",
        ("source TEXT", "location TEXT", "raw TEXT", "reason TEXT", "ingested_at TEXT"),
        """INSERT INTO quarantine (source, location, raw, reason, ingested_at)
        SELECT source, location, raw, reason, ingested_at FROM stage_quarantine""",
    ),
}
SELECT_STATE_KEY: Final = "SELECT value FROM pipeline_state WHERE key = ?"

# Run in this order at the end of every transaction. The WHERE TRUE clauses keep
# SQLite's parser from reading ON CONFLICT as part of a join.
_RESOLVABLE_PENDING = """FROM pending_title_completions p
    JOIN lessons l ON l.title = p.lesson_title
    WHERE p.lesson_title IN (SELECT title FROM touched_titles)"""
ANALYZE_TOUCHED: Final = "ANALYZE touched_students"
_COMPLETED = "(SELECT count(*) FROM lesson_completions c WHERE c.student_id = students.id)"
FINISH: Final = (
    f"""INSERT INTO touched_students (id) SELECT DISTINCT p.student_id {_RESOLVABLE_PENDING}
    ON CONFLICT DO NOTHING""",
    f"""INSERT INTO lesson_completions (student_id, lesson_id) SELECT p.student_id, l.id
    {_RESOLVABLE_PENDING} ON CONFLICT DO NOTHING""",
    """DELETE FROM pending_title_completions WHERE lesson_title IN (
        SELECT t.title FROM touched_titles t JOIN lessons l ON l.title = t.title)""",
    # Driven by the touched keys (PK lookups): never a scan of all students.
    # Rows whose count is unchanged are not rewritten (nor their index entries).
    f"""UPDATE students SET lessons_completed = {_COMPLETED}
    WHERE id IN (SELECT id FROM touched_students) AND lessons_completed <> {_COMPLETED}""",
    """INSERT INTO touched_batches (id)
    SELECT DISTINCT batch_id FROM students WHERE id IN (SELECT id FROM touched_students)
    ON CONFLICT DO NOTHING""",
    """INSERT INTO batch_figures (id, total, done)
    SELECT t.id,
        (SELECT count(*) FROM students s WHERE s.batch_id = t.id),
        (SELECT count(*) FROM students s WHERE s.batch_id = t.id AND s.lessons_completed >= 3)
    FROM touched_batches t WHERE TRUE""",
)
# Only batches whose figures changed get a new updated_at.
RECOMPUTE_BATCHES: Final = """UPDATE batches SET
        students_total = (SELECT f.total FROM batch_figures f WHERE f.id = batches.id),
        students_completed_3plus = (SELECT f.done FROM batch_figures f WHERE f.id = batches.id),
        updated_at = ?
    WHERE id IN (SELECT f.id FROM batch_figures f JOIN batches b ON b.id = f.id
                 WHERE b.students_total <> f.total OR b.students_completed_3plus <> f.done)"""

LEADERBOARD: Final = """SELECT rank, batch_id, name, students_completed_3plus, students_total,
    created_at, updated_at FROM batch_leaderboard ORDER BY rank, batch_id LIMIT ?"""
QUARANTINE_COUNTS: Final = """SELECT source, reason, count(*) FROM quarantine
    GROUP BY source, reason ORDER BY source, reason"""

# Reconciling a full listing of the batch API (cohortflow.warehouse.reconcile). A listed
# batch is one we hold when both its id and its created_at match.
_LISTED_HELD = """SELECT l.id FROM listed_batches l
    JOIN batches b ON b.id = l.id AND b.created_at = l.created_at"""
INSERT_LISTED: Final = """INSERT INTO listed_batches (id, name, created_at) VALUES (?, ?, ?)
    ON CONFLICT DO NOTHING"""
# An id we hold served with another created_at: ids were reused, the API started over.
FIRST_CONFLICT: Final = """SELECT l.id, l.created_at, b.created_at FROM listed_batches l
    JOIN batches b ON b.id = l.id AND b.created_at <> l.created_at ORDER BY l.id LIMIT 1"""
LISTED_MISSING: Final = """SELECT l.id, l.name, l.created_at FROM listed_batches l
    WHERE NOT EXISTS (SELECT 1 FROM batches b WHERE b.id = l.id) ORDER BY l.id"""
RENAME_LISTED: Final = f"""UPDATE batches SET
        name = (SELECT l.name FROM listed_batches l WHERE l.id = batches.id), updated_at = ?
    WHERE id IN ({_LISTED_HELD} WHERE b.name <> l.name)"""
SERVED_AGAIN: Final = f"""UPDATE batches SET absent_listings = 0, gone_at = NULL, updated_at = ?
    WHERE (absent_listings > 0 OR gone_at IS NOT NULL) AND id IN ({_LISTED_HELD})"""
COUNT_ABSENT: Final = """UPDATE batches SET absent_listings = absent_listings + 1
    WHERE created_at <= ? AND NOT EXISTS (
        SELECT 1 FROM listed_batches l WHERE l.id = batches.id AND l.created_at = batches.created_at)"""
MARK_GONE: Final = """UPDATE batches SET gone_at = ?, updated_at = ?
    WHERE gone_at IS NULL AND absent_listings >= ?"""
