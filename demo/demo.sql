-- Runnel demo over the docker-compose Kafka (topics filled by demo/producer.py).
--   psql -h 127.0.0.1 -p 6875 -U runnel -d runnel -f demo/demo.sql
--   docker-compose run --rm psql -f /demo/demo.sql        (no local psql needed)
-- bootstrap_servers is left out: it defaults to the server's RUNNEL_KAFKA_BOOTSTRAP_SERVERS
-- (kafka:9092 in docker-compose.yml). Run it once per fresh data volume
-- (docker-compose down -v starts over).

-- Every event the producer writes: {"uid": 196, "item_id": 42, "price": 12.5, "ts": "..."}.
-- Malformed records are counted and skipped (see SHOW PROGRESS, errors / last_error).
CREATE STREAM events (
    uid      BIGINT,
    item_id  BIGINT,
    price    DOUBLE PRECISION,
    ts       TIMESTAMPTZ
) WITH (connector = 'kafka', topic = 'events', format = 'json', start = 'earliest', on_error = 'skip');

-- The latest recommendations per user (compacted topic, keyed by uid): upserts by primary key.
CREATE TABLE recommendations (
    uid    BIGINT PRIMARY KEY,
    items  TEXT
) WITH (connector = 'kafka', topic = 'recommendations', format = 'json');

-- Each event next to the user's current recommendations (updates when they change).
CREATE MATERIALIZED VIEW events_with_recs AS
    SELECT e.uid, e.item_id, e.price, e.ts, r.items AS recommended
    FROM events e JOIN recommendations r ON e.uid = r.uid;

-- Online features per user, kept up to date as events arrive.
CREATE MATERIALIZED VIEW user_stats AS
    SELECT uid, count(*) AS n_events, avg(price) AS avg_price
    FROM events
    GROUP BY uid;

-- Every change of user_stats to Kafka: key {"uid": N}, value the row (compacted topic).
CREATE SINK recommendation_events FROM user_stats
    WITH (connector = 'kafka', topic = 'recommendation-events', format = 'json', mode = 'upsert');

-- Where each Kafka partition is: offset, end_offset, lag, events_per_sec, errors, status.
SHOW PROGRESS;

SELECT * FROM user_stats WHERE uid = 196;
SELECT * FROM events_with_recs WHERE uid = 196 ORDER BY ts DESC LIMIT 5;
SHOW SINKS;
