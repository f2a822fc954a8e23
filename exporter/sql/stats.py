"""What one reading of a SQL server yields, whatever the dialect."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.exc import DBAPIError

# Every statement the exporter sends names this identifier (a column alias or a user variable), which
# survives digest normalisation in both MariaDB/MySQL and PostgreSQL: that is how its own statements are
# kept out of the digests it reports.
PROBE_MARK = "cachewarden_probe"


class DigestSchedule:
    """When the next reading includes the statement digests: every `interval` seconds, counted from the
    start of the previous digest reading (counting from its end would add the reading's own time and
    the collection interval's rounding to every period), and taken up to half a collection interval
    early, so a 60 s interval read on a 15 s schedule is every fourth collection, not every fifth."""

    def __init__(self, interval: float, collection_interval: float) -> None:
        self.interval = interval
        self._early = collection_interval / 2
        self._due: float | None = None  # None: no digests read yet

    def due(self, now: float) -> bool:
        return self._due is None or now + self._early >= self._due

    def read_at(self, started: float) -> None:
        self._due = started + self.interval


@dataclass(slots=True)
class KnownDigests:
    """What earlier readings of one server learned about digest hashes, which keep their meaning while
    the server version stays the same: the exporter's own statement shapes and the others' texts."""

    version: str = ""
    own: set[str] = field(default_factory=set)
    withheld: set[str] = field(default_factory=set)  # others' digests whose text may hold a password
    texts: dict[str, str] = field(default_factory=dict)  # digest -> truncated text
    learning_passes: int = 0  # full passes that looked for own shapes
    columns: frozenset[str] | None = None  # the digest table's columns (upper case), once read

    def forget_if_not(self, version: str) -> None:
        if version != self.version:
            self.version, self.own, self.texts, self.learning_passes = version, set(), {}, 0
            self.withheld, self.columns = set(), None


@dataclass(frozen=True, slots=True)
class StatementOptions:
    top_n: int
    slow_threshold: float  # seconds of mean time
    text_length: int
    listed: int  # how many slow / unindexed statements a check lists
    read_digests: bool = True  # False: leave the digest fields empty and `digests_fresh` False
    known: KnownDigests = field(default_factory=KnownDigests, compare=False)  # MariaDB/MySQL only


@dataclass(frozen=True, slots=True)
class Digest:
    """One normalised statement shape, summed over schemas and users."""

    digest: str
    schema: str
    text: str
    calls: float
    seconds: float
    rows_examined: float | None = None  # MariaDB/MySQL only
    no_index_used: float | None = None  # MariaDB/MySQL only

    @property
    def mean_seconds(self) -> float:
        return self.seconds / self.calls if self.calls else 0.0


class MissingColumnsError(LookupError):
    """A catalog view lacks columns a reader needs (a server or extension version without them)."""

    def __init__(self, view: str, missing: list[str]) -> None:
        super().__init__(f"{view} has no column {', '.join(missing)}")
        self.view, self.missing = view, missing


@dataclass(frozen=True, slots=True)
class PartFailure:
    """Why one optional part of a reading is missing; shown in `check` as a NOTE under `check`."""

    check: str  # the check's name, e.g. "longest transaction"
    summary: str  # what could not be read, and the fix (a GRANT, an ALTER EXTENSION, a server setting)
    error: bool = True  # False: switched off on the server (performance_schema OFF), not a failed read


# The optional parts' names (the `part` label), per dialect: each may fail alone, the rest of the
# reading stands. What the server must answer for `db_up 1` is only the login and its version and
# max_connections.
STATEMENT_DIGESTS = "statement_digests"


@dataclass(slots=True)
class DbStats:
    version: str
    connections: dict[str, int]  # by state, every state of the dialect present; empty when not read
    max_connections: int
    longest_transaction_seconds: float | None = 0.0  # None: not readable with the account's privileges
    max_used_connections: int | None = None
    aborted: dict[str, int] = field(default_factory=dict)  # by kind
    slow_queries: int | None = None
    full_scans: int | None = None
    long_query_time: float | None = None  # seconds; what Slow_queries counts against (MariaDB/MySQL)
    # What the account cannot see although the reading succeeded: (check name, what to grant), NOTEs.
    notes: list[tuple[str, str]] = field(default_factory=list)
    # Optional parts attempted in this reading: None when read, else why not.
    parts: dict[str, PartFailure | None] = field(default_factory=dict)
    top: list[Digest] = field(default_factory=list)
    slow: list[Digest] = field(default_factory=list)
    slow_total: int = 0
    no_index: list[Digest] = field(default_factory=list)
    no_index_total: int | None = None  # None: not measured (PostgreSQL, or no no-index columns)
    digests_fresh: bool = True  # False when this reading skipped the statement digests

    @property
    def statements_unavailable(self) -> str | None:
        """Why statement statistics are missing, or None when they were read (or not attempted)."""
        failure = self.parts.get(STATEMENT_DIGESTS)
        return failure.summary if failure is not None else None

    def fail(self, part: str, check: str, summary: str, *, error: bool = True) -> None:
        self.parts[part] = PartFailure(check, summary, error)

    def carry_digests_from(self, earlier: DbStats) -> None:
        """Take the statement digests of an earlier reading, for a reading that skipped them."""
        if STATEMENT_DIGESTS in earlier.parts:
            self.parts[STATEMENT_DIGESTS] = earlier.parts[STATEMENT_DIGESTS]
        self.top, self.slow, self.slow_total = earlier.top, earlier.slow, earlier.slow_total
        self.no_index, self.no_index_total = earlier.no_index, earlier.no_index_total

    @property
    def connections_total(self) -> int:
        return sum(self.connections.values())


async def read_part(
    stats: DbStats, part: str, check: str, read: Callable[[], Awaitable[None]],
    explain: Callable[[DBAPIError], str],
) -> bool:
    """Run one optional part's `read`; if the server refuses it, record why (`explain` names the fix)
    and go on. A lost connection is not a part's failure: it propagates, and the target is down.

    `read` assigns its results to `stats` only once it has them all, so a failed part leaves nothing
    half-read behind. An answer of an unexpected shape (a value of another type, a missing row) costs
    the part too: servers differ more than any reader can foresee.
    """
    try:
        await read()
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise
        stats.fail(part, check, explain(exc))
        return False
    except MissingColumnsError as exc:
        stats.fail(part, check, f"{exc}, which this server or extension version lacks; the rest is measured")
        return False
    except (ValueError, TypeError, LookupError) as exc:
        stats.fail(part, check, f"the server's answer has an unexpected shape ({type(exc).__name__}: {exc})")
        return False
    stats.parts[part] = None
    return True
