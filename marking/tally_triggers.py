"""The triggers that keep ``marker_item_tally`` (issue 8), used by the migrations.

Each insert into ``mark_assignment`` updates its marker's tally for the item in the same
transaction, whichever code inserted it (the deal, seeds, self-checks, a tool), so the
counts cannot drift from the rows they count:

* a first, second or third read adds one to ``live_total`` and ``live_since_seed``, and
  to ``live_on_day`` when it was dealt on the tally's ``day`` (a later day starts the day
  count again at one; an earlier day, from a server whose clock is behind, counts in the
  total only, as the old count by day did);
* a seed resets ``live_since_seed``.

``mark_assignment`` is append-only for these slots (a release deletes only arbitration,
extra and review assignments), so nothing needs subtracting. ``LIVE_READS`` must equal
``marking.dispatch.MARKING_SLOTS``; a test holds them together.

SQLite's trigger inserts the row if missing with ``INSERT … SELECT … WHERE NOT EXISTS``
rather than ``INSERT OR IGNORE``: an ``OR`` clause on the statement that fires a trigger
would override the trigger's own.
"""
from __future__ import annotations

LIVE_READS = ("first", "second", "third")
_LIVE = ", ".join(f"'{slot}'" for slot in LIVE_READS)

_COLUMNS = "marker_id, item_id, live_total, day, live_on_day, live_since_seed"

POSTGRESQL_STATEMENTS = [
    f"""CREATE OR REPLACE FUNCTION marker_item_tally_count() RETURNS trigger
       LANGUAGE plpgsql AS $$
       BEGIN
         IF NEW.slot IN ({_LIVE}) THEN
           INSERT INTO marker_item_tally AS k ({_COLUMNS})
           VALUES (NEW.marker_id, NEW.item_id, 1, NEW.day, 1, 1)
           ON CONFLICT (marker_id, item_id) DO UPDATE SET
             live_total = k.live_total + 1,
             live_on_day = CASE WHEN k.day IS NULL OR k.day < NEW.day THEN 1
                                WHEN k.day = NEW.day THEN k.live_on_day + 1
                                ELSE k.live_on_day END,
             day = GREATEST(k.day, NEW.day),
             live_since_seed = k.live_since_seed + 1;
         ELSIF NEW.slot = 'seed' THEN
           INSERT INTO marker_item_tally AS k ({_COLUMNS})
           VALUES (NEW.marker_id, NEW.item_id, 0, NULL, 0, 0)
           ON CONFLICT (marker_id, item_id) DO UPDATE SET live_since_seed = 0;
         END IF;
         RETURN NULL;
       END $$""",
    """CREATE TRIGGER mark_assignment_tally AFTER INSERT ON mark_assignment
       FOR EACH ROW EXECUTE FUNCTION marker_item_tally_count()""",
]

_SQLITE_ENSURE_ROW = f"""INSERT INTO marker_item_tally ({_COLUMNS})
    SELECT NEW.marker_id, NEW.item_id, 0, NULL, 0, 0
    WHERE NOT EXISTS (SELECT 1 FROM marker_item_tally
                      WHERE marker_id = NEW.marker_id AND item_id = NEW.item_id);"""

SQLITE_STATEMENTS = [
    f"""CREATE TRIGGER mark_assignment_tally_live AFTER INSERT ON mark_assignment
       WHEN NEW.slot IN ({_LIVE})
       BEGIN
         {_SQLITE_ENSURE_ROW}
         UPDATE marker_item_tally SET
           live_total = live_total + 1,
           live_on_day = CASE WHEN day IS NULL OR day < NEW.day THEN 1
                              WHEN day = NEW.day THEN live_on_day + 1
                              ELSE live_on_day END,
           day = CASE WHEN day IS NULL OR day < NEW.day THEN NEW.day ELSE day END,
           live_since_seed = live_since_seed + 1
         WHERE marker_id = NEW.marker_id AND item_id = NEW.item_id;
       END""",
    f"""CREATE TRIGGER mark_assignment_tally_seed AFTER INSERT ON mark_assignment
       WHEN NEW.slot = 'seed'
       BEGIN
         {_SQLITE_ENSURE_ROW}
         UPDATE marker_item_tally SET live_since_seed = 0
         WHERE marker_id = NEW.marker_id AND item_id = NEW.item_id;
       END""",
]

POSTGRESQL_DROP = ["DROP TRIGGER IF EXISTS mark_assignment_tally ON mark_assignment",
                   "DROP FUNCTION IF EXISTS marker_item_tally_count()"]
SQLITE_DROP = ["DROP TRIGGER IF EXISTS mark_assignment_tally_live",
               "DROP TRIGGER IF EXISTS mark_assignment_tally_seed"]

# The tallies of assignments made before the triggers existed (the migration), and the
# recount a test compares the kept tallies with: the same definitions, counted.
RECOUNT = f"""
SELECT a.marker_id, a.item_id,
       SUM(CASE WHEN a.slot IN ({_LIVE}) THEN 1 ELSE 0 END) AS live_total,
       MAX(CASE WHEN a.slot IN ({_LIVE}) THEN a.day END) AS day,
       SUM(CASE WHEN a.slot IN ({_LIVE}) AND a.day = (
             SELECT MAX(b.day) FROM mark_assignment b
             WHERE b.marker_id = a.marker_id AND b.item_id = a.item_id AND b.slot IN ({_LIVE}))
           THEN 1 ELSE 0 END) AS live_on_day,
       SUM(CASE WHEN a.slot IN ({_LIVE}) AND a.id > COALESCE((
             SELECT MAX(s.id) FROM mark_assignment s
             WHERE s.marker_id = a.marker_id AND s.item_id = a.item_id AND s.slot = 'seed'), 0)
           THEN 1 ELSE 0 END) AS live_since_seed
FROM mark_assignment a
WHERE a.slot IN ({_LIVE}, 'seed')
GROUP BY a.marker_id, a.item_id
"""

BACKFILL = f"INSERT INTO marker_item_tally ({_COLUMNS}) {RECOUNT}"


def install_statements(dialect: str) -> list[str]:
    return POSTGRESQL_STATEMENTS if dialect == "postgresql" else SQLITE_STATEMENTS


def drop_statements(dialect: str) -> list[str]:
    return POSTGRESQL_DROP if dialect == "postgresql" else SQLITE_DROP
