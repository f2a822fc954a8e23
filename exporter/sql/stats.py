"""What one reading of a SQL server yields, whatever the dialect."""

from __future__ import annotations

from dataclasses import dataclass, field

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

    def forget_if_not(self, version: str) -> None:
        if version != self.version:
            self.version, self.own, self.texts, self.learning_passes = version, set(), {}, 0
            self.withheld = set()


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


@dataclass(slots=True)
class DbStats:
    version: str
    connections: dict[str, int]  # by state, every state of the dialect present
    max_connections: int
    longest_transaction_seconds: float | None = 0.0  # None: not readable with the account's privileges
    max_used_connections: int | None = None
    aborted: dict[str, int] = field(default_factory=dict)  # by kind
    slow_queries: int | None = None
    full_scans: int | None = None
    long_query_time: float | None = None  # seconds; what Slow_queries counts against (MariaDB/MySQL)
    # Parts of the reading the account may not read: (check name, what to grant), shown as NOTEs.
    notes: list[tuple[str, str]] = field(default_factory=list)
    # None when statement statistics can be read; otherwise why not (shown as a NOTE).
    statements_unavailable: str | None = None
    top: list[Digest] = field(default_factory=list)
    slow: list[Digest] = field(default_factory=list)
    slow_total: int = 0
    no_index: list[Digest] = field(default_factory=list)
    no_index_total: int = 0
    digests_fresh: bool = True  # False when this reading skipped the statement digests

    def carry_digests_from(self, earlier: DbStats) -> None:
        """Take the statement digests of an earlier reading, for a reading that skipped them."""
        if self.statements_unavailable is None:
            self.statements_unavailable = earlier.statements_unavailable
        self.top, self.slow, self.slow_total = earlier.top, earlier.slow, earlier.slow_total
        self.no_index, self.no_index_total = earlier.no_index, earlier.no_index_total

    @property
    def connections_total(self) -> int:
        return sum(self.connections.values())
