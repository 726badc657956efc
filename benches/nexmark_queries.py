"""The Nexmark streams and queries as Runnel SQL, shared by tests/python/test_nexmark.py (the
correctness test against DuckDB) and benches/nexmark.py (the benchmark).

    from nexmark_queries import stream_ddl, QUERIES, QUERY_STREAMS
    for sql in stream_ddl(events=110_000, rate="unlimited").values(): conn.execute(sql)
    conn.execute(f"CREATE MATERIALIZED VIEW q5 AS {QUERIES['q5']}")

Runnel's built-in generator (`connector = 'nexmark'`) produces one global, deterministic
sequence of events per (seed, event number): of every 50 events, the first is a person, the
next 3 are auctions and the last 46 are bids. Event n happens at
2026-01-01 00:00:00 + n / event_time_rate seconds. Each stream's generator starts when its
CREATE STREAM runs.
"""

from __future__ import annotations

from datetime import datetime

# Event 0's date_time (the generator's default start_time), a naive UTC timestamp.
START_TIME = datetime(2026, 1, 1, 0, 0, 0)
# Of every PROPORTION_DENOMINATOR events: PERSON_PROPORTION persons first, then the auctions,
# then the bids.
PERSON_PROPORTION = 1
AUCTION_PROPORTION = 3
BID_PROPORTION = 46
PROPORTION_DENOMINATOR = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION
# The watermark of every stream: the largest date_time seen minus this.
WATERMARK_DELAY_SECONDS = 4

STREAMS = ("person", "auction", "bid")

_COLUMNS = {
    "person": "id BIGINT, name TEXT, email_address TEXT, credit_card TEXT, city TEXT, "
              "state TEXT, date_time TIMESTAMP, extra TEXT",
    "auction": "id BIGINT, item_name TEXT, description TEXT, initial_bid BIGINT, "
               "reserve BIGINT, date_time TIMESTAMP, expires TIMESTAMP, seller BIGINT, "
               "category BIGINT, extra TEXT",
    "bid": "auction BIGINT, bidder BIGINT, price BIGINT, channel TEXT, url TEXT, "
           "date_time TIMESTAMP, extra TEXT",
}


def stream_ddl(
    events: int,
    rate: int | float | str = "unlimited",
    seed: int = 0,
    event_time_rate: int = 10_000,
    streams: tuple[str, ...] | list[str] = STREAMS,
    start_time: str | None = None,
    partitions: int | None = None,
) -> dict[str, str]:
    """CREATE STREAM statements (stream name -> SQL) for the Nexmark generator.

    events: how many events of the global sequence to generate (all kinds together);
    rate: events per wall-clock second, or 'unlimited'; seed: the generator's seed;
    event_time_rate: events per second of event time; streams: which of the three;
    start_time: event 0's time as RFC 3339 (default: the generator's, START_TIME);
    partitions: how many partitions each stream's events are cut into (default: the
    generator's, 1), which bounds how many threads generate it.
    """
    rate_text = "unlimited" if str(rate).lower() == "unlimited" else str(rate)
    start = f", start_time = '{start_time}'" if start_time else ""
    if partitions is not None:
        start += f", partitions = '{int(partitions)}'"
    out = {}
    for name in streams:
        out[name] = (
            f"CREATE STREAM {name} ({_COLUMNS[name]}, "
            f"WATERMARK FOR date_time AS date_time - INTERVAL '{WATERMARK_DELAY_SECONDS} seconds') "
            f"WITH (connector = 'nexmark', events = '{int(events)}', rate = '{rate_text}', "
            f"seed = '{int(seed)}', event_time_rate = '{int(event_time_rate)}'{start})"
        )
    return out


# name -> the view's SELECT (CREATE MATERIALIZED VIEW <name> AS <select>).
QUERIES: dict[str, str] = {
    "q0": "SELECT auction, bidder, price, date_time FROM bid",
    "q1": "SELECT auction, bidder, 0.908 * price AS price, date_time FROM bid",
    "q2": "SELECT auction, price FROM bid WHERE auction % 123 = 0",
    "q3": "SELECT P.name, P.city, P.state, A.id FROM auction AS A INNER JOIN person AS P "
          "on A.seller = P.id WHERE A.category = 10 and "
          "(P.state = 'or' OR P.state = 'id' OR P.state = 'ca')",
    "q4": "SELECT Q.category, AVG(Q.final) as avg FROM (SELECT MAX(B.price) AS final, "
          "A.category FROM auction A, bid B WHERE A.id = B.auction AND B.date_time BETWEEN "
          "A.date_time AND A.expires GROUP BY A.id, A.category) Q GROUP BY Q.category",
    "q5": "SELECT AuctionBids.auction, AuctionBids.num FROM (SELECT bid.auction, count(*) AS "
          "num, window_start AS starttime FROM HOP(bid, date_time, INTERVAL '2' SECOND, "
          "INTERVAL '10' SECOND) GROUP BY window_start, bid.auction) AS AuctionBids JOIN "
          "(SELECT max(CountBids.num) AS maxn, CountBids.starttime_c FROM (SELECT count(*) AS "
          "num, window_start AS starttime_c FROM HOP(bid, date_time, INTERVAL '2' SECOND, "
          "INTERVAL '10' SECOND) GROUP BY bid.auction, window_start) AS CountBids GROUP BY "
          "CountBids.starttime_c) AS MaxBids ON AuctionBids.starttime = MaxBids.starttime_c "
          "AND AuctionBids.num >= MaxBids.maxn",
    "q7": "SELECT B.auction, B.price, B.bidder, B.date_time FROM bid B JOIN (SELECT MAX(price) "
          "AS maxprice, window_end as date_time FROM TUMBLE(bid, date_time, INTERVAL '10' "
          "SECOND) GROUP BY window_end) B1 ON B.price = B1.maxprice WHERE B.date_time BETWEEN "
          "B1.date_time - INTERVAL '10' SECOND AND B1.date_time",
    "q8": "SELECT P.id, P.name, P.starttime FROM (SELECT id, name, window_start AS starttime, "
          "window_end AS endtime FROM TUMBLE(person, date_time, INTERVAL '10' SECOND) GROUP BY "
          "id, name, window_start, window_end) P JOIN (SELECT seller, window_start AS "
          "starttime, window_end AS endtime FROM TUMBLE(auction, date_time, INTERVAL '10' "
          "SECOND) GROUP BY seller, window_start, window_end) A ON P.id = A.seller AND "
          "P.starttime = A.starttime AND P.endtime = A.endtime",
    # The headline online feature: per bidder, the average bid price over the last 30 minutes
    # of event time (NOW() in a view is the stream's watermark).
    "feature_30m": "SELECT bidder, avg(price) AS avg_price, count(*) AS n FROM bid "
                   "WHERE date_time > NOW() - INTERVAL '30 minutes' GROUP BY bidder",
}

# The streams each query reads.
QUERY_STREAMS: dict[str, tuple[str, ...]] = {
    "q0": ("bid",),
    "q1": ("bid",),
    "q2": ("bid",),
    "q3": ("person", "auction"),
    "q4": ("auction", "bid"),
    "q5": ("bid",),
    "q7": ("bid",),
    "q8": ("person", "auction"),
    "feature_30m": ("bid",),
}


def view_ddl(name: str, view_name: str | None = None) -> str:
    return f"CREATE MATERIALIZED VIEW {view_name or name} AS {QUERIES[name]}"


def is_kind(stream: str, n: int) -> bool:
    """Whether global event n is one of `stream`'s events."""
    offset = n % PROPORTION_DENOMINATOR
    if stream == "person":
        return offset < PERSON_PROPORTION
    if stream == "auction":
        return PERSON_PROPORTION <= offset < PERSON_PROPORTION + AUCTION_PROPORTION
    return offset >= PERSON_PROPORTION + AUCTION_PROPORTION


def _kind_range(stream: str) -> tuple[int, int]:
    """The offsets [lo, hi) within each group of 50 that hold `stream`'s events."""
    if stream == "person":
        return 0, PERSON_PROPORTION
    if stream == "auction":
        return PERSON_PROPORTION, PERSON_PROPORTION + AUCTION_PROPORTION
    return PERSON_PROPORTION + AUCTION_PROPORTION, PROPORTION_DENOMINATOR


def kind_count(stream: str, events: int) -> int:
    """How many of global events 0..events-1 are `stream`'s."""
    lo, hi = _kind_range(stream)
    full, rest = divmod(events, PROPORTION_DENOMINATOR)
    return full * (hi - lo) + max(0, min(rest, hi) - lo)

